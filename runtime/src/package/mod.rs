//! The signed device package (`.opk`): reading, verifying and writing.
//!
//! A package is an uncompressed ustar archive, or the same files unpacked in a
//! directory: `manifest.json`, `signature`, then the artifacts in name order.
//! Opening verifies, in order: archive structure, presence of `manifest.json` and
//! of a signature, the signer is trusted, the signature over the exact
//! `manifest.json` bytes, the format version, the schema, and the size and
//! SHA-256 of every artifact. Anything else
//! in the package is refused: it would be content no signature covers.

pub mod manifest;
pub mod signing;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

pub use manifest::{Manifest, FORMAT_VERSION, MANIFEST_FILE, SIGNATURE_FILE};
pub use signing::{SignatureFile, TrustedKeys};

use crate::error::{file_name, Error, Result};

/// Largest package accepted (4 GiB); guards against absurd inputs.
const MAX_PACKAGE_BYTES: u64 = 4 << 30;
const BLOCK: usize = 512;

/// A package whose signature and hashes have been verified.
#[derive(Debug)]
pub struct Package {
    manifest: Manifest,
    key_id: String,
    store: Store,
}

#[derive(Debug)]
enum Store {
    /// The whole archive in memory, with each entry's byte range.
    Archive {
        data: Vec<u8>,
        entries: BTreeMap<String, Range<usize>>,
    },
    /// Files read from an unpacked directory.
    Directory { files: BTreeMap<String, Vec<u8>> },
}

impl Store {
    fn get(&self, name: &str) -> Option<&[u8]> {
        match self {
            Store::Archive { data, entries } => entries.get(name).map(|r| &data[r.clone()]),
            Store::Directory { files } => files.get(name).map(Vec::as_slice),
        }
    }

    fn names(&self) -> Vec<&str> {
        match self {
            Store::Archive { entries, .. } => entries.keys().map(String::as_str).collect(),
            Store::Directory { files } => files.keys().map(String::as_str).collect(),
        }
    }
}

impl Package {
    /// Opens and verifies a package file or directory against the trusted keys.
    pub fn open(path: impl AsRef<Path>, trusted: &TrustedKeys) -> Result<Package> {
        let path = path.as_ref();
        if trusted.is_empty() {
            return Err(Error::NoTrustedKey);
        }
        let meta = std::fs::metadata(path).map_err(|_| Error::PackageNotFound(file_name(path)))?;
        let store = if meta.is_dir() {
            read_directory(path)?
        } else {
            if meta.len() > MAX_PACKAGE_BYTES {
                return Err(Error::PackageCorrupt("larger than 4 GiB".into()));
            }
            let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let entries = index_archive(&data)?;
            Store::Archive { data, entries }
        };
        Package::verify(store, trusted)
    }

    /// Verifies an in-memory archive (e.g. read from an Android asset).
    pub fn from_bytes(data: Vec<u8>, trusted: &TrustedKeys) -> Result<Package> {
        if trusted.is_empty() {
            return Err(Error::NoTrustedKey);
        }
        let entries = index_archive(&data)?;
        Package::verify(Store::Archive { data, entries }, trusted)
    }

