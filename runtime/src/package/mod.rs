//! The signed device package (`.opk`): reading, verifying and writing.
//!
//! A package is an uncompressed ustar archive, or the same files unpacked in a
//! directory: `manifest.json`, `signature`, then the artifacts in name order.
//! Opening verifies, in order: archive structure, presence of `manifest.json` and
//! of a signature, the signer is trusted, the signature over the exact
//! `manifest.json` bytes, the format version, the schema, and that every artifact
//! is there at its signed size. Anything else in the package is refused: it would
//! be content no signature covers. An artifact's SHA-256 is checked each time it
//! is read, so a device reads and hashes only the artifacts it runs (a package
//! may carry models for other targets and precisions).

pub mod manifest;
pub mod signing;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

pub use manifest::{Manifest, FORMAT_VERSION, MANIFEST_FILE, SIGNATURE_FILE};
pub use signing::{SignatureFile, TrustedKeys};

use crate::error::{file_name, Error, Result};

/// Largest package accepted (4 GiB); guards against absurd inputs.
const MAX_PACKAGE_BYTES: u64 = 4 << 30;
const BLOCK: usize = 512;

/// A package whose signature has been verified, with every artifact present at
/// its signed size. Each artifact's SHA-256 is checked when it is read, so only
/// the artifacts a device uses are read and hashed
/// ([`Package::verify_artifacts`] checks them all).
#[derive(Debug)]
pub struct Package {
    manifest: Manifest,
    key_id: String,
    store: Store,
}

#[derive(Debug)]
enum Store {
    /// An archive in memory (e.g. read from an Android asset), with each entry's
    /// byte range.
    Memory {
        data: Vec<u8>,
        entries: BTreeMap<String, Range<u64>>,
    },
    /// An archive file, with each entry's byte range; entries are read on demand.
    File {
        file: Mutex<File>,
        entries: BTreeMap<String, Range<u64>>,
    },
    /// An unpacked directory: each file's size; files are read on demand.
    Directory {
        dir: PathBuf,
        files: BTreeMap<String, u64>,
    },
}

impl Store {
    fn names(&self) -> Vec<&str> {
        match self {
            Store::Memory { entries, .. } | Store::File { entries, .. } => {
                entries.keys().map(String::as_str).collect()
            }
            Store::Directory { files, .. } => files.keys().map(String::as_str).collect(),
        }
    }

    fn size(&self, name: &str) -> Option<u64> {
        match self {
            Store::Memory { entries, .. } | Store::File { entries, .. } => {
                entries.get(name).map(|r| r.end - r.start)
            }
            Store::Directory { files, .. } => files.get(name).copied(),
        }
    }

    /// The entry's bytes, or `None` when there is no such entry.
    fn read(&self, name: &str) -> Result<Option<Cow<'_, [u8]>>> {
        match self {
            Store::Memory { data, entries } => Ok(entries
                .get(name)
                .map(|r| Cow::Borrowed(&data[r.start as usize..r.end as usize]))),
            Store::File { file, entries } => {
                let Some(range) = entries.get(name) else {
                    return Ok(None);
                };
                let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut bytes = vec![0; (range.end - range.start) as usize];
                file.seek(SeekFrom::Start(range.start))
                    .and_then(|_| file.read_exact(&mut bytes))
                    .map_err(|e| Error::PackageCorrupt(format!("cannot read entry {name}: {e}")))?;
                Ok(Some(Cow::Owned(bytes)))
            }
            Store::Directory { dir, files } => {
                if !files.contains_key(name) {
                    return Ok(None);
                }
                let path = dir.join(name);
                std::fs::read(&path)
                    .map(|b| Some(Cow::Owned(b)))
                    .map_err(|e| Error::io(&path, e))
            }
        }
    }
}

/// Largest `manifest.json` or `signature` read (they are a few kilobytes).
const MAX_METADATA_BYTES: u64 = 16 << 20;

impl Package {
    /// Opens a package file or directory: checks its structure, its signature
    /// against the trusted keys, and that every artifact is present at its
    /// signed size. Artifacts are read, and their hashes checked, by
    /// [`Package::artifact`].
    pub fn open(path: impl AsRef<Path>, trusted: &TrustedKeys) -> Result<Package> {
        let path = path.as_ref();
        if trusted.is_empty() {
            return Err(Error::NoTrustedKey);
        }
        let meta = std::fs::metadata(path).map_err(|_| Error::PackageNotFound(file_name(path)))?;
        let store = if meta.is_dir() {
            index_directory(path)?
        } else {
            if meta.len() > MAX_PACKAGE_BYTES {
                return Err(Error::PackageCorrupt("larger than 4 GiB".into()));
            }
            let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
            let entries = index_archive(&mut file)?;
            Store::File {
                file: Mutex::new(file),
                entries,
            }
        };
        Package::verify(store, trusted)
    }

