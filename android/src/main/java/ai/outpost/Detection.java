package ai.outpost;

/** One detected object; the box is in 0..1 of the original image. */
public final class Detection {
  /** Class index. */
  public final int index;
  /** Class name. */
  public final String label;
  /** Score in 0..1. */
  public final float confidence;
  /** Left, top, right and bottom edges in 0..1 of the image. */
  public final float x1, y1, x2, y2;

  Detection(int index, String label, float confidence, float x1, float y1, float x2, float y2) {
    this.index = index;
    this.label = label;
    this.confidence = confidence;
    this.x1 = x1;
    this.y1 = y1;
    this.x2 = x2;
    this.y2 = y2;
  }

  @Override
  public String toString() {
    return index + " " + label + " " + confidence + " [" + x1 + ", " + y1 + ", " + x2 + ", " + y2 + "]";
  }
}