    fn verify(store: Store, trusted: &TrustedKeys) -> Result<Package> {
        let manifest_bytes = store
            .get(MANIFEST_FILE)
            .ok_or_else(|| Error::ManifestInvalid("no manifest.json in the package".into()))?;
        let signature = store.get(SIGNATURE_FILE).ok_or(Error::PackageUnsigned)?;
        let key_id = SignatureFile::verify(signature, manifest_bytes, trusted)?;
        let manifest = Manifest::parse(manifest_bytes)?;
        for artifact in &manifest.artifacts {
            let bytes = store
                .get(&artifact.file)
                .ok_or_else(|| Error::ArtifactMissing(artifact.file.clone()))?;
            if bytes.len() as u64 != artifact.size || sha256_hex(bytes) != artifact.sha256 {
                return Err(Error::ArtifactHashMismatch {
                    file: artifact.file.clone(),
                });
            }
        }
        for name in store.names() {
            let listed = name == MANIFEST_FILE
                || name == SIGNATURE_FILE
                || manifest.artifacts.iter().any(|a| a.file == name);
            if !listed {
                return Err(Error::PackageCorrupt(format!(
                    "entry {name} is not listed in the manifest"
                )));
            }
        }
        Ok(Package {
            manifest,
            key_id,
            store,
        })
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Id of the key that signed this package.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Bytes of a verified artifact.
    pub fn artifact(&self, file: &str) -> Result<&[u8]> {
        self.store
            .get(file)
            .ok_or_else(|| Error::ArtifactMissing(file.to_string()))
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read_directory(dir: &Path) -> Result<Store> {
    let mut files = BTreeMap::new();
    let listing = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_file() {
            return Err(Error::PackageCorrupt(format!(
                "{name} is not a regular file"
            )));
        }
        let bytes = std::fs::read(entry.path()).map_err(|e| Error::io(&entry.path(), e))?;
        files.insert(name, bytes);
    }
    Ok(Store::Directory { files })
}

/// Indexes a ustar archive without copying: each regular file's byte range.
fn index_archive(data: &[u8]) -> Result<BTreeMap<String, Range<usize>>> {
    // A complete archive is whole blocks ending in two zero blocks; anything else
    // was cut short, even when the cut falls between entries.
    if data.len() < 2 * BLOCK
        || data.len() % BLOCK != 0
        || data[data.len() - 2 * BLOCK..].iter().any(|&b| b != 0)
    {
        return Err(Error::PackageCorrupt(
            "archive is truncated (no end-of-archive marker)".into(),
        ));
    }
    let mut archive = tar::Archive::new(data);
    let mut entries = BTreeMap::new();
    let iter = archive
        .entries()
        .map_err(|e| Error::PackageCorrupt(e.to_string()))?;
    for entry in iter {
        let entry = entry.map_err(|e| Error::PackageCorrupt(e.to_string()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(Error::PackageCorrupt(
                "archive holds something other than regular files".into(),
            ));
        }
        let name = entry
            .path()
            .map_err(|e| Error::PackageCorrupt(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let start = usize::try_from(entry.raw_file_position())
            .map_err(|_| Error::PackageCorrupt("entry offset overflows".into()))?;
        let size = usize::try_from(entry.size())
            .map_err(|_| Error::PackageCorrupt("entry size overflows".into()))?;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| Error::PackageCorrupt(format!("entry {name} is truncated")))?;
        if entries.insert(name.clone(), start..end).is_some() {
            return Err(Error::PackageCorrupt(format!("entry {name} appears twice")));
        }
    }
    Ok(entries)
}

/// Builds a signed package. The same inputs give the same bytes.
#[derive(Debug, Default)]
pub struct PackageWriter {
    files: BTreeMap<String, Vec<u8>>,
}

impl PackageWriter {
    /// An empty package.
    pub fn new() -> PackageWriter {
        PackageWriter::default()
    }

    /// Adds an artifact; its manifest entry must list the same file name.
    pub fn add_file(&mut self, name: &str, bytes: Vec<u8>) -> Result<()> {
        if !manifest::is_safe_file_name(name) {
            return Err(Error::ManifestInvalid(format!(
                "artifact file name {name:?} is not allowed"
            )));
        }
        self.files.insert(name.to_string(), bytes);
        Ok(())
    }

    /// Validates the manifest against the files, signs it and returns the archive bytes.
    pub fn finish(self, manifest: &Manifest, key: &SigningKey) -> Result<Vec<u8>> {
        manifest.validate()?;
        for a in &manifest.artifacts {
            let bytes = self
                .files
                .get(&a.file)
                .ok_or_else(|| Error::ArtifactMissing(a.file.clone()))?;
            if bytes.len() as u64 != a.size || sha256_hex(bytes) != a.sha256 {
                return Err(Error::ArtifactHashMismatch {
                    file: a.file.clone(),
                });
            }
        }
        let manifest_bytes = manifest.to_canonical_json();
        let signature = SignatureFile::sign(key, &manifest_bytes).to_json();
        let mut builder = tar::Builder::new(Vec::new());
        let mut append = |name: &str, bytes: &[u8]| -> Result<()> {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, name, bytes)
                .map_err(|e| Error::PackageCorrupt(e.to_string()))
        };
        append(MANIFEST_FILE, &manifest_bytes)?;
        append(SIGNATURE_FILE, &signature)?;
        for (name, bytes) in &self.files {
            append(name, bytes)?;
        }
        builder
            .into_inner()
            .map_err(|e| Error::PackageCorrupt(e.to_string()))
    }
}

/// Builds an [`manifest::Artifact`] entry describing these bytes.
pub fn describe_artifact(
    file: &str,
    format: manifest::ArtifactFormat,
    target: &str,
    precision: manifest::Precision,
    bytes: &[u8],
) -> manifest::Artifact {
    manifest::Artifact {
        file: file.to_string(),
        format,
        target: target.to_string(),
        precision,
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    }
}
