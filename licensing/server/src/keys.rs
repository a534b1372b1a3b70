//! The server's licence-signing keys, kept in a directory (`--keys DIR`).
//!
//! | file | content |
//! | --- | --- |
//! | `<key_id>.key` | the 32-byte Ed25519 seed, 64 lowercase hex + newline, mode 0600 |
//! | `<key_id>.pub` | the public key, 64 lowercase hex + newline (the format of `outpost-trainer keygen`'s `public.key`) |
//! | `root` | id of the first key ever made: the one packages list |
//! | `current` | id of the key that signs new licences |
//! | `public.key` | a copy of the root's `.pub`, so the directory itself can be given to `outpost-trainer package --license-key` |
//!
//! Licences signed by a key other than the root carry a [`KeyEndorsement`] by the
//! root, so packages that only trust the root still verify them.

use std::fs;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::SigningKey;
use outpost_licensing::keys::{generate_signing_key, key_id};
use outpost_licensing::license_file::KeyEndorsement;
use serde::Serialize;

/// File naming the root key id.
const ROOT_FILE: &str = "root";
/// File naming the current key id.
const CURRENT_FILE: &str = "current";
/// Copy of the root public key, under the name `outpost-trainer` looks for.
const PUBLIC_KEY_FILE: &str = "public.key";

/// Failure reading or writing the key directory.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file cannot be read or written.
    #[error("key directory: {file}: {reason}")]
    Io {
        /// The file or directory.
        file: String,
        /// The operating-system reason.
        reason: String,
    },
    /// A key file does not hold what it should.
    #[error("key directory: {0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> KeyError + '_ {
    move |e| KeyError::Io {
        file: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// One signing key.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// Key id (16 hex).
    pub id: String,
    /// The signing key.
    pub signing: SigningKey,
}

/// A key as `GET /v1/keys` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key id.
    pub key_id: String,
    /// Public key, 64 hex.
    pub public_key: String,
    /// The first key: the one packages list.
    pub root: bool,
    /// The key that signs new licences.
    pub current: bool,
}

/// The loaded key directory.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<KeyEntry>,
    root: usize,
    current: usize,
    endorsement: Option<KeyEndorsement>,
}

/// Writes a file atomically (temporary file, fsync, rename) with the given mode.
fn write_atomic(dir: &Path, name: &str, text: &str, mode: u32) -> Result<(), KeyError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes a fresh key's `.key` and `.pub` files; returns its id.
fn write_new_key(dir: &Path) -> Result<(String, SigningKey), KeyError> {
    let key = generate_signing_key().map_err(|e| KeyError::Invalid(e.to_string()))?;
    let id = key_id(&key.verifying_key());
    write_atomic(
        dir,
        &format!("{id}.key"),
        &format!("{}\n", hex::encode(key.to_bytes())),
        0o600,
    )?;
    write_atomic(
        dir,
        &format!("{id}.pub"),
        &format!("{}\n", hex::encode(key.verifying_key().as_bytes())),
        0o644,
    )?;
    Ok((id, key))
}

