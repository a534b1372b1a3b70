//! Licence enforcement: a package whose manifest has a `license` section opens only
//! with a valid licence in the licence directory (`docs/licensing.md`).
//!
//! The checks run before any model is loaded: the serial's check digits, the
//! licence's signature against the package's licence keys, vendor, model, edition,
//! expiry, the app's package name, the device fingerprint, and the clock guard. The
//! network is used only when a serial is set that has no licence here yet: then the
//! device activates it once, online, and runs offline afterwards.

use std::path::{Path, PathBuf};

use outpost_licensing::client::ActivationClient;
use outpost_licensing::protocol::{new_nonce, ActivationRequest};
use outpost_licensing::{
    format_time, store, unix_now, DeviceIdentity, Fingerprint, LicenseError, LicenseFile,
    LicenseStore, Requirement, Serial,
};
use serde::Serialize;

use crate::config::Settings;
use crate::error::{file_name, Error, Result};
use crate::package::manifest::{LicenseRequirement, Manifest};
use crate::package::{Package, TrustedKeys};

/// The licence that lets this device run `manifest`, or `None` for an open model.
/// With a serial that has no licence here, activates it online first.
pub fn enforce(manifest: &Manifest, settings: &Settings) -> Result<Option<LicenseFile>> {
    let Some(section) = &manifest.license else {
        return Ok(None);
    };
    let req = section.to_requirement()?;
    // A mistyped serial fails here, before the store or the network is touched.
    let serial = settings.serial.as_deref().map(Serial::parse).transpose()?;
    let device = this_device(&req, settings);
    let store = LicenseStore::new(&settings.license_dir);
    let found = match store.find_valid(&req, &device.identity, serial.as_ref(), unix_now()) {
        Err(LicenseError::NotInstalled { .. }) if serial.is_some() => {
            match server_url(section, settings) {
                Some(url) => activate_with(&req, &device, settings, serial.as_ref(), &url),
                None => Err(LicenseError::NotInstalled {
                    product: req.product_id.clone(),
                }),
            }
        }
        other => other,
    };
    match found {
        Ok(lic) => {
            tracing::info!(
                product = %req.product_id,
                kind = %lic.claims.kind,
                serial = %lic.claims.serial.masked(),
                expires = %outpost_licensing::format_time(lic.claims.expires_at),
                "licence valid"
            );
            Ok(Some(lic))
        }
        Err(e) => Err(device.explain(e).into()),
    }
}

/// Activates `serial` online for the package and installs the licence; the server
/// is `settings.license_server`, else the package's `license.server`.
pub fn activate(
    section: &LicenseRequirement,
    settings: &Settings,
    serial: &Serial,
) -> Result<LicenseFile> {
    let req = section.to_requirement()?;
    let url = server_url(section, settings).ok_or_else(|| {
        LicenseError::NoNetwork(
            "no activation server: set OUTPOST_LICENSE_SERVER or pass --server".into(),
        )
    })?;
    let device = this_device(&req, settings);
    activate_with(&req, &device, settings, Some(serial), &url).map_err(|e| device.explain(e).into())
}

/// The request a device sends, online or written to a file for offline activation.
pub fn activation_request(
    section: &LicenseRequirement,
    settings: &Settings,
    serial: &Serial,
) -> Result<ActivationRequest> {
    let req = section.to_requirement()?;
    let device = this_device(&req, settings);
    if device.identity.fingerprint.is_none() && settings.app_id.is_none() {
        if let Err(e) = device.fingerprint_error {
            return Err(e.into());
        }
    }
    Ok(request_for(&req, &device.identity, serial)?)
}

struct ThisDevice {
    identity: DeviceIdentity,
    fingerprint_error: std::result::Result<(), LicenseError>,
}

impl ThisDevice {
    /// Without a fingerprint, "another device" would mislead: say why instead.
    fn explain(&self, e: LicenseError) -> LicenseError {
        match (&e, &self.fingerprint_error) {
            (LicenseError::FingerprintMismatch, Err(why)) => why.clone(),
            _ => e,
        }
    }
}

fn this_device(req: &Requirement, settings: &Settings) -> ThisDevice {
    let fingerprint = Fingerprint::of_this_device(&req.vendor);
    ThisDevice {
        identity: DeviceIdentity {
            fingerprint: fingerprint.as_ref().ok().cloned(),
            package_name: settings.app_id.clone(),
        },
        fingerprint_error: fingerprint.map(|_| ()),
    }
}

