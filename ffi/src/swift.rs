//! The Swift API (uniffi): the objects, records and errors that `ios/` generates
//! Swift from (`ios/Sources/Outpost/Outpost.swift`) and wraps for `CGImage` and
//! `Data`. They live in this library, so one `liboutpost.a` serves C, Java and
//! Swift. uniffi catches panics itself, and every call here returns a `Result`, so
//! a panic reaches Swift as a thrown error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_runtime as rt;

use crate::license::LicenseInfo;

/// An Outpost failure, grouped by the first digit of its stable code
/// (`docs/errors.md`); Swift sees an `Error` enum with `code` and `message`.
#[derive(Debug, Clone, PartialEq, thiserror::Error, uniffi::Error)]
pub enum OutpostError {
    /// 1xxx: a setting, an argument or an input image.
    #[error("{code}: {message}")]
    Input {
        /// Stable code.
        code: u32,
        /// What went wrong.
        message: String,
    },
    /// 2xxx: no valid licence, or activation refused.
    #[error("{code}: {message}")]
    License {
        /// Stable code.
        code: u32,
        /// What went wrong.
        message: String,
    },
    /// 3xxx: the package or its model.
    #[error("{code}: {message}")]
    Package {
        /// Stable code.
        code: u32,
        /// What went wrong.
        message: String,
    },
    /// 4xxx: the backend, or a fault inside Outpost.
    #[error("{code}: {message}")]
    Runtime {
        /// Stable code.
        code: u32,
        /// What went wrong.
        message: String,
    },
    /// 5xxx: the network or the licence server.
    #[error("{code}: {message}")]
    Network {
        /// Stable code.
        code: u32,
        /// What went wrong.
        message: String,
    },
}

impl OutpostError {
    /// The stable numeric code.
    pub fn code(&self) -> u32 {
        match self {
            OutpostError::Input { code, .. }
            | OutpostError::License { code, .. }
            | OutpostError::Package { code, .. }
            | OutpostError::Runtime { code, .. }
            | OutpostError::Network { code, .. } => *code,
        }
    }
}

impl From<rt::Error> for OutpostError {
    fn from(e: rt::Error) -> OutpostError {
        let (code, message) = (e.code(), e.to_string());
        match code / 1000 {
            1 => OutpostError::Input { code, message },
            2 => OutpostError::License { code, message },
            3 => OutpostError::Package { code, message },
            5 => OutpostError::Network { code, message },
            _ => OutpostError::Runtime { code, message },
        }
    }
}

type Result<T> = std::result::Result<T, OutpostError>;

/// Settings for opening predictors and for licence calls. Every field left unset
/// comes from its `OUTPOST_*` environment variable, then from the default
/// (`docs/configuration.md`).
#[derive(Debug, Clone, Default, PartialEq, uniffi::Record)]
pub struct Config {
    /// Inference threads (default: the number of cores).
    #[uniffi(default)]
    pub threads: Option<u32>,
    /// `auto`, `cpu`, `gpu` or `npu`.
    #[uniffi(default)]
    pub backend: Option<String>,
    /// `fp32`, `fp16` or `int8`: which of the package's artifacts to run.
    #[uniffi(default)]
    pub precision: Option<String>,
    /// Minimum score of a result, 0..1.
    #[uniffi(default)]
    pub threshold: Option<f32>,
    /// How many classes a classification returns.
    #[uniffi(default)]
    pub top_k: Option<u32>,
    /// Serial number to activate with when no licence is installed.
    #[uniffi(default)]
    pub serial: Option<String>,
    /// Where licences are stored (an app's writable directory on iOS).
    #[uniffi(default)]
    pub license_dir: Option<String>,
    /// The app's bundle id, which product-line serials bind to.
    #[uniffi(default)]
    pub app_id: Option<String>,
    /// Activation server address, instead of the package's own.
    #[uniffi(default)]
    pub license_server: Option<String>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    #[uniffi(default)]
    pub log_level: Option<String>,
    /// Public keys (files) that packages must be signed with.
    #[uniffi(default)]
    pub trusted_keys: Vec<String>,
}

