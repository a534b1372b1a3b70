//! The licence file: claims signed by the activation server.
//!
//! ```json
//! {
//!   "format": 1,
//!   "claims": {
//!     "serial": "8K2D-QW7M-0JX4-R3TZ", "kind": "per_device", "vendor": "acme",
//!     "models": ["efficientnet_lite0"], "edition": "standard",
//!     "fingerprint": "v1;board=…;cpu=…;machine=…;mac=…", "package_name": null,
//!     "issued_at": 1795910400, "expires_at": 1803686400,
//!     "activation_id": "5f0c…", "key_id": "1a2b3c4d5e6f7a8b"
//!   },
//!   "key_endorsement": null,
//!   "signature": "…128 hex…"
//! }
//! ```
//!
//! The signature is Ed25519 over `outpost-license-v1\n` followed by the compact JSON
//! of `claims` with its fields in the order above, which is how this crate serialises
//! them; a verifier re-serialises the parsed claims, so whitespace changes do not
//! matter but any change of value does. Times are Unix seconds (UTC).

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{LicenseError, Result};
use crate::fingerprint::Fingerprint;
use crate::keys::{key_id, parse_public_key, parse_signature, LicenseKeys};
use crate::serial::Serial;

/// The only licence file format this crate reads.
pub const FORMAT: u32 = 1;
/// Largest licence file accepted; real ones are under 2 KiB.
pub const MAX_FILE_BYTES: usize = 64 * 1024;
const CLAIMS_DOMAIN: &[u8] = b"outpost-license-v1\n";
const ENDORSEMENT_DOMAIN: &[u8] = b"outpost-license-key-v1\n";

/// What a serial was sold as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseKind {
    /// Free trial: one device, a limited number of days.
    Trial,
    /// One device, bound to its fingerprint.
    PerDevice,
    /// An app (Android package name / iOS bundle id), up to a device cap.
    ProductLine,
}

impl std::fmt::Display for LicenseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LicenseKind::Trial => "trial",
            LicenseKind::PerDevice => "per_device",
            LicenseKind::ProductLine => "product_line",
        })
    }
}

/// The signed statement: who may run which models, where, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The activated serial.
    pub serial: Serial,
    /// Licence kind.
    pub kind: LicenseKind,
    /// Vendor id (the publisher of the models).
    pub vendor: String,
    /// Product ids (the manifests' `license.product_id`) this licence covers.
    pub models: Vec<String>,
    /// Edition granted, e.g. `standard` or `accelerated`.
    pub edition: String,
    /// The device fingerprint it is bound to (trial and per-device: always; product
    /// line: the device counted against the cap, when the app supplied one).
    pub fingerprint: Option<Fingerprint>,
    /// The app package name or bundle id (product line only).
    pub package_name: Option<String>,
    /// Issue time, Unix seconds.
    pub issued_at: u64,
    /// Expiry, Unix seconds.
    pub expires_at: u64,
    /// Server-side id of this activation.
    pub activation_id: String,
    /// Id of the key that signs this licence.
    pub key_id: String,
}

/// A newer signing key, vouched for by an older one the package trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEndorsement {
    /// The endorsed public key, hex.
    pub public_key: String,
    /// Id of the endorsing key.
    pub endorsed_by: String,
    /// Ed25519 signature of the endorsing key over the endorsed key, hex.
    pub signature: String,
}

impl KeyEndorsement {
    /// `endorser` vouches for `key`.
    pub fn new(endorser: &SigningKey, key: &VerifyingKey) -> KeyEndorsement {
        KeyEndorsement {
            public_key: hex::encode(key.as_bytes()),
            endorsed_by: key_id(&endorser.verifying_key()),
            signature: hex::encode(endorser.sign(&endorsement_message(key)).to_bytes()),
        }
    }
}

fn endorsement_message(key: &VerifyingKey) -> Vec<u8> {
    [ENDORSEMENT_DOMAIN, key.as_bytes()].concat()
}

/// A licence file as stored on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseFile {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The signed claims.
    pub claims: Claims,
    /// Present when `claims.key_id` is newer than the keys in the package.
    #[serde(default)]
    pub key_endorsement: Option<KeyEndorsement>,
    /// Ed25519 signature over the claims, hex.
    pub signature: String,
}

fn claims_message(claims: &Claims) -> Vec<u8> {
    let mut m = CLAIMS_DOMAIN.to_vec();
    // Serialising a struct of strings, integers and enums cannot fail.
    m.extend(serde_json::to_vec(claims).unwrap_or_default());
    m
}

impl LicenseFile {
    /// Signs claims (on the server). `claims.key_id` is set to the signer's id.
    pub fn sign(
        mut claims: Claims,
        key: &SigningKey,
        endorsement: Option<KeyEndorsement>,
    ) -> LicenseFile {
        claims.key_id = key_id(&key.verifying_key());
        let signature = hex::encode(key.sign(&claims_message(&claims)).to_bytes());
        LicenseFile {
            format: FORMAT,
            claims,
            key_endorsement: endorsement,
            signature,
        }
    }

