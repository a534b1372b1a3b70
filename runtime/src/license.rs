//! Licence enforcement: a package whose manifest has a `license` section opens only
//! with a valid licence in the licence directory (`docs/licensing.md`).
//!
//! The checks run before any model is loaded: the serial's check digits, the
//! licence's signature against the package's licence keys, vendor, model, edition,
//! expiry, the app's package name, the device fingerprint, and the clock guard. The
//! network is used only when a serial is set that has no licence here yet: then the
//! device activates it once, online, and runs offline afterwards.

use outpost_licensing::client::ActivationClient;
use outpost_licensing::protocol::{new_nonce, ActivationRequest};
use outpost_licensing::{
    store, unix_now, DeviceIdentity, Fingerprint, LicenseError, LicenseFile, LicenseStore,
    Requirement, Serial,
};

use crate::config::Settings;
use crate::error::Result;
use crate::package::manifest::{LicenseRequirement, Manifest};

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
