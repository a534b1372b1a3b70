//! Licence errors and their stable 2xxx codes (listed in `docs/errors.md`).
//!
//! Messages never contain a serial number, a fingerprint or key material: they end up
//! in logs and bug reports.

/// Code of a reply from the activation server that is not the protocol.
pub const PROTOCOL_ERROR: u32 = 5100;

/// Result type of the licensing crate.
pub type Result<T, E = LicenseError> = std::result::Result<T, E>;

/// Every licence failure. `code()` gives the stable number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LicenseError {
    /// The serial number is not 16 valid characters or its check fails (a typo).
    #[error("malformed serial number: {0}")]
    MalformedSerial(String),
    /// The activation server does not know this serial.
    #[error("unknown serial number: check it, or ask the vendor for a valid one")]
    UnknownSerial,
    /// The vendor revoked this serial.
    #[error("serial number has been revoked by the vendor")]
    Revoked,
    /// A per-device or trial serial is already bound to another device.
    #[error("serial number is already activated on another device")]
    AlreadyActivated,
    /// A product-line serial has reached its device cap.
    #[error("serial number has reached its device limit of {cap}")]
    DeviceCapReached {
        /// The serial's device cap.
        cap: u32,
    },
    /// The same serial was activated on this device too many times.
    #[error("serial number was activated on this device more than {limit} times; ask the vendor to reset it")]
    TooManyActivations {
        /// Activations allowed per device.
        limit: u32,
    },
    /// The activation server cannot be reached, and no licence is installed yet.
    #[error("cannot reach the activation server ({0}); the first activation needs a network, or use offline activation (`outpost license request`)")]
    NoNetwork(String),
    /// The licence's validity period is over.
    #[error("licence for {product} expired on {expired_at}")]
    Expired {
        /// Product id the licence covers.
        product: String,
        /// Expiry, RFC 3339.
        expired_at: String,
    },
    /// A product-line licence was issued for another app.
    #[error("licence is bound to another app package name (this app: {found})")]
    WrongPackageName {
        /// Package name or bundle id of the running app.
        found: String,
    },
    /// The licence is from another vendor or does not cover this model.
    #[error("licence does not cover this model: {0}")]
    VendorOrModelMismatch(String),
    /// The licence was issued to another device (for example, copied from one).
    #[error("licence was issued to another device (device fingerprint mismatch)")]
    FingerprintMismatch,
    /// The clock is earlier than a time this device has already seen.
    #[error("system clock moved backwards: it reads {now}, but {seen} was already seen; correct the date and time")]
    ClockMovedBackwards {
        /// The clock now, RFC 3339.
        now: String,
        /// The latest time seen, RFC 3339.
        seen: String,
    },
    /// No licence for this model is installed.
    #[error("no licence installed for {product}: activate a serial (`outpost license activate`) or import a licence file (`outpost license import`)")]
    NotInstalled {
        /// Product id the package needs a licence for.
        product: String,
    },
    /// A licence file cannot be parsed: damaged, truncated or not a licence.
    #[error("licence file {file} is corrupted: {reason}")]
    Corrupt {
        /// File name (no directory).
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The licence's signature does not verify, or its key is not trusted by the package.
    #[error("licence signature is invalid: {0}")]
    SignatureInvalid(String),
    /// The licence grants another edition than the package needs.
    #[error("licence grants edition {granted}, the package needs {needed}")]
    EditionMismatch {
        /// Edition the licence grants.
        granted: String,
        /// Edition the package needs.
        needed: String,
    },
    /// No stable machine facts could be read, so the device cannot be identified.
    #[error("cannot identify this device: {0}")]
    NoFingerprint(String),
    /// The activation server refused the request for a reason that is not a
    /// licence rule (bad request, rate limit, server fault), or answered with
    /// something that is not the activation protocol.
    #[error("activation server error {code}: {message}")]
    Server {
        /// The 5xxx code (from the server's `error_code`, or 5100 for a reply that
        /// cannot be understood).
        code: u32,
        /// The server's message.
        message: String,
    },
    /// The licence directory cannot be read or written.
    #[error("licence store error on {file}: {reason}")]
    Store {
        /// File or directory name (no full path).
        file: String,
        /// The operating-system reason.
        reason: String,
    },
}

