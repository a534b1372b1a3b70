package ai.outpost;

/** One class of a classification result. */
public final class Classification {
  /** Class index in the model output. */
  public final int index;
  /** Class name. */
  public final String label;
  /** Probability in 0..1. */
  public final float confidence;

  Classification(int index, String label, float confidence) {
    this.index = index;
    this.label = label;
    this.confidence = confidence;
  }

  @Override
  public String toString() {
    return index + " " + label + " " + confidence;
  }
}