impl Config {
    /// The runtime's config, each text value parsed (and refused, 1001) as the C
    /// and Java `set` calls parse it.
    fn to_runtime(&self) -> Result<rt::Config> {
        let mut config = rt::Config::default();
        let text = [
            ("threads", self.threads.map(|v| v.to_string())),
            ("backend", self.backend.clone()),
            ("precision", self.precision.clone()),
            ("threshold", self.threshold.map(|v| v.to_string())),
            ("top_k", self.top_k.map(|v| v.to_string())),
            ("serial", self.serial.clone()),
            ("license_dir", self.license_dir.clone()),
            ("app_id", self.app_id.clone()),
            ("license_server", self.license_server.clone()),
            ("log_level", self.log_level.clone()),
        ];
        for (key, value) in text {
            if value.is_some() {
                config.set(key, value.as_deref())?;
            }
        }
        // Paths as given: a list joined into one string would split on ':'.
        if !self.trusted_keys.is_empty() {
            config.trusted_keys = Some(self.trusted_keys.iter().map(PathBuf::from).collect());
        }
        Ok(config)
    }
}

/// The layout of raw pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PixelFormat {
    /// Red, green, blue, 3 bytes.
    Rgb8,
    /// Blue, green, red, 3 bytes.
    Bgr8,
    /// Red, green, blue, alpha, 4 bytes (a `CGImage` drawn into an RGBA context).
    Rgba8,
    /// Blue, green, red, alpha, 4 bytes.
    Bgra8,
}

impl From<PixelFormat> for rt::PixelFormat {
    fn from(f: PixelFormat) -> rt::PixelFormat {
        match f {
            PixelFormat::Rgb8 => rt::PixelFormat::Rgb8,
            PixelFormat::Bgr8 => rt::PixelFormat::Bgr8,
            PixelFormat::Rgba8 => rt::PixelFormat::Rgba8,
            PixelFormat::Bgra8 => rt::PixelFormat::Bgra8,
        }
    }
}

/// What kind of results a model gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ModelTask {
    /// `Results.classifications`.
    Classification,
    /// `Results.detections`.
    Detection,
    /// A model without a decoder: only `Results.json` (raw output tensors).
    Raw,
}

impl From<rt::package::manifest::Task> for ModelTask {
    fn from(t: rt::package::manifest::Task) -> ModelTask {
        use rt::package::manifest::Task;
        match t {
            Task::Classification => ModelTask::Classification,
            Task::Detection => ModelTask::Detection,
            Task::Raw => ModelTask::Raw,
        }
    }
}

/// One class of a classification result.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Classification {
    /// Class index in the model output.
    pub index: u32,
    /// Class name.
    pub label: String,
    /// Probability in 0..1.
    pub confidence: f32,
}

/// One detected object; the box is in 0..1 of the original image.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Detection {
    /// Class index.
    pub index: u32,
    /// Class name.
    pub label: String,
    /// Score in 0..1.
    pub confidence: f32,
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

/// The results of one inference.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Results {
    /// Which of the lists below is filled.
    pub task: ModelTask,
    /// Best classes first (classification models).
    pub classifications: Vec<Classification>,
    /// Best boxes first (detection models).
    pub detections: Vec<Detection>,
    /// The same results as JSON, as the CLI, C and Java give them.
    pub json: String,
}

fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl TryFrom<rt::Prediction> for Results {
    type Error = OutpostError;

    fn try_from(p: rt::Prediction) -> Result<Results> {
        let json = serde_json::to_string(&p)
            .map_err(|e| rt::Error::Internal(format!("results to JSON: {e}")))?;
        let (task, classifications, detections) = match p {
            rt::Prediction::Classification(c) => {
                let c = c.into_iter().map(|c| Classification {
                    index: index(c.index),
                    label: c.label,
                    confidence: c.confidence,
                });
                (ModelTask::Classification, c.collect(), Vec::new())
            }
            rt::Prediction::Detection(d) => {
                let d = d.into_iter().map(|d| Detection {
                    index: index(d.index),
                    label: d.label,
                    confidence: d.confidence,
                    x1: d.x1,
                    y1: d.y1,
                    x2: d.x2,
                    y2: d.y2,
                });
                (ModelTask::Detection, Vec::new(), d.collect())
            }
            rt::Prediction::Raw(_) => (ModelTask::Raw, Vec::new(), Vec::new()),
        };
        Ok(Results {
            task,
            classifications,
            detections,
            json,
        })
    }
}

/// What a predictor runs: the model, its task and how it was loaded.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ModelInfo {
    /// Model name from the manifest.
    pub model: String,
    /// Model version.
    pub version: String,
    /// What results it gives.
    pub task: ModelTask,
    /// Class names, by index.
    pub labels: Vec<String>,
    /// Input tensor shape.
    pub input_shape: Vec<u64>,
    /// `fp32`, `fp16` or `int8`.
    pub precision: String,
    /// The artifact loaded from the package.
    pub artifact: String,
    /// The backend running it.
    pub backend: String,
    /// Inference threads.
    pub threads: u32,
    /// Minimum score of a result.
    pub threshold: f32,
    /// Id of the key the package was signed with.
    pub key_id: String,
}

/// A verified, loaded package. One predictor may infer from several threads.
#[derive(uniffi::Object)]
pub struct Predictor {
    inner: rt::Predictor,
}

#[uniffi::export]
impl Predictor {
    /// Opens, verifies and loads a package (`.opk` file or unpacked directory).
    /// A package opens only if a trusted key verifies it and, for a licensed
    /// model, a valid licence is installed or the config's serial activates.
    #[uniffi::constructor]
    pub fn new(package_path: String, config: Config) -> Result<Arc<Predictor>> {
        let inner = rt::Predictor::open(package_path, &config.to_runtime()?)?;
        Ok(Arc::new(Predictor { inner }))
    }

    /// Runs the model on an encoded image (JPEG, PNG or BMP bytes).
    pub fn infer(&self, image: Vec<u8>) -> Result<Results> {
        self.inner
            .infer(rt::ImageInput::Encoded(&image))?
            .try_into()
    }

    /// Runs the model on raw pixels: `height` rows of `width` pixels, rows
    /// `stride` bytes apart. A buffer shorter than that is 1103.
    pub fn infer_pixels(
        &self,
        pixels: Vec<u8>,
        width: u32,
        height: u32,
        stride: u32,
        format: PixelFormat,
    ) -> Result<Results> {
        let raw = rt::RawImage {
            data: &pixels,
            width,
            height,
            stride: stride as usize,
            format: format.into(),
        };
        self.inner.infer(rt::ImageInput::Raw(raw))?.try_into()
    }

    /// What this predictor runs.
    pub fn info(&self) -> ModelInfo {
        let p = &self.inner;
        let m = p.manifest();
        ModelInfo {
            model: m.model.name.clone(),
            version: m.model.version.clone(),
            task: m.task.into(),
            labels: m.labels.clone(),
            input_shape: m.input().shape.iter().map(|&d| d as u64).collect(),
            precision: p.precision().as_str().to_owned(),
            artifact: p.artifact().to_owned(),
            backend: p.backend_name().to_owned(),
            threads: index(p.settings().threads),
            threshold: p.threshold(),
            key_id: p.key_id().to_owned(),
        }
    }
}

