//! Outpost trainer: turns a cloud-trained ONNX model into a signed device package.
//!
//! Key generation, model inspection, packaging with model checks, INT8
//! quantisation with calibration, accuracy evaluation, and `compile`, which puts
//! the FP32 and INT8 models and a report into one signed package. The package
//! format itself lives in `outpost_runtime::package`, shared with the device.

pub mod compile;
pub mod dataset;
pub mod evaluate;
pub mod inspect;
pub mod keys;
pub mod latency;
pub mod metrics;
pub mod packaging;
pub mod quantize;
pub mod report;

pub use packaging::{build_package, PackageRequest};

/// Errors of the trainer library.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A runtime check failed (model load, manifest validation, ...).
    #[error("{0} (code {code})", code = .0.code())]
    Runtime(#[from] outpost_runtime::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The reason.
        source: std::io::Error,
    },
    /// An input file is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// Result type of the trainer library.
pub type Result<T, E = TrainerError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainerError + '_ {
    move |source| TrainerError::Io {
        path: path.display().to_string(),
        source,
    }
}
