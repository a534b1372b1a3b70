//! The one public error type of the runtime, with stable numeric codes.
//!
//! Codes are grouped as in DESIGN.md: 1xxx configuration and input, 2xxx licence,
//! 3xxx model and package, 4xxx backend, 5xxx network and server. A code, once
//! published, never changes meaning; `docs/errors.md` lists them all.

use std::path::Path;

/// Result type of every fallible runtime call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure the runtime reports. `code()` gives the stable number.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- 1xxx configuration and input ----
    /// A configuration value is out of range or malformed.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An `OUTPOST_*` environment variable could not be parsed.
    #[error("invalid environment variable {name}: {reason}")]
    InvalidEnv {
        /// Variable name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// No public key is configured to verify package signatures.
    #[error("no trusted signing key configured: set Config::trusted_keys or OUTPOST_TRUSTED_KEYS")]
    NoTrustedKey,
    /// A trusted key file could not be read or parsed.
    #[error("invalid trusted key {file}: {reason}")]
    InvalidKey {
        /// File name (no directory) of the key.
        file: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Encoded image bytes could not be decoded.
    #[error("cannot decode image: {0}")]
    ImageDecode(String),
    /// The image has zero width or height, or no bytes at all.
    #[error("empty image: {0}")]
    EmptyImage(String),
    /// A raw pixel buffer does not match its declared width, height and stride.
    #[error("invalid pixel buffer: {0}")]
    InvalidBuffer(String),
    /// The image is larger than the runtime accepts.
    #[error("image too large: {width}x{height} exceeds {max} pixels per side")]
    ImageTooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Largest side accepted.
        max: u32,
    },
    /// An argument is unusable: a null pointer, a string that is not UTF-8, a size
    /// that does not match its buffer (from the C, Java and Swift bindings).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A handle passed to a binding was freed already, never made by this library,
    /// or is of another kind (a results handle where a predictor is expected).
    #[error("invalid handle: {0}")]
    InvalidHandle(String),
    /// A file given by the caller could not be read.
    #[error("cannot read {file}: {reason}")]
    Io {
        /// File name (no directory).
        file: String,
        /// The operating-system reason.
        reason: String,
    },

    // ---- 2xxx licence ----
    /// The package needs a licence and none valid is installed, or the licence
    /// store failed; the licensing crate's error carries the 2xxx code.
    #[error("{0}")]
    License(#[from] outpost_licensing::LicenseError),

    // ---- 3xxx model and package ----
    /// The package path does not exist.
    #[error("package not found: {0}")]
    PackageNotFound(String),
    /// The archive ends early or its structure is broken.
    #[error("package is truncated or not a valid archive: {0}")]
    PackageCorrupt(String),
    /// The package carries no signature.
    #[error("package is not signed (no `signature` entry)")]
    PackageUnsigned,
    /// The signature does not verify: the manifest was changed after signing.
    #[error("package signature is invalid: the manifest was modified after signing")]
    SignatureInvalid,
    /// The package was signed by a key that is not trusted here.
    #[error("package is signed by untrusted key {key_id}")]
    UntrustedKey {
        /// Key id named by the signature.
        key_id: String,
    },
    /// An artifact's bytes do not hash to the value in the manifest.
    #[error("artifact {file} does not match its SHA-256 in the manifest (tampered or damaged)")]
    ArtifactHashMismatch {
        /// Artifact file name.
        file: String,
    },
    /// The manifest names a format version this runtime does not know.
    #[error("unsupported package format version {found} (this runtime reads version {supported})")]
    UnsupportedFormatVersion {
        /// Version found in the manifest.
        found: u64,
        /// Version this runtime reads.
        supported: u32,
    },
    /// The manifest is not valid JSON or breaks the schema.
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    /// An artifact named by the manifest is absent from the package.
    #[error("artifact {0} is missing from the package")]
    ArtifactMissing(String),
    /// The package has no artifact the chosen backend can run.
    #[error("no artifact for target {target} and precision {precision}")]
    NoSuitableArtifact {
        /// Target asked for.
        target: String,
        /// Precision asked for.
        precision: String,
    },
    /// The model could not be parsed or optimised.
    #[error("cannot load model: {0}")]
    ModelLoad(String),
    /// The model's inputs or outputs disagree with the manifest or decoder.
    #[error("model does not match its manifest: {0}")]
    ModelMismatch(String),

    // ---- 4xxx backend ----
    /// The requested backend is not compiled into this build or not present.
    #[error("backend {0} is not available on this build")]
    BackendUnavailable(String),
    /// The backend failed while running the model.
    #[error("inference failed: {0}")]
    Inference(String),
    /// A bug inside Outpost, caught at a binding's boundary (a panic) instead of
    /// crashing the app; please report it with the message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable numeric code of this error (see `docs/errors.md`).
    pub fn code(&self) -> u32 {
        match self {
            Error::InvalidConfig(_) => 1001,
            Error::InvalidEnv { .. } => 1002,
            Error::NoTrustedKey => 1003,
            Error::InvalidKey { .. } => 1004,
            Error::Io { .. } => 1005,
            Error::InvalidArgument(_) => 1006,
            Error::InvalidHandle(_) => 1007,
            Error::ImageDecode(_) => 1101,
            Error::EmptyImage(_) => 1102,
            Error::InvalidBuffer(_) => 1103,
            Error::ImageTooLarge { .. } => 1104,
            Error::License(e) => e.code(),
            Error::PackageNotFound(_) => 3001,
            Error::PackageCorrupt(_) => 3002,
            Error::PackageUnsigned => 3003,
            Error::SignatureInvalid => 3004,
            Error::UntrustedKey { .. } => 3005,
            Error::ArtifactHashMismatch { .. } => 3006,
            Error::UnsupportedFormatVersion { .. } => 3007,
            Error::ManifestInvalid(_) => 3008,
            Error::ArtifactMissing(_) => 3009,
            Error::NoSuitableArtifact { .. } => 3010,
            Error::ModelLoad(_) => 3011,
            Error::ModelMismatch(_) => 3012,
            Error::BackendUnavailable(_) => 4001,
            Error::Inference(_) => 4002,
            Error::Internal(_) => 4003,
        }
    }

    /// Builds an [`Error::Io`] naming only the file, never the user's full path.
    pub fn io(path: &Path, err: std::io::Error) -> Error {
        Error::Io {
            file: file_name(path),
            reason: err.to_string(),
        }
    }
}

/// The last component of a path, for messages that must not leak home directories.
pub(crate) fn file_name(path: &Path) -> String {
    outpost_licensing::error::file_name(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_sit_in_their_design_groups() {
        assert_eq!(Error::InvalidConfig("x".into()).code() / 1000, 1);
        assert_eq!(Error::ImageDecode("x".into()).code() / 1000, 1);
        assert_eq!(Error::PackageUnsigned.code() / 1000, 3);
        assert_eq!(Error::BackendUnavailable("gpu".into()).code() / 1000, 4);
    }

    #[test]
    fn io_errors_name_only_the_file() {
        let e = Error::io(
            Path::new("/home/alice/secret/dir/model.opk"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        let msg = e.to_string();
        assert!(msg.contains("model.opk"), "{msg}");
        assert!(!msg.contains("alice"), "{msg}");
    }
}
