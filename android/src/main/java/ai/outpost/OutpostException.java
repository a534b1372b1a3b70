package ai.outpost;

/**
 * A failure from Outpost, with its stable numeric code (docs/errors.md): 1xxx
 * configuration and input, 2xxx licence, 3xxx model and package, 4xxx backend.
 */
public class OutpostException extends Exception {
  private static final long serialVersionUID = 1L;
  private final int code;

  /** Made by the native library; the message never holds a serial or a full path. */
  public OutpostException(int code, String message) {
    super("error " + code + ": " + message);
    this.code = code;
  }

  /** The stable error code, e.g. 1101 for an image that cannot be decoded. */
  public int code() {
    return code;
  }
}
