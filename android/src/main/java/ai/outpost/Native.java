package ai.outpost;

/**
 * The JNI entry points of liboutpost (ffi/src/jni_api.rs). Package-private: use
 * {@link Predictor}, {@link Config} and {@link License}. Every method throws
 * {@link OutpostException} with the error code instead of crashing the VM.
 */
final class Native {
  static {
    System.loadLibrary("outpost");
  }

  private Native() {}

  /** The library's version, e.g. "0.1.0". */
  static native String version();

  /** Checks one setting (the keys of {@link Config}) without opening anything. */
  static native void checkSetting(String key, String value) throws OutpostException;

  /** Opens a package; returns a predictor handle. */
  static native long open(String packagePath, String[] keys, String[] values)
      throws OutpostException;

  /**
   * Runs a predictor on encoded image bytes. Returns {task, int[] indices, String[]
   * labels, float[] values, String json}: values holds confidence for a class, and
   * confidence, x1, y1, x2, y2 for a box; json is set for raw results only.
   */
  static native Object[] inferImage(long predictor, byte[] image) throws OutpostException;

  /** Runs a predictor on ARGB_8888 pixels (Bitmap.getPixels), rows stride ints apart. */
  static native Object[] inferArgb(long predictor, int[] pixels, int width, int height, int stride)
      throws OutpostException;

  /** The predictor's description as JSON. */
  static native String info(long predictor) throws OutpostException;

  /** Frees a predictor handle; a freed or unknown handle is 1007. */
  static native void close(long predictor) throws OutpostException;

  static native String licenseActivate(String packagePath, String[] keys, String[] values)
      throws OutpostException;

  static native String licenseRequest(String packagePath, String[] keys, String[] values)
      throws OutpostException;

  static native String licenseImport(
      String licensePath, String packagePath, String[] keys, String[] values)
      throws OutpostException;

  static native String licenseStatus(String packagePath, String[] keys, String[] values)
      throws OutpostException;
}
