//! The activation protocol between devices and `outpost-license-server` (JSON over
//! HTTP), and the offline request file, which is the same request written to disk.
//!
//! - `POST /v1/activate` with an [`ActivationRequest`] answers `200` with an
//!   [`ActivationResponse`], or an error status with an [`ErrorBody`] whose
//!   `error_code` is a 2xxx licence rule or a 5xxx server error.
//! - Offline: `outpost license request` writes an [`ActivationRequest`] to a file; the
//!   vendor's `outpost-license-server offline-activate` turns it into a licence file.

use serde::{Deserialize, Serialize};

use crate::error::{LicenseError, Result};
use crate::fingerprint::Fingerprint;
use crate::license_file::{valid_id, LicenseFile};

/// Largest request body the server accepts and the client sends.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Path of the activation endpoint.
pub const ACTIVATE_PATH: &str = "/v1/activate";

/// A device asks for a licence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationRequest {
    /// The serial as the user typed it (the server parses and checks it again).
    pub serial: String,
    /// Vendor id from the package's manifest.
    pub vendor: String,
    /// Product id from the package's manifest.
    pub product_id: String,
    /// This device's fingerprint, salted with the vendor id.
    pub fingerprint: Option<Fingerprint>,
    /// The app's package name or bundle id (product-line serials).
    #[serde(default)]
    pub package_name: Option<String>,
    /// Random hex chosen by the device, echoed in logs: ties an offline request to
    /// the licence made from it.
    pub nonce: String,
}

/// The server's answer to a successful activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationResponse {
    /// Always 0.
    pub error_code: u32,
    /// The signed licence.
    pub license: LicenseFile,
}

/// The server's answer to a failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code: 2xxx licence rule, 5xxx server.
    pub error_code: u32,
    /// Human-readable reason.
    pub message: String,
    /// A number that completes the message: the device cap (2006) or the
    /// re-activation limit (2007); 0 otherwise.
    #[serde(default)]
    pub detail: u32,
}

impl From<&LicenseError> for ErrorBody {
    fn from(e: &LicenseError) -> ErrorBody {
        let detail = match e {
            LicenseError::DeviceCapReached { cap } => *cap,
            LicenseError::TooManyActivations { limit } => *limit,
            _ => 0,
        };
        // A server error's code is in `error_code`: the message is its bare text.
        let message = match e {
            LicenseError::Server { message, .. } => message.clone(),
            other => other.to_string(),
        };
        ErrorBody {
            error_code: e.code(),
            message,
            detail,
        }
    }
}

impl ActivationRequest {
    /// Parses and validates a request body (server side, and the offline file).
    /// Oversized, malformed or out-of-range bodies fail with a 5001 server error;
    /// a serial whose check fails with 2001.
    pub fn parse(bytes: &[u8]) -> Result<ActivationRequest> {
        let bad = |m: String| LicenseError::Server {
            code: BAD_REQUEST,
            message: m,
        };
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(LicenseError::Server {
                code: PAYLOAD_TOO_LARGE,
                message: format!("request larger than {MAX_REQUEST_BYTES} bytes"),
            });
        }
        let req: ActivationRequest =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid request: {e}")))?;
        req.validate()?;
        Ok(req)
    }

    /// Value checks beyond the JSON types.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| LicenseError::Server {
            code: BAD_REQUEST,
            message: m.to_string(),
        };
        crate::serial::Serial::parse(&self.serial)?;
        if !valid_id(&self.vendor) || !valid_id(&self.product_id) {
            return Err(bad(
                "vendor and product_id must be 1-64 characters of a-z, 0-9, '.', '_' or '-'",
            ));
        }
        if let Some(p) = &self.package_name {
            if !valid_package_name(p) {
                return Err(bad(
                    "package_name must be 1-255 characters of letters, digits, '.', '_' or '-'",
                ));
            }
        }
        if self.fingerprint.is_none() && self.package_name.is_none() {
            return Err(bad("a request needs a fingerprint or a package name"));
        }
        if !(16..=64).contains(&self.nonce.len())
            || !self.nonce.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad("nonce must be 16-64 hex characters"));
        }
        Ok(())
    }
}

