package ai.outpost;

/** What a model's results hold. */
public enum Task {
  /** Classes, best first: {@link Results#classifications()}. */
  CLASSIFICATION,
  /** Boxes, best first: {@link Results#detections()}. */
  DETECTION,
  /** Raw output tensors of a model without a decoder: {@link Results#toJson()}. */
  RAW;

  static Task fromCode(int code) {
    switch (code) {
      case 1:
        return CLASSIFICATION;
      case 2:
        return DETECTION;
      default:
        return RAW;
    }
  }
}
