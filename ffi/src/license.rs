//! Licence calls: activation (online and the offline request), importing a
//! licence file, and what is installed. The same operations as `outpost license`,
//! answered as JSON for the C and Java bindings alike.

use std::ffi::c_char;
use std::path::Path;

use outpost_runtime::license;
use outpost_runtime::outpost_licensing::{format_time, LicenseFile};
use outpost_runtime::{Config, Error};
use serde::Serialize;

use crate::boundary::{optional_text, text};
use crate::config::{config_of, OutpostConfig};
use crate::strings::answer_json;

fn to_json(value: &impl Serialize) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("to JSON: {e}")))
}

/// An installed licence as the bindings report it, the serial masked (JSON for C
/// and Java, a record for Swift).
#[derive(Debug, Clone, PartialEq, Serialize, uniffi::Record)]
pub struct LicenseInfo {
    /// One line: kind, vendor, models, expiry.
    pub summary: String,
    /// The serial, masked (`ABCD-****-****-WXYZ`).
    pub serial: String,
    /// Trial, per-device or product-line.
    pub kind: String,
    /// Vendor id.
    pub vendor: String,
    /// Product ids the licence grants.
    pub models: Vec<String>,
    /// Edition granted.
    pub edition: String,
    /// App id a product-line licence binds to.
    pub package_name: Option<String>,
    /// Expiry (UTC, ISO 8601).
    pub expires_at: String,
    /// File name in the licence directory, when the call wrote one.
    pub file: Option<String>,
}

impl LicenseInfo {
    fn new(license: &LicenseFile, file: Option<&Path>) -> LicenseInfo {
        let c = &license.claims;
        LicenseInfo {
            summary: license::summary(license),
            serial: c.serial.masked(),
            kind: c.kind.to_string(),
            vendor: c.vendor.clone(),
            models: c.models.clone(),
            edition: c.edition.clone(),
            package_name: c.package_name.clone(),
            expires_at: format_time(c.expires_at),
            file: file
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned()),
        }
    }
}

/// Online activation for a package: the installed licence.
pub(crate) fn activate(package: &str, config: &Config) -> Result<LicenseInfo, Error> {
    let lic = license::activate_package(&config.resolve()?, Path::new(package))?;
    Ok(LicenseInfo::new(&lic, None))
}

/// Installs a licence file: the installed licence.
pub(crate) fn import(
    license_path: &str,
    package: Option<&str>,
    config: &Config,
) -> Result<LicenseInfo, Error> {
    let (lic, at) = license::import(
        &config.resolve()?,
        Path::new(license_path),
        package.map(Path::new),
    )?;
    Ok(LicenseInfo::new(&lic, Some(&at)))
}

/// Online activation for a package; the installed licence as JSON.
pub(crate) fn activate_json(package: &str, config: &Config) -> Result<String, Error> {
    to_json(&activate(package, config)?)
}

/// The offline activation request as JSON.
pub(crate) fn request_json(package: &str, config: &Config) -> Result<String, Error> {
    to_json(&license::request_for_package(
        &config.resolve()?,
        Path::new(package),
    )?)
}

/// Installs a licence file; the installed licence as JSON.
pub(crate) fn import_json(
    license_path: &str,
    package: Option<&str>,
    config: &Config,
) -> Result<String, Error> {
    to_json(&import(license_path, package, config)?)
}

/// The licence status (as `outpost license status --json`).
pub(crate) fn status_json(package: Option<&str>, config: &Config) -> Result<String, Error> {
    to_json(&license::status(
        &config.resolve()?,
        package.map(Path::new),
    )?)
}

/// Activates the config's `serial` online for the package and installs the licence
/// in `license_dir`; the server is the config's `license_server`, else the
/// package's own. Product-line serials bind to the config's `app_id`.
///
/// `out_json` may be NULL; otherwise it receives the installed licence as JSON
/// (`summary`, masked `serial`, `kind`, `vendor`, `models`, `expires_at`, ...), which
/// the caller frees with `outpost_string_free`.
///
/// # Safety
/// `package_path` is NULL (refused) or a NUL-terminated string; `out_json` is NULL
/// or points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn outpost_license_activate(
    package_path: *const c_char,
    config: *const OutpostConfig,
    out_json: *mut *mut c_char,
) -> i32 {
    answer_json(out_json, true, || {
        activate_json(text(package_path, "package_path")?, &config_of(config)?)
    })
}

/// The offline activation request for the config's `serial` and the package, as
/// JSON to hand to the vendor (who turns it into a licence file for
/// `outpost_license_import`).
///
/// Ownership: the caller frees `*out_json` with `outpost_string_free`.
///
/// # Safety
/// `package_path` is NULL (refused) or a NUL-terminated string; `out_json` is NULL
/// (refused) or points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn outpost_license_request(
    package_path: *const c_char,
    config: *const OutpostConfig,
    out_json: *mut *mut c_char,
) -> i32 {
    answer_json(out_json, false, || {
        request_json(text(package_path, "package_path")?, &config_of(config)?)
    })
}

/// Installs a licence file (offline activation) into the config's `license_dir`.
/// With `package_path` (may be NULL), the file is refused unless it opens that
/// package on this device.
///
/// `out_json` may be NULL; otherwise it receives the installed licence as JSON,
/// freed with `outpost_string_free`.
///
/// # Safety
/// `license_path` is NULL (refused) or a NUL-terminated string; `package_path` is
/// NULL or a NUL-terminated string; `out_json` is NULL or points to writable
/// memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn outpost_license_import(
    license_path: *const c_char,
    package_path: *const c_char,
    config: *const OutpostConfig,
    out_json: *mut *mut c_char,
) -> i32 {
    answer_json(out_json, true, || {
        import_json(
            text(license_path, "license_path")?,
            optional_text(package_path, "package_path")?,
            &config_of(config)?,
        )
    })
}

/// Every licence installed in the config's `license_dir`, with its state on this
/// device; with `package_path` (may be NULL), whether that package may open and
/// why not. The JSON is that of `outpost license status --json`.
///
/// Ownership: the caller frees `*out_json` with `outpost_string_free`.
///
/// # Safety
/// `package_path` is NULL or a NUL-terminated string; `out_json` is NULL (refused)
/// or points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn outpost_license_status(
    config: *const OutpostConfig,
    package_path: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    answer_json(out_json, false, || {
        status_json(
            optional_text(package_path, "package_path")?,
            &config_of(config)?,
        )
    })
}
