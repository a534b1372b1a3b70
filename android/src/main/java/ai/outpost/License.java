package ai.outpost;

/**
 * Licences of paid models: online activation with a serial, the offline request and
 * import, and what is installed. Answers are JSON, as {@code outpost license} prints
 * them; failures throw {@link OutpostException} with a 2xxx code (docs/errors.md).
 */
public final class License {
  private License() {}

  /**
   * Activates {@code serial} online for the package and installs the licence in the
   * config's licence directory. {@code appId} is the app's package name (Android's
   * {@code context.getPackageName()}, iOS's bundle id), which product-line serials
   * bind to; pass null for per-device serials.
   */
  public static String activate(String packagePath, String serial, String appId, Config config)
      throws OutpostException {
    Config c = config != null ? config.copy() : new Config();
    c.serial(serial);
    if (appId != null) {
      c.appId(appId);
    }
    return Native.licenseActivate(packagePath, c.keys(), c.values());
  }

  /** The offline activation request for the config's serial, to send to the vendor. */
  public static String request(String packagePath, Config config) throws OutpostException {
    Config c = config != null ? config : new Config();
    return Native.licenseRequest(packagePath, c.keys(), c.values());
  }

  /**
   * Installs a licence file from the vendor; with a package path (may be null), only
   * if it opens that package on this device.
   */
  public static String importFile(String licensePath, String packagePath, Config config)
      throws OutpostException {
    Config c = config != null ? config : new Config();
    return Native.licenseImport(licensePath, packagePath, c.keys(), c.values());
  }

  /** Installed licences and their state; with a package path, whether it may open. */
  public static String status(String packagePath, Config config) throws OutpostException {
    Config c = config != null ? config : new Config();
    return Native.licenseStatus(packagePath, c.keys(), c.values());
  }
}
