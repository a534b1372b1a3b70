//! Licence enforcement: a package whose manifest has a `license` section opens only
//! with a valid licence in the licence directory (`docs/licensing.md`).
//!
//! The checks run before any model is loaded, entirely offline: the serial's check
//! digits, the licence's signature against the package's licence keys, vendor, model,
//! edition, expiry, the app's package name, the device fingerprint, and the clock guard.

use outpost_licensing::{
    unix_now, DeviceIdentity, Fingerprint, LicenseError, LicenseFile, LicenseStore, Serial,
};

use crate::config::Settings;
use crate::error::Result;
use crate::package::manifest::Manifest;

/// The licence that lets this device run `manifest`, or `None` for an open model.
pub fn enforce(manifest: &Manifest, settings: &Settings) -> Result<Option<LicenseFile>> {
    let Some(section) = &manifest.license else {
        return Ok(None);
    };
    let req = section.to_requirement()?;
    // A mistyped serial fails here, before the store or the network is touched.
    let serial = settings.serial.as_deref().map(Serial::parse).transpose()?;
    let fingerprint = Fingerprint::of_this_device(&req.vendor);
    let device = DeviceIdentity {
        fingerprint: fingerprint.as_ref().ok().cloned(),
        package_name: settings.app_id.clone(),
    };
    let store = LicenseStore::new(&settings.license_dir);
    match store.find_valid(&req, &device, serial.as_ref(), unix_now()) {
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
        // Without a fingerprint, "another device" would mislead: say why.
        Err(LicenseError::FingerprintMismatch) if fingerprint.is_err() => Err(fingerprint
            .err()
            .unwrap_or(LicenseError::FingerprintMismatch)
            .into()),
        Err(e) => Err(e.into()),
    }
}
