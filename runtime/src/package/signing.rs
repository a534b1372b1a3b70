//! Ed25519 keys and the `signature` entry of a package.
//!
//! Key files hold 64 lowercase hex characters (the 32-byte public key, or the
//! 32-byte secret seed) and a newline. A key id is the first 8 bytes of the
//! SHA-256 of the public key, in hex; it lets a device hold several trusted keys
//! and lets publishers rotate keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{file_name, Error, Result};

/// File name of the public key inside a key directory.
pub const PUBLIC_KEY_FILE: &str = "public.key";
/// File name of the secret key inside a key directory.
pub const PRIVATE_KEY_FILE: &str = "private.key";
/// The only signature algorithm of format version 1.
pub const ALGORITHM: &str = "ed25519";

/// The `signature` entry: which key signed `manifest.json`, and the signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureFile {
    /// Always `ed25519` in format version 1.
    pub algorithm: String,
    /// Id of the signing key, see [`key_id`].
    pub key_id: String,
    /// The 64-byte signature in hex.
    pub signature: String,
}

impl SignatureFile {
    /// Signs manifest bytes with a secret key.
    pub fn sign(key: &SigningKey, manifest: &[u8]) -> SignatureFile {
        SignatureFile {
            algorithm: ALGORITHM.into(),
            key_id: key_id(&key.verifying_key()),
            signature: hex::encode(key.sign(manifest).to_bytes()),
        }
    }

    /// Serialised form, as stored in the package.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("signature always serialises");
        v.push(b'\n');
        v
    }

    /// Verifies `manifest` against the trusted keys.
    pub fn verify(bytes: &[u8], manifest: &[u8], trusted: &TrustedKeys) -> Result<String> {
        let sig: SignatureFile =
            serde_json::from_slice(bytes).map_err(|_| Error::SignatureInvalid)?;
        if sig.algorithm != ALGORITHM {
            return Err(Error::SignatureInvalid);
        }
        let key = trusted
            .get(&sig.key_id)
            .ok_or_else(|| Error::UntrustedKey {
                key_id: sig.key_id.chars().take(16).collect(),
            })?;
        let raw: [u8; 64] = hex::decode(&sig.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(Error::SignatureInvalid)?;
        key.verify_strict(manifest, &Signature::from_bytes(&raw))
            .map_err(|_| Error::SignatureInvalid)?;
        Ok(sig.key_id)
    }
}

/// The key id of a public key: hex of the first 8 bytes of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    // One rule for package and licence keys.
    outpost_licensing::key_id(key)
}

/// Public keys a device trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

impl TrustedKeys {
    /// Loads keys from files, or from `DIR/public.key` for a directory.
    pub fn load(paths: &[PathBuf]) -> Result<TrustedKeys> {
        let mut trusted = TrustedKeys::default();
        for path in paths {
            trusted.add(read_public_key(&public_key_file(path))?);
        }
        Ok(trusted)
    }

    /// Adds one key.
    pub fn add(&mut self, key: VerifyingKey) {
        self.keys.insert(key_id(&key), key);
    }

    /// The key with this id, if trusted.
    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.get(key_id)
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn read_hex32(path: &Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::InvalidKey {
        file: file_name(path),
        reason: e.to_string(),
    })?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::InvalidKey {
            file: file_name(path),
            reason: "expected 64 hex characters".into(),
        })
}

/// The key file a user named: `DIR/public.key` for a key directory, else the path.
pub fn public_key_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(PUBLIC_KEY_FILE)
    } else {
        path.to_path_buf()
    }
}

/// Reads a public key file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey> {
    VerifyingKey::from_bytes(&read_hex32(path)?).map_err(|_| Error::InvalidKey {
        file: file_name(path),
        reason: "not a valid Ed25519 public key".into(),
    })
}

/// Reads a secret key file (the 32-byte seed).
pub fn read_private_key(path: &Path) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&read_hex32(path)?))
}

/// Text of a key file for these 32 bytes.
pub fn key_file_text(bytes: &[u8; 32]) -> String {
    format!("{}\n", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn sign_then_verify_and_refuse_changes() {
        let k = key(7);
        let mut trusted = TrustedKeys::default();
        trusted.add(k.verifying_key());
        let sig = SignatureFile::sign(&k, b"manifest").to_json();
        assert_eq!(
            SignatureFile::verify(&sig, b"manifest", &trusted).unwrap(),
            key_id(&k.verifying_key())
        );
        let err = SignatureFile::verify(&sig, b"manifesT", &trusted).unwrap_err();
        assert_eq!(err.code(), 3004);
        let mut other = TrustedKeys::default();
        other.add(key(8).verifying_key());
        assert_eq!(
            SignatureFile::verify(&sig, b"manifest", &other)
                .unwrap_err()
                .code(),
            3005
        );
        assert_eq!(
            SignatureFile::verify(b"{}", b"manifest", &trusted)
                .unwrap_err()
                .code(),
            3004
        );
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(3);
        std::fs::write(
            dir.path().join(PUBLIC_KEY_FILE),
            key_file_text(k.verifying_key().as_bytes()),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(PRIVATE_KEY_FILE),
            key_file_text(&k.to_bytes()),
        )
        .unwrap();
        let trusted = TrustedKeys::load(&[dir.path().to_path_buf()]).unwrap();
        assert!(trusted.get(&key_id(&k.verifying_key())).is_some());
        assert_eq!(
            read_private_key(&dir.path().join(PRIVATE_KEY_FILE))
                .unwrap()
                .to_bytes(),
            k.to_bytes()
        );
        std::fs::write(dir.path().join("bad.key"), "zz\n").unwrap();
        assert_eq!(
            TrustedKeys::load(&[dir.path().join("bad.key")])
                .unwrap_err()
                .code(),
            1004
        );
    }
}
