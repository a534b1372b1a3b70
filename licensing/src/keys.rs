//! Key ids and the licence keys a package trusts.
//!
//! A key id is the hex of the first 8 bytes of the SHA-256 of the Ed25519 public key,
//! the same rule as package signing keys. A package names the licence server's public
//! keys in its manifest (`license.keys`); a licence signed by a newer server key
//! carries an endorsement of that key by one the package already trusts, so keys can
//! rotate without re-shipping packages.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{LicenseError, Result};

/// The key id of a public key: hex of the first 8 bytes of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Parses a public key written as 64 hex characters.
pub fn parse_public_key(hex_text: &str) -> Result<VerifyingKey> {
    let raw: [u8; 32] = hex::decode(hex_text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            LicenseError::SignatureInvalid("public key is not 64 hex characters".into())
        })?;
    VerifyingKey::from_bytes(&raw)
        .map_err(|_| LicenseError::SignatureInvalid("not a valid Ed25519 public key".into()))
}

/// Parses a 64-byte signature written as 128 hex characters.
pub(crate) fn parse_signature(hex_text: &str) -> Result<Signature> {
    let raw: [u8; 64] = hex::decode(hex_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            LicenseError::SignatureInvalid("signature is not 128 hex characters".into())
        })?;
    Ok(Signature::from_bytes(&raw))
}

/// Licence-signing public keys trusted for one package, by key id.
#[derive(Debug, Clone, Default)]
pub struct LicenseKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

impl LicenseKeys {
    /// Builds the set from hex public keys (a manifest's `license.keys`). A key whose
    /// stated id differs from its computed id is refused.
    pub fn from_hex<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<LicenseKeys> {
        let mut set = LicenseKeys::default();
        for (id, hex_key) in keys {
            let key = parse_public_key(hex_key)?;
            if key_id(&key) != id {
                return Err(LicenseError::SignatureInvalid(format!(
                    "licence key {id} does not match its public key"
                )));
            }
            set.add(key);
        }
        Ok(set)
    }

    /// Adds one key.
    pub fn add(&mut self, key: VerifyingKey) {
        self.keys.insert(key_id(&key), key);
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A new signing key with its id (for the server and tests).
pub fn generate_signing_key() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| LicenseError::SignatureInvalid(format!("no random source: {e}")))?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_load_by_id_and_ids_are_checked() {
        let k = generate_signing_key().unwrap().verifying_key();
        let id = key_id(&k);
        assert_eq!(id.len(), 16);
        let hex_key = hex::encode(k.as_bytes());
        let set = LicenseKeys::from_hex([(id.as_str(), hex_key.as_str())]).unwrap();
        assert!(set.get(&id).is_some());
        let err = LicenseKeys::from_hex([("0000000000000000", hex_key.as_str())]).unwrap_err();
        assert_eq!(err.code(), 2015);
        assert!(LicenseKeys::from_hex([(id.as_str(), "zz")]).is_err());
    }
}