fn server_url(section: &LicenseRequirement, settings: &Settings) -> Option<String> {
    settings
        .license_server
        .clone()
        .or_else(|| section.server.clone())
}

fn request_for(
    req: &Requirement,
    device: &DeviceIdentity,
    serial: &Serial,
) -> std::result::Result<ActivationRequest, LicenseError> {
    Ok(ActivationRequest {
        serial: serial.to_string(),
        vendor: req.vendor.clone(),
        product_id: req.product_id.clone(),
        fingerprint: device.fingerprint.clone(),
        package_name: device.package_name.clone(),
        nonce: new_nonce()?,
    })
}

fn activate_with(
    req: &Requirement,
    device: &ThisDevice,
    settings: &Settings,
    serial: Option<&Serial>,
    url: &str,
) -> std::result::Result<LicenseFile, LicenseError> {
    let serial = serial.ok_or(LicenseError::NotInstalled {
        product: req.product_id.clone(),
    })?;
    let request = request_for(req, &device.identity, serial)?;
    tracing::info!(serial = %serial.masked(), product = %req.product_id, "activating online");
    let lic = ActivationClient::new(url)?.activate(&request)?;
    // Never install what would not open this package here.
    store::check(&lic, req, &device.identity, unix_now()).map_err(|(_, e)| e)?;
    let path = LicenseStore::new(&settings.license_dir).install(&lic)?;
    tracing::info!(file = %path.display(), "licence installed");
    Ok(lic)
}

// ---- Licence operations on a package file, shared by the CLI and the bindings ----

/// The `license` section of the verified package at `path`. An open model (no
/// section) is [`Error::InvalidArgument`]: it needs no licence.
pub fn package_requirement(settings: &Settings, path: &Path) -> Result<LicenseRequirement> {
    let trusted = TrustedKeys::load(&settings.trusted_keys)?;
    let package = Package::open(path, &trusted)?;
    package.manifest().license.clone().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{} is an open model: it needs no licence",
            file_name(path)
        ))
    })
}

/// The configured serial, checked offline; [`Error::InvalidConfig`] when none is set.
fn configured_serial(settings: &Settings) -> Result<Serial> {
    let serial = settings.serial.as_deref().ok_or_else(|| {
        Error::InvalidConfig("no serial: set the serial (--serial, OUTPOST_SERIAL)".into())
    })?;
    Ok(Serial::parse(serial)?)
}

/// Activates the configured serial online for the package at `path` and installs
/// the licence (`outpost license activate`).
pub fn activate_package(settings: &Settings, path: &Path) -> Result<LicenseFile> {
    let section = package_requirement(settings, path)?;
    activate(&section, settings, &configured_serial(settings)?)
}

/// The offline activation request for the configured serial and the package at
/// `path` (`outpost license request`).
pub fn request_for_package(settings: &Settings, path: &Path) -> Result<ActivationRequest> {
    let section = package_requirement(settings, path)?;
    activation_request(&section, settings, &configured_serial(settings)?)
}

/// Installs a licence file into the licence directory, atomically
/// (`outpost license import`). With a package, the file is refused unless it
/// opens that package on this device. Returns the licence and where it went.
pub fn import(
    settings: &Settings,
    file: &Path,
    package: Option<&Path>,
) -> Result<(LicenseFile, PathBuf)> {
    let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    let license = LicenseFile::parse(&bytes, &file_name(file))?;
    if let Some(path) = package {
        let req = package_requirement(settings, path)?.to_requirement()?;
        let device = DeviceIdentity {
            fingerprint: Fingerprint::of_this_device(&req.vendor).ok(),
            package_name: settings.app_id.clone(),
        };
        store::check(&license, &req, &device, unix_now()).map_err(|(_, e)| e)?;
    }
    let path = LicenseStore::new(&settings.license_dir).install(&license)?;
    Ok((license, path))
}

/// One line about a licence: masked serial, kind, models, vendor, expiry.
pub fn summary(license: &LicenseFile) -> String {
    let c = &license.claims;
    format!(
        "{} ({} licence for {} from {}, until {})",
        c.serial.masked(),
        c.kind,
        c.models.join(","),
        c.vendor,
        format_time(c.expires_at)
    )
}

