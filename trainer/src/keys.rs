//! `keygen`: an Ed25519 key pair for signing packages.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use outpost_runtime::package::signing::{
    key_file_text, key_id, read_private_key, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE,
};

use crate::{io_err, Result, TrainerError};

/// Writes a fresh key pair into `dir`, refusing to overwrite an existing key.
/// Returns the key id.
pub fn keygen(dir: &Path) -> Result<String> {
    let private = dir.join(PRIVATE_KEY_FILE);
    if private.exists() {
        return Err(TrainerError::Invalid(format!(
            "{} already exists; refusing to overwrite a signing key",
            private.display()
        )));
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| TrainerError::Invalid(format!("no system randomness: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    write_private(&private, &key_file_text(&key.to_bytes()))?;
    let public = dir.join(PUBLIC_KEY_FILE);
    fs::write(&public, key_file_text(key.verifying_key().as_bytes())).map_err(io_err(&public))?;
    Ok(key_id(&key.verifying_key()))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(text.as_bytes()).map_err(io_err(path))
}

/// Loads the signing key from a key directory (or a `private.key` file).
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let file: PathBuf = if path.is_dir() {
        path.join(PRIVATE_KEY_FILE)
    } else {
        path.to_path_buf()
    };
    Ok(read_private_key(&file)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_usable_pair_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let id = keygen(dir.path()).unwrap();
        let key = load_signing_key(dir.path()).unwrap();
        assert_eq!(key_id(&key.verifying_key()), id);
        let public =
            outpost_runtime::package::signing::read_public_key(&dir.path().join(PUBLIC_KEY_FILE))
                .unwrap();
        assert_eq!(public, key.verifying_key());
        assert!(keygen(dir.path()).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(PRIVATE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
