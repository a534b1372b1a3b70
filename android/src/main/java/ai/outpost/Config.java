package ai.outpost;

import java.io.File;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Settings for a {@link Predictor} and for {@link License} calls. Every setting left
 * unset is taken from its OUTPOST_* environment variable, then from the default
 * (docs/configuration.md). Each setter checks its value at once and throws
 * {@link OutpostException} 1001 for a bad one.
 *
 * <pre>{@code
 * Config config = new Config().trustedKeys("/data/keys/public.key").threads(2);
 * }</pre>
 */
public final class Config {
  private final Map<String, String> values = new LinkedHashMap<>();

  /**
   * Sets a setting by its key: threads, backend, precision, threshold, top_k, serial,
   * license_dir, app_id, license_server, log_level, trusted_keys. A null value unsets it.
   */
  public Config set(String key, String value) throws OutpostException {
    Native.checkSetting(key, value);
    if (value == null) {
      values.remove(key);
    } else {
      values.put(key, value);
    }
    return this;
  }

  /** CPU threads for one inference (default: the number of cores, at most 8). */
  public Config threads(int threads) throws OutpostException {
    return set("threads", Integer.toString(threads));
  }

  /** Public key files or key directories trusted to sign packages. */
  public Config trustedKeys(String... paths) throws OutpostException {
    return set("trusted_keys", String.join(File.pathSeparator, paths));
  }

  /** "fp32" or "int8" (default: the package's). */
  public Config precision(String precision) throws OutpostException {
    return set("precision", precision);
  }

  /** Score threshold in 0..1 (default: the package's). */
  public Config threshold(float threshold) throws OutpostException {
    return set("threshold", Float.toString(threshold));
  }

  /** Most results per image (default: the package's). */
  public Config topK(int topK) throws OutpostException {
    return set("top_k", Integer.toString(topK));
  }

  /** Serial number to activate a licensed package with. */
  public Config serial(String serial) throws OutpostException {
    return set("serial", serial);
  }

  /** Where licences are kept; on Android, a folder of the app's files dir. */
  public Config licenseDir(String dir) throws OutpostException {
    return set("license_dir", dir);
  }

  /** The app's package name (Context.getPackageName()), for product-line licences. */
  public Config appId(String appId) throws OutpostException {
    return set("app_id", appId);
  }

  /** Activation server URL (default: the package's own). */
  public Config licenseServer(String url) throws OutpostException {
    return set("license_server", url);
  }

  /** A copy, for calls that add settings of their own. */
  Config copy() {
    Config c = new Config();
    c.values.putAll(values);
    return c;
  }

  String[] keys() {
    return values.keySet().toArray(new String[0]);
  }

  String[] values() {
    return values.values().toArray(new String[0]);
  }
}