fn read_id_file(path: &Path) -> Result<Option<String>, KeyError> {
    match fs::read_to_string(path) {
        Ok(t) => {
            let id = t.trim().to_string();
            if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(KeyError::Invalid(format!(
                    "{} does not hold a key id",
                    path.display()
                )));
            }
            Ok(Some(id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn read_key(dir: &Path, id: &str) -> Result<SigningKey, KeyError> {
    let path = dir.join(format!("{id}.key"));
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KeyError::Invalid(format!("{} is not 64 hex characters", path.display())))?;
    let key = SigningKey::from_bytes(&seed);
    if key_id(&key.verifying_key()) != id {
        return Err(KeyError::Invalid(format!(
            "{} does not hold key {id}",
            path.display()
        )));
    }
    Ok(key)
}

fn create_dir(dir: &Path) -> Result<(), KeyError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

impl KeyRing {
    /// Loads the key directory, creating it and a root key on first use.
    pub fn open_or_create(dir: &Path) -> Result<KeyRing, KeyError> {
        if read_id_file(&dir.join(ROOT_FILE))?.is_none() {
            create_dir(dir)?;
            let (id, key) = write_new_key(dir)?;
            // `root` is created exclusively: when two processes start on an empty
            // directory at once, one key wins and the other is removed.
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            let root_path = dir.join(ROOT_FILE);
            match options.open(&root_path) {
                Ok(mut f) => {
                    f.write_all(format!("{id}\n").as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(io_err(&root_path))?;
                    write_atomic(
                        dir,
                        PUBLIC_KEY_FILE,
                        &format!("{}\n", hex::encode(key.verifying_key().as_bytes())),
                        0o644,
                    )?;
                    write_atomic(dir, CURRENT_FILE, &format!("{id}\n"), 0o644)?;
                    tracing::info!(key_id = %id, "created the root licence-signing key");
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let _ = fs::remove_file(dir.join(format!("{id}.key")));
                    let _ = fs::remove_file(dir.join(format!("{id}.pub")));
                }
                Err(e) => return Err(io_err(&root_path)(e)),
            }
        }
        KeyRing::load(dir)
    }

    /// Loads an existing key directory.
    pub fn load(dir: &Path) -> Result<KeyRing, KeyError> {
        let root_id = read_id_file(&dir.join(ROOT_FILE))?
            .ok_or_else(|| KeyError::Invalid(format!("{} has no root key", dir.display())))?;
        // `current` is missing only right after the root was made: the root is current.
        let current_id = read_id_file(&dir.join(CURRENT_FILE))?.unwrap_or_else(|| root_id.clone());
        let mut ids: Vec<String> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".key") {
                if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    ids.push(id.to_string());
                }
            }
        }
        ids.sort();
        let keys = ids
            .iter()
            .map(|id| {
                Ok(KeyEntry {
                    id: id.clone(),
                    signing: read_key(dir, id)?,
                })
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        let find = |id: &str| {
            keys.iter().position(|k| k.id == id).ok_or_else(|| {
                KeyError::Invalid(format!("key {id} is named but {id}.key is missing"))
            })
        };
        let root = find(&root_id)?;
        let current = find(&current_id)?;
        let endorsement = (root != current).then(|| {
            KeyEndorsement::new(&keys[root].signing, &keys[current].signing.verifying_key())
        });
        Ok(KeyRing {
            keys,
            root,
            current,
            endorsement,
        })
    }

    /// Makes a new key current (creating the directory and root first if needed).
    /// Returns the new key id. Running servers pick it up when restarted.
    pub fn rotate(dir: &Path) -> Result<String, KeyError> {
        KeyRing::open_or_create(dir)?;
        let (id, _) = write_new_key(dir)?;
        write_atomic(dir, CURRENT_FILE, &format!("{id}\n"), 0o644)?;
        Ok(id)
    }

    /// The key that signs new licences.
    pub fn current(&self) -> &KeyEntry {
        &self.keys[self.current]
    }

    /// The root key.
    pub fn root(&self) -> &KeyEntry {
        &self.keys[self.root]
    }

    /// The root's endorsement of the current key, when it is not the root.
    pub fn endorsement(&self) -> Option<&KeyEndorsement> {
        self.endorsement.as_ref()
    }

    /// The root public key, 64 hex.
    pub fn root_public_hex(&self) -> String {
        hex::encode(self.root().signing.verifying_key().as_bytes())
    }

    /// Every key, for `GET /v1/keys`.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| KeyInfo {
                key_id: k.id.clone(),
                public_key: hex::encode(k.signing.verifying_key().as_bytes()),
                root: i == self.root,
                current: i == self.current,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_a_root_and_rotation_endorses() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("keys");
        let ring = KeyRing::open_or_create(&d).unwrap();
        assert_eq!(ring.root().id, ring.current().id);
        assert!(ring.endorsement().is_none());
        let text = fs::read_to_string(d.join(format!("{}.key", ring.root().id))).unwrap();
        assert_eq!(text.len(), 65);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(d.join(format!("{}.key", ring.root().id)))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let public = fs::read_to_string(d.join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(public.trim(), ring.root_public_hex());
        // Reopening loads the same key.
        let again = KeyRing::open_or_create(&d).unwrap();
        assert_eq!(again.root().id, ring.root().id);
        let new_id = KeyRing::rotate(&d).unwrap();
        let rotated = KeyRing::load(&d).unwrap();
        assert_eq!(rotated.current().id, new_id);
        assert_eq!(rotated.root().id, ring.root().id);
        let e = rotated.endorsement().unwrap();
        assert_eq!(e.endorsed_by, ring.root().id);
        assert_eq!(rotated.list().len(), 2);
    }

    #[test]
    fn a_damaged_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open_or_create(dir.path()).unwrap();
        fs::write(dir.path().join(format!("{}.key", ring.root().id)), "zz\n").unwrap();
        assert!(KeyRing::load(dir.path()).is_err());
    }
}