/// What is installed, and whether a package may open (`outpost license status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LicenseStatus {
    /// The licence directory.
    pub license_dir: PathBuf,
    /// Every file in it, readable or not.
    pub licenses: Vec<InstalledLicense>,
    /// The verdict for the package asked about, if any.
    pub package: Option<PackageVerdict>,
}

/// One file of the licence directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum InstalledLicense {
    /// A licence that parses.
    Readable {
        /// File name in the licence directory.
        file: String,
        /// `active`, `expired` or `other device`.
        state: String,
        /// The serial, masked (`ABCD-****-****-WXYZ`).
        serial: String,
        /// Trial, per-device or product-line.
        kind: String,
        /// Vendor id.
        vendor: String,
        /// Product ids the licence grants.
        models: Vec<String>,
        /// Edition granted.
        edition: String,
        /// App id a product-line licence binds to.
        package_name: Option<String>,
        /// Issue time (UTC, ISO 8601).
        issued_at: String,
        /// Expiry (UTC, ISO 8601).
        expires_at: String,
        /// Whole days until expiry.
        days_left: u64,
    },
    /// A file that is not a valid licence (2014); other licences keep working.
    Corrupted {
        /// File name in the licence directory.
        file: String,
        /// Always `corrupted`.
        state: String,
        /// The licensing error code.
        error_code: u32,
        /// Why it does not parse.
        message: String,
    },
}

impl InstalledLicense {
    /// `active`, `expired`, `other device` or `corrupted`.
    pub fn state(&self) -> &str {
        match self {
            InstalledLicense::Readable { state, .. }
            | InstalledLicense::Corrupted { state, .. } => state,
        }
    }
}

/// Whether one package may open here, as opening it would decide.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageVerdict {
    /// The package's model name.
    pub model: String,
    /// 0 when it may open, else the error code opening it gives.
    pub error_code: u32,
    /// The licence it runs under, or why it may not open.
    pub message: String,
}

/// Every licence in the store with its state on this device; with a package, the
/// verdict the runtime would give when opening it.
pub fn status(settings: &Settings, package: Option<&Path>) -> Result<LicenseStatus> {
    let now = unix_now();
    let stored = LicenseStore::new(&settings.license_dir).list()?;
    let licenses = stored
        .iter()
        .map(|s| {
            let file = s
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match &s.license {
                Ok(l) => {
                    let c = &l.claims;
                    let on_this_device = match &c.fingerprint {
                        None => true,
                        Some(bound) => Fingerprint::of_this_device(&c.vendor)
                            .map(|fp| bound.accepts(&fp))
                            .unwrap_or(false),
                    };
                    let state = if now >= c.expires_at {
                        "expired"
                    } else if !on_this_device {
                        "other device"
                    } else {
                        "active"
                    };
                    InstalledLicense::Readable {
                        file,
                        state: state.into(),
                        serial: c.serial.masked(),
                        kind: c.kind.to_string(),
                        vendor: c.vendor.clone(),
                        models: c.models.clone(),
                        edition: c.edition.clone(),
                        package_name: c.package_name.clone(),
                        issued_at: format_time(c.issued_at),
                        expires_at: format_time(c.expires_at),
                        days_left: c.expires_at.saturating_sub(now) / 86_400,
                    }
                }
                Err(e) => InstalledLicense::Corrupted {
                    file,
                    state: "corrupted".into(),
                    error_code: e.code(),
                    message: e.to_string(),
                },
            }
        })
        .collect();
    let package = match package {
        None => None,
        Some(path) => {
            let trusted = TrustedKeys::load(&settings.trusted_keys)?;
            let package = Package::open(path, &trusted)?;
            let m = package.manifest();
            let (error_code, message) = match enforce(m, settings) {
                Ok(None) => (0, "open model: no licence needed".to_string()),
                Ok(Some(l)) => (
                    0,
                    format!(
                        "licensed until {} ({})",
                        format_time(l.claims.expires_at),
                        l.claims.serial.masked()
                    ),
                ),
                Err(e) => (e.code(), e.to_string()),
            };
            Some(PackageVerdict {
                model: m.model.name.clone(),
                error_code,
                message,
            })
        }
    };
    Ok(LicenseStatus {
        license_dir: settings.license_dir.clone(),
        licenses,
        package,
    })
}