    /// Parses a licence file. Anything that is not a well-formed format-1 licence
    /// (too large, not UTF-8 JSON, unknown fields, bad serial or fingerprint) fails
    /// with [`LicenseError::Corrupt`] (2014) naming `file`.
    pub fn parse(bytes: &[u8], file: &str) -> Result<LicenseFile> {
        let corrupt = |reason: String| LicenseError::Corrupt {
            file: file.to_string(),
            reason,
        };
        if bytes.len() > MAX_FILE_BYTES {
            return Err(corrupt(format!(
                "{} bytes, more than the {MAX_FILE_BYTES} a licence can have",
                bytes.len()
            )));
        }
        #[derive(Deserialize)]
        struct Probe {
            format: serde_json::Value,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("not a licence file ({e})")))?;
        if probe.format != serde_json::json!(FORMAT) {
            return Err(corrupt(format!("unsupported format {}", probe.format)));
        }
        let lic: LicenseFile =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("invalid licence ({e})")))?;
        lic.check_shape().map_err(corrupt)?;
        Ok(lic)
    }

    /// Value checks beyond the JSON types.
    fn check_shape(&self) -> std::result::Result<(), String> {
        let c = &self.claims;
        if !valid_id(&c.vendor) {
            return Err("vendor id must be 1-64 characters of a-z, 0-9, '.', '_' or '-'".into());
        }
        if c.models.is_empty() || c.models.len() > 1000 || !c.models.iter().all(|m| valid_id(m)) {
            return Err("models must be 1-1000 ids of a-z, 0-9, '.', '_' or '-'".into());
        }
        if c.edition.is_empty() || c.edition.len() > 64 {
            return Err("edition must be 1-64 characters".into());
        }
        if c.expires_at <= c.issued_at {
            return Err("expires before it was issued".into());
        }
        match c.kind {
            LicenseKind::Trial | LicenseKind::PerDevice if c.fingerprint.is_none() => {
                return Err(format!("a {} licence needs a fingerprint", c.kind))
            }
            LicenseKind::ProductLine if c.package_name.as_deref().is_none_or(str::is_empty) => {
                return Err("a product_line licence needs a package name".into())
            }
            _ => {}
        }
        if c.activation_id.len() > 128 || c.key_id.len() != 16 {
            return Err("malformed activation id or key id".into());
        }
        Ok(())
    }

    /// Serialised form, as written to disk (pretty JSON and a newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Checks the signature against the package's licence keys, following one
    /// endorsement when the signing key is newer than the package. Fails with
    /// [`LicenseError::SignatureInvalid`] (2015).
    pub fn verify_signature(&self, trusted: &LicenseKeys) -> Result<()> {
        let id = &self.claims.key_id;
        let endorsed;
        let key = match (trusted.get(id), &self.key_endorsement) {
            (Some(k), _) => k,
            (None, Some(e)) => {
                let endorser = trusted.get(&e.endorsed_by).ok_or_else(|| {
                    LicenseError::SignatureInvalid(format!(
                        "signed by key {id}, endorsed by key {}, neither trusted by this package",
                        e.endorsed_by.chars().take(16).collect::<String>()
                    ))
                })?;
                endorsed = parse_public_key(&e.public_key)?;
                if &key_id(&endorsed) != id {
                    return Err(LicenseError::SignatureInvalid(
                        "endorsed key is not the signing key".into(),
                    ));
                }
                endorser
                    .verify_strict(
                        &endorsement_message(&endorsed),
                        &parse_signature(&e.signature)?,
                    )
                    .map_err(|_| {
                        LicenseError::SignatureInvalid("key endorsement does not verify".into())
                    })?;
                &endorsed
            }
            (None, None) => {
                return Err(LicenseError::SignatureInvalid(format!(
                    "signed by key {}, which this package does not trust",
                    id.chars().take(16).collect::<String>()
                )))
            }
        };
        key.verify_strict(
            &claims_message(&self.claims),
            &parse_signature(&self.signature)?,
        )
        .map_err(|_| {
            LicenseError::SignatureInvalid("the licence was modified after signing".into())
        })
    }
}

