package ai.outpost;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;

/**
 * A loaded model: a verified package, ready to infer. One predictor serves several
 * threads at once. Close it when done (try-with-resources); closing twice does
 * nothing, and using it after close throws {@link OutpostException} 1007.
 *
 * <pre>{@code
 * Config config = new Config().trustedKeys(keyFile.getPath());
 * try (Predictor predictor = Predictor.open("/data/model.opk", config)) {
 *   Results results = predictor.infer(jpegBytes);
 *   for (Classification c : results.classifications()) {
 *     Log.i("outpost", c.label + " " + c.confidence);
 *   }
 * }
 * }</pre>
 */
public final class Predictor implements AutoCloseable {
  private volatile long handle;

  private Predictor(long handle) {
    this.handle = handle;
  }

  /** Opens, verifies and loads a package file (.opk) or directory. */
  public static Predictor open(String packagePath, Config config) throws OutpostException {
    Config c = config != null ? config : new Config();
    return new Predictor(Native.open(packagePath, c.keys(), c.values()));
  }

  /**
   * Opens a package from a stream, e.g. an Android asset
   * ({@code context.getAssets().open("model.opk")}): it is copied into {@code cacheDir}
   * (e.g. {@code context.getCacheDir()}) once, then verified and loaded like a file.
   */
  public static Predictor open(InputStream packageStream, File cacheDir, Config config)
      throws OutpostException, IOException {
    File copy = File.createTempFile("outpost-", ".opk", cacheDir);
    try {
      Files.copy(packageStream, copy.toPath(), StandardCopyOption.REPLACE_EXISTING);
      return open(copy.getPath(), config);
    } finally {
      // The predictor holds what it needs in memory.
      copy.delete();
    }
  }

  private long live() throws OutpostException {
    long h = handle;
    if (h == 0) {
      throw new OutpostException(1007, "invalid handle: this predictor was closed");
    }
    return h;
  }

  /** Runs the model on encoded image bytes (JPEG, PNG or BMP). */
  public Results infer(byte[] encodedImage) throws OutpostException {
    return new Results(Native.inferImage(live(), encodedImage));
  }

  /**
   * Runs the model on ARGB_8888 pixels, as {@code bitmap.getPixels(pixels, 0, stride, 0, 0,
   * width, height)} gives them: {@code height} rows of {@code width} pixels, rows
   * {@code stride} ints apart.
   */
  public Results inferArgb(int[] pixels, int width, int height, int stride)
      throws OutpostException {
    return new Results(Native.inferArgb(live(), pixels, width, height, stride));
  }

  /** Model name, task, labels, input shape, precision, backend and threads, as JSON. */
  public String info() throws OutpostException {
    return Native.info(live());
  }

  /** The native library's version, e.g. "0.1.0". */
  public static String version() {
    return Native.version();
  }

  /** Frees the model. Inferences still running on other threads finish first. */
  @Override
  public void close() {
    long h;
    synchronized (this) {
      h = handle;
      handle = 0;
    }
    if (h != 0) {
      try {
        Native.close(h);
      } catch (OutpostException e) {
        // Only a handle that is not live fails, and this one was.
        throw new IllegalStateException(e);
      }
    }
  }
}