impl LicenseError {
    /// The error for a code and message received from the activation server: the
    /// licence rules get their own variants back, anything else is [`LicenseError::Server`].
    pub fn from_server(code: u32, message: &str, detail: u32) -> LicenseError {
        match code {
            2001 => LicenseError::MalformedSerial(message.to_string()),
            2002 => LicenseError::UnknownSerial,
            2003 => LicenseError::Revoked,
            2005 => LicenseError::AlreadyActivated,
            2006 => LicenseError::DeviceCapReached { cap: detail },
            2007 => LicenseError::TooManyActivations { limit: detail },
            2004 | 2008 | 2009 | 2011 | 2016 | 5000..=5999 => LicenseError::Server {
                code,
                message: message.to_string(),
            },
            _ => LicenseError::Server {
                code: PROTOCOL_ERROR,
                message: format!("unexpected error code {code}: {message}"),
            },
        }
    }

    /// The stable numeric code of this error.
    pub fn code(&self) -> u32 {
        match self {
            LicenseError::MalformedSerial(_) => 2001,
            LicenseError::UnknownSerial => 2002,
            LicenseError::Revoked => 2003,
            LicenseError::AlreadyActivated => 2005,
            LicenseError::DeviceCapReached { .. } => 2006,
            LicenseError::TooManyActivations { .. } => 2007,
            LicenseError::NoNetwork(_) => 2010,
            LicenseError::Server { code, .. } => *code,
            LicenseError::Expired { .. } => 2004,
            LicenseError::WrongPackageName { .. } => 2008,
            LicenseError::VendorOrModelMismatch(_) => 2009,
            LicenseError::FingerprintMismatch => 2011,
            LicenseError::ClockMovedBackwards { .. } => 2012,
            LicenseError::NotInstalled { .. } => 2013,
            LicenseError::Corrupt { .. } => 2014,
            LicenseError::SignatureInvalid(_) => 2015,
            LicenseError::EditionMismatch { .. } => 2016,
            LicenseError::NoFingerprint(_) => 2017,
            LicenseError::Store { .. } => 2018,
        }
    }

    pub(crate) fn store(path: &std::path::Path, err: impl std::fmt::Display) -> LicenseError {
        LicenseError::Store {
            file: file_name(path),
            reason: err.to_string(),
        }
    }
}

/// The last component of a path, so messages never leak a home directory.
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_a_licence_code_and_unique() {
        let all = [
            LicenseError::MalformedSerial("x".into()),
            LicenseError::Expired {
                product: "p".into(),
                expired_at: "t".into(),
            },
            LicenseError::WrongPackageName { found: "a".into() },
            LicenseError::VendorOrModelMismatch("x".into()),
            LicenseError::FingerprintMismatch,
            LicenseError::ClockMovedBackwards {
                now: "a".into(),
                seen: "b".into(),
            },
            LicenseError::NotInstalled {
                product: "p".into(),
            },
            LicenseError::Corrupt {
                file: "f".into(),
                reason: "r".into(),
            },
            LicenseError::SignatureInvalid("x".into()),
            LicenseError::EditionMismatch {
                granted: "a".into(),
                needed: "b".into(),
            },
            LicenseError::NoFingerprint("x".into()),
            LicenseError::Store {
                file: "f".into(),
                reason: "r".into(),
            },
            LicenseError::UnknownSerial,
            LicenseError::Revoked,
            LicenseError::AlreadyActivated,
            LicenseError::DeviceCapReached { cap: 1 },
            LicenseError::TooManyActivations { limit: 50 },
            LicenseError::NoNetwork("x".into()),
        ];
        let mut codes: Vec<u32> = all.iter().map(LicenseError::code).collect();
        assert!(codes.iter().all(|c| (2000..3000).contains(c)), "{codes:?}");
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len(), "duplicate codes");
    }
}