/// Vendor, model and package ids: short, lowercase, file-name safe.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fingerprint::MachineFacts;
    use crate::keys::generate_signing_key;

    pub(crate) fn fingerprint(tag: &str) -> Fingerprint {
        let mut facts = MachineFacts::default();
        for name in ["machine", "board", "cpu", "mac"] {
            facts.values.insert(name.into(), format!("{name}-{tag}"));
        }
        Fingerprint::from_facts(&facts, "acme").unwrap()
    }

    pub(crate) fn claims() -> Claims {
        Claims {
            serial: Serial::from_random([1, 2, 3, 4, 5, 6, 7]),
            kind: LicenseKind::PerDevice,
            vendor: "acme".into(),
            models: vec!["efficientnet_lite0".into()],
            edition: "standard".into(),
            fingerprint: Some(fingerprint("a")),
            package_name: None,
            issued_at: 1_800_000_000,
            expires_at: 1_800_000_000 + 90 * 86_400,
            activation_id: "act-1".into(),
            key_id: String::new(),
        }
    }

    fn keys(k: &SigningKey) -> LicenseKeys {
        let mut t = LicenseKeys::default();
        t.add(k.verifying_key());
        t
    }

    #[test]
    fn signed_file_round_trips_and_verifies() {
        let k = generate_signing_key().unwrap();
        let lic = LicenseFile::sign(claims(), &k, None);
        let bytes = lic.to_json();
        let back = LicenseFile::parse(&bytes, "a.license").unwrap();
        assert_eq!(back, lic);
        back.verify_signature(&keys(&k)).unwrap();
        // Reformatting does not matter; the claims are what is signed.
        let compact = serde_json::to_vec(&lic).unwrap();
        LicenseFile::parse(&compact, "a")
            .unwrap()
            .verify_signature(&keys(&k))
            .unwrap();
    }

    #[test]
    fn any_changed_claim_breaks_the_signature() {
        let k = generate_signing_key().unwrap();
        let lic = LicenseFile::sign(claims(), &k, None);
        let tampered: [fn(&mut Claims); 6] = [
            |c| c.expires_at += 1,
            |c| c.models.push("yolov8".into()),
            |c| c.edition = "accelerated".into(),
            |c| c.fingerprint = Some(fingerprint("b")),
            |c| c.kind = LicenseKind::Trial,
            |c| c.serial = Serial::from_random([9; 7]),
        ];
        for t in tampered {
            let mut bad = lic.clone();
            t(&mut bad.claims);
            assert_eq!(bad.verify_signature(&keys(&k)).unwrap_err().code(), 2015);
        }
        let other = generate_signing_key().unwrap();
        assert_eq!(
            lic.verify_signature(&keys(&other)).unwrap_err().code(),
            2015
        );
    }

    #[test]
    fn rotated_keys_verify_through_an_endorsement() {
        let old = generate_signing_key().unwrap();
        let new = generate_signing_key().unwrap();
        let trusted = keys(&old);
        let e = KeyEndorsement::new(&old, &new.verifying_key());
        let lic = LicenseFile::sign(claims(), &new, Some(e.clone()));
        lic.verify_signature(&trusted).unwrap();
        // Without the endorsement, or with one by an untrusted key, it fails.
        let mut bare = lic.clone();
        bare.key_endorsement = None;
        assert_eq!(bare.verify_signature(&trusted).unwrap_err().code(), 2015);
        let rogue = generate_signing_key().unwrap();
        let mut forged = LicenseFile::sign(claims(), &rogue, None);
        forged.key_endorsement = Some(KeyEndorsement {
            public_key: hex::encode(rogue.verifying_key().as_bytes()),
            ..e
        });
        assert_eq!(forged.verify_signature(&trusted).unwrap_err().code(), 2015);
        // Licences signed by the old key still verify after rotation.
        LicenseFile::sign(claims(), &old, None)
            .verify_signature(&trusted)
            .unwrap();
    }

    #[test]
    fn malformed_files_are_2014_never_a_panic() {
        let k = generate_signing_key().unwrap();
        let good = LicenseFile::sign(claims(), &k, None).to_json();
        let text = String::from_utf8(good.clone()).unwrap();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            b"{}".to_vec(),
            b"null".to_vec(),
            vec![0xff; 40],
            vec![b' '; MAX_FILE_BYTES + 1],
            text.replace("\"format\": 1", "\"format\": 2").into_bytes(),
            text.replace("\"vendor\": \"acme\"", "\"vendor\": \"ACME/../x\"")
                .into_bytes(),
            text.replace("\"models\": [", "\"extra\": 1, \"models\": [")
                .into_bytes(),
            text.replace("per_device", "lifetime").into_bytes(),
        ];
        for cut in (0..good.len()).step_by(7) {
            cases.push(good[..cut].to_vec());
        }
        for bytes in cases {
            let err = LicenseFile::parse(&bytes, "x.license").unwrap_err();
            assert_eq!(err.code(), 2014, "{err}");
        }
    }

    #[test]
    fn kinds_need_their_binding() {
        let k = generate_signing_key().unwrap();
        let mut c = claims();
        c.fingerprint = None;
        let bytes = LicenseFile::sign(c.clone(), &k, None).to_json();
        assert_eq!(LicenseFile::parse(&bytes, "x").unwrap_err().code(), 2014);
        c.kind = LicenseKind::ProductLine;
        c.package_name = Some("com.acme.app".into());
        let bytes = LicenseFile::sign(c, &k, None).to_json();
        LicenseFile::parse(&bytes, "x").unwrap();
    }
}