    /// Verifies an in-memory archive (e.g. read from an Android asset).
    pub fn from_bytes(data: Vec<u8>, trusted: &TrustedKeys) -> Result<Package> {
        if trusted.is_empty() {
            return Err(Error::NoTrustedKey);
        }
        let entries = index_archive(&mut Cursor::new(&data))?;
        Package::verify(Store::Memory { data, entries }, trusted)
    }

    fn verify(store: Store, trusted: &TrustedKeys) -> Result<Package> {
        let metadata = |name: &str| -> Result<Option<Cow<'_, [u8]>>> {
            match store.size(name) {
                Some(size) if size > MAX_METADATA_BYTES => Err(Error::PackageCorrupt(format!(
                    "{name} is {size} bytes, more than a manifest can be"
                ))),
                _ => store.read(name),
            }
        };
        let manifest_bytes = metadata(MANIFEST_FILE)?
            .ok_or_else(|| Error::ManifestInvalid("no manifest.json in the package".into()))?;
        let signature = metadata(SIGNATURE_FILE)?.ok_or(Error::PackageUnsigned)?;
        let key_id = SignatureFile::verify(&signature, &manifest_bytes, trusted)?;
        let manifest = Manifest::parse(&manifest_bytes)?;
        for artifact in &manifest.artifacts {
            let size = store
                .size(&artifact.file)
                .ok_or_else(|| Error::ArtifactMissing(artifact.file.clone()))?;
            if size != artifact.size {
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
        drop((manifest_bytes, signature));
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

    /// Reads an artifact listed in the manifest and checks its size and SHA-256:
    /// the bytes returned are the signed ones.
    pub fn artifact(&self, file: &str) -> Result<Cow<'_, [u8]>> {
        let listed = self
            .manifest
            .artifacts
            .iter()
            .find(|a| a.file == file)
            .ok_or_else(|| Error::ArtifactMissing(file.to_string()))?;
        let bytes = self
            .store
            .read(file)?
            .ok_or_else(|| Error::ArtifactMissing(file.to_string()))?;
        if bytes.len() as u64 != listed.size || sha256_hex(&bytes) != listed.sha256 {
            return Err(Error::ArtifactHashMismatch {
                file: file.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Reads and hashes every artifact, e.g. to check a package once after a
    /// download rather than artifact by artifact as they are used.
    pub fn verify_artifacts(&self) -> Result<()> {
        for a in &self.manifest.artifacts {
            self.artifact(&a.file)?;
        }
        Ok(())
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn index_directory(dir: &Path) -> Result<Store> {
    let mut files = BTreeMap::new();
    let listing = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = std::fs::metadata(entry.path()).map_err(|e| Error::io(&entry.path(), e))?;
        if !meta.is_file() {
            return Err(Error::PackageCorrupt(format!(
                "{name} is not a regular file"
            )));
        }
        files.insert(name, meta.len());
    }
    Ok(Store::Directory {
        dir: dir.to_path_buf(),
        files,
    })
}

/// Indexes a ustar archive by its headers alone: each regular file's byte range.
fn index_archive<R: Read + Seek>(archive: &mut R) -> Result<BTreeMap<String, Range<u64>>> {
    let corrupt = |e: std::io::Error| Error::PackageCorrupt(e.to_string());
    // A complete archive is whole blocks ending in two zero blocks; anything else
    // was cut short, even when the cut falls between entries.
    let len = archive.seek(SeekFrom::End(0)).map_err(corrupt)?;
    let mut tail = [0u8; 2 * BLOCK];
    let complete = len >= tail.len() as u64
        && len % BLOCK as u64 == 0
        && archive
            .seek(SeekFrom::Start(len - tail.len() as u64))
            .and_then(|_| archive.read_exact(&mut tail))
            .is_ok()
        && tail.iter().all(|&b| b == 0);
    if !complete {
        return Err(Error::PackageCorrupt(
            "archive is truncated (no end-of-archive marker)".into(),
        ));
    }
    archive.seek(SeekFrom::Start(0)).map_err(corrupt)?;
    let mut archive = tar::Archive::new(archive);
    let mut entries = BTreeMap::new();
    for entry in archive.entries_with_seek().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(Error::PackageCorrupt(
                "archive holds something other than regular files".into(),
            ));
        }
        let name = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        let start = entry.raw_file_position();
        let end = start
            .checked_add(entry.size())
            .filter(|&e| e <= len)
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