/// Code of a request the server cannot accept (malformed JSON, bad values).
pub const BAD_REQUEST: u32 = 5001;
/// Code of an admin request without a valid API token.
pub const UNAUTHORIZED: u32 = 5002;
/// Code of a request refused by rate limiting; retry later.
pub const RATE_LIMITED: u32 = 5003;
/// Code of a request body over the size limit.
pub const PAYLOAD_TOO_LARGE: u32 = 5004;
/// Code of a server-side storage or internal failure; retry later.
pub const INTERNAL: u32 = 5005;
/// Code of an admin request for something that does not exist.
pub const NOT_FOUND: u32 = 5006;

/// Android package names and iOS bundle ids: `com.example.app`.
pub fn valid_package_name(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 255
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A fresh random nonce (32 hex characters).
pub fn new_nonce() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| LicenseError::Server {
        code: BAD_REQUEST,
        message: format!("no random source: {e}"),
    })?;
    Ok(hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license_file::tests::fingerprint;
    use crate::serial::Serial;

    fn request() -> ActivationRequest {
        ActivationRequest {
            serial: Serial::from_random([1; 7]).to_string().to_lowercase(),
            vendor: "acme".into(),
            product_id: "efficientnet_lite0".into(),
            fingerprint: Some(fingerprint("a")),
            package_name: None,
            nonce: new_nonce().unwrap(),
        }
    }

    #[test]
    fn requests_round_trip() {
        let r = request();
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(ActivationRequest::parse(&bytes).unwrap(), r);
    }

    #[test]
    fn bad_requests_get_codes() {
        let good = serde_json::to_string(&request()).unwrap();
        let mut typo = request();
        typo.serial = "AAAA-AAAA-AAAA-AAAA".into();
        assert_eq!(
            ActivationRequest::parse(&serde_json::to_vec(&typo).unwrap())
                .unwrap_err()
                .code(),
            2001
        );
        let edits: [fn(&mut ActivationRequest); 5] = [
            |r| r.vendor = "../etc".into(),
            |r| r.product_id = String::new(),
            |r| r.package_name = Some("com.acme app".into()),
            |r| r.nonce = "xyz".into(),
            |r| r.fingerprint = None,
        ];
        for edit in edits {
            let mut r = request();
            edit(&mut r);
            let err = ActivationRequest::parse(&serde_json::to_vec(&r).unwrap()).unwrap_err();
            assert_eq!(err.code(), 5001, "{err}");
        }
        for junk in [
            &b""[..],
            b"[]",
            b"{\"serial\": 1}",
            good.replace("\"nonce\"", "\"extra\": 1, \"nonce\"")
                .as_bytes(),
        ] {
            assert_eq!(ActivationRequest::parse(junk).unwrap_err().code(), 5001);
        }
    }

    #[test]
    fn oversized_bodies_are_5004() {
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(ActivationRequest::parse(&big).unwrap_err().code(), 5004);
    }

    #[test]
    fn server_errors_map_back_to_rules() {
        for e in [
            LicenseError::UnknownSerial,
            LicenseError::Revoked,
            LicenseError::AlreadyActivated,
            LicenseError::DeviceCapReached { cap: 100 },
            LicenseError::TooManyActivations { limit: 50 },
        ] {
            let body = ErrorBody::from(&e);
            let back = LicenseError::from_server(body.error_code, &body.message, body.detail);
            assert_eq!(back, e);
        }
        assert_eq!(LicenseError::from_server(42, "?", 0).code(), 5100);
        assert_eq!(LicenseError::from_server(5003, "slow down", 0).code(), 5003);
        let body = ErrorBody::from(&LicenseError::Server {
            code: 5001,
            message: "bad nonce".into(),
        });
        assert_eq!(body.message, "bad nonce");
    }
}
