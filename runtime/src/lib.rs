//! Outpost runtime: verify and load a signed package, run it on the device, and
//! return typed results.
//!
//! ```no_run
//! use outpost_runtime::{Config, ImageInput, Predictor};
//!
//! let config = Config {
//!     trusted_keys: Some(vec!["keys/public.key".into()]),
//!     ..Config::default()
//! };
//! let predictor = Predictor::open("model.opk", &config)?;
//! let bytes = std::fs::read("cat.jpg").unwrap();
//! let prediction = predictor.infer(ImageInput::Encoded(&bytes))?;
//! for c in prediction.classifications().unwrap_or_default() {
//!     println!("{} {} {:.3}", c.index, c.label, c.confidence);
//! }
//! # Ok::<(), outpost_runtime::Error>(())
//! ```

pub mod backend;
pub mod config;
pub mod decoder;
pub mod error;
pub mod image;
pub mod license;
pub mod package;
pub mod predictor;
pub mod preprocess;
pub mod results;

/// The licensing crate (serials, fingerprints, licence files), re-exported for apps.
pub use outpost_licensing;

pub use config::{BackendKind, Config, LogLevel, Settings};
pub use error::{Error, Result};
pub use image::{ImageInput, PixelFormat, RawImage, RgbImage};
pub use package::manifest::Precision;
pub use package::{Manifest, Package, PackageWriter, TrustedKeys};
pub use predictor::Predictor;
pub use results::{Classification, Detection, OutputTensor, Prediction};