/// One file of the licence directory.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum InstalledLicense {
    /// A licence that parses.
    Readable {
        /// File name in the licence directory.
        file: String,
        /// `active`, `expired` or `other device`.
        state: String,
        /// The serial, masked.
        serial: String,
        /// Trial, per-device or product-line.
        kind: String,
        /// Vendor id.
        vendor: String,
        /// Product ids the licence grants.
        models: Vec<String>,
        /// Edition granted.
        edition: String,
        /// App id a product-line licence binds to.
        package_name: Option<String>,
        /// Issue time (UTC, ISO 8601).
        issued_at: String,
        /// Expiry (UTC, ISO 8601).
        expires_at: String,
        /// Whole days until expiry.
        days_left: u64,
    },
    /// A file that is not a valid licence; other licences keep working.
    Corrupted {
        /// File name in the licence directory.
        file: String,
        /// The licensing error code.
        error_code: u32,
        /// Why it does not parse.
        message: String,
    },
}

/// Whether one package may open here.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct PackageVerdict {
    /// The package's model name.
    pub model: String,
    /// 0 when it may open, else the error code opening it gives.
    pub error_code: u32,
    /// The licence it runs under, or why it may not open.
    pub message: String,
}

/// What is installed, and whether a package may open.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct LicenseStatus {
    /// The licence directory.
    pub license_dir: String,
    /// Every file in it, readable or not.
    pub licenses: Vec<InstalledLicense>,
    /// The verdict for the package asked about, if any.
    pub package: Option<PackageVerdict>,
}

impl From<rt::license::LicenseStatus> for LicenseStatus {
    fn from(s: rt::license::LicenseStatus) -> LicenseStatus {
        use rt::license::InstalledLicense as Rt;
        let licenses = s.licenses.into_iter().map(|l| match l {
            Rt::Readable {
                file,
                state,
                serial,
                kind,
                vendor,
                models,
                edition,
                package_name,
                issued_at,
                expires_at,
                days_left,
            } => InstalledLicense::Readable {
                file,
                state,
                serial,
                kind,
                vendor,
                models,
                edition,
                package_name,
                issued_at,
                expires_at,
                days_left,
            },
            Rt::Corrupted {
                file,
                error_code,
                message,
                ..
            } => InstalledLicense::Corrupted {
                file,
                error_code,
                message,
            },
        });
        LicenseStatus {
            license_dir: s.license_dir.to_string_lossy().into_owned(),
            licenses: licenses.collect(),
            package: s.package.map(|p| PackageVerdict {
                model: p.model,
                error_code: p.error_code,
                message: p.message,
            }),
        }
    }
}

/// Activates the config's `serial` online for the package and installs the
/// licence in `license_dir`. Product-line serials bind to the config's `app_id`.
#[uniffi::export]
pub fn license_activate(package_path: String, config: Config) -> Result<LicenseInfo> {
    Ok(crate::license::activate(
        &package_path,
        &config.to_runtime()?,
    )?)
}

/// The offline activation request for the config's `serial` and the package, as
/// JSON to hand to the vendor, who turns it into a licence file.
#[uniffi::export]
pub fn license_request(package_path: String, config: Config) -> Result<String> {
    Ok(crate::license::request_json(
        &package_path,
        &config.to_runtime()?,
    )?)
}

/// Installs a licence file (offline activation). With a package, the file is
/// refused unless it opens that package on this device.
#[uniffi::export]
pub fn license_import(
    license_path: String,
    package_path: Option<String>,
    config: Config,
) -> Result<LicenseInfo> {
    Ok(crate::license::import(
        &license_path,
        package_path.as_deref(),
        &config.to_runtime()?,
    )?)
}

/// Every licence installed, with its state on this device; with a package,
/// whether it may open and why not.
#[uniffi::export]
pub fn license_status(package_path: Option<String>, config: Config) -> Result<LicenseStatus> {
    let settings = config.to_runtime()?.resolve()?;
    Ok(rt::license::status(&settings, package_path.as_deref().map(Path::new))?.into())
}

/// The library version.
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
