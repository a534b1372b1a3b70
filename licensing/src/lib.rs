//! Outpost licensing, the part shared by devices and the activation server.
//!
//! - [`serial`]: serial numbers `XXXX-XXXX-XXXX-XXXX` with a check that catches
//!   typos offline.
//! - [`fingerprint`]: salted hashes of stable machine facts, compared with a
//!   documented tolerance.
//! - [`license_file`]: the signed licence file (Ed25519, key ids, key endorsements
//!   for rotation).
//! - [`keys`]: key ids and the set of keys a package trusts for licences.
//! - [`store`]: the licence directory on a device: atomic writes, corrupted files
//!   reported, the clock guard, and the search for a valid licence.
//! - [`client`]: online activation over HTTP(S), with timeouts and proxies.
//! - [`protocol`]: the activation request and reply, online and offline.
//! - [`error`]: the 2xxx licence codes and the 5xxx server codes.
//!
//! See `docs/licensing.md` for the rules and the file formats.

pub mod client;
pub mod error;
pub mod fingerprint;
pub mod keys;
pub mod license_file;
pub mod protocol;
pub mod serial;
pub mod store;

pub use error::{LicenseError, Result};
pub use fingerprint::{DeviceIdentity, Fingerprint};
pub use keys::{key_id, LicenseKeys};
pub use license_file::{Claims, LicenseFile, LicenseKind};
pub use serial::Serial;
pub use store::{LicenseStore, Requirement};

/// Seconds since the Unix epoch, the unit of every time in a licence.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A Unix time as an RFC 3339 UTC string, for people (`2027-02-27T00:00:00Z`).
pub fn format_time(unix: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    humantime::format_rfc3339_seconds(t).to_string()
}
