//! The versioned `manifest.json` schema of a package (format version 1).
//!
//! The signature covers the exact bytes of `manifest.json`; the writer emits them in
//! canonical form (see [`Manifest::to_canonical_json`]). Unknown keys are ignored so
//! that optional keys can be added within a format version; every known key is
//! type-checked and [`Manifest::validate`] rejects values that cannot work.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The package format version this runtime reads and the trainer writes.
pub const FORMAT_VERSION: u32 = 1;

/// Largest model input side accepted in a manifest.
const MAX_INPUT_SIDE: u32 = 8192;

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Package format version; must equal [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Model name and version.
    pub model: ModelInfo,
    /// What the model does; selects the result type.
    pub task: Task,
    /// The model input with its preprocessing. Exactly one input in format version 1.
    pub inputs: Vec<InputSpec>,
    /// How raw outputs become results.
    pub decoder: DecoderSpec,
    /// Recommended score threshold; when absent the decoder's default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Class names, in output index order.
    pub labels: Vec<String>,
    /// The files the package carries, each covered by its SHA-256.
    pub artifacts: Vec<Artifact>,
    /// Licence requirements, when the package is sold per device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<LicenseRequirement>,
    /// Precision the runtime runs unless the caller asks for another; FP32 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_precision: Option<Precision>,
}

/// Model identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Model name, e.g. `efficientnet_lite0`.
    pub name: String,
    /// Model version chosen by its publisher, e.g. `1.0.0`.
    pub version: String,
}

/// The task of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One label per image with a confidence.
    Classification,
    /// Boxes with labels and confidences.
    Detection,
    /// No decoder yet: raw output tensors (e.g. OCR stages, custom heads).
    Raw,
}

impl Task {
    /// The lowercase name used in the manifest and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Detection => "detection",
            Task::Raw => "raw",
        }
    }
}

/// One model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Input name in the model graph.
    pub name: String,
    /// Full input shape, e.g. `[1, 3, 224, 224]` for NCHW.
    pub shape: Vec<usize>,
    /// How an image becomes this tensor.
    pub preprocess: Preprocess,
}

/// The `preprocess` object of DESIGN.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Channel order the model expects.
    #[serde(default)]
    pub color: ColorOrder,
    /// Tensor layout the model expects.
    #[serde(default)]
    pub layout: Layout,
    /// How the image is brought to the input size.
    pub resize: Resize,
    /// Per-channel mean, in the model's channel order, on 0..255 values.
    pub mean: [f64; 3],
    /// Per-channel standard deviation, in the model's channel order.
    pub std: [f64; 3],
}

/// Channel order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColorOrder {
    /// Red, green, blue.
    #[default]
    RGB,
    /// Blue, green, red.
    BGR,
}

/// Tensor layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Batch, channels, height, width.
    #[default]
    NCHW,
    /// Batch, height, width, channels.
    NHWC,
}

/// Resize mode; `mode` selects the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Resize {
    /// Scale each axis independently to the input size.
    Stretch {
        /// Target width.
        width: u32,
        /// Target height.
        height: u32,
    },
    /// Keep the aspect ratio, centre the image, pad the rest with `pad_value`.
    Letterbox {
        /// Target width.
        width: u32,
        /// Target height.
        height: u32,
        /// Grey level (0..255) of the padding.
        #[serde(default = "default_pad_value")]
        pad_value: u8,
    },
    /// Scale so the short side is `short_side`, then crop the centre.
    ShortSideCenterCrop {
        /// Length of the short side after resizing.
        short_side: u32,
        /// Crop width.
        width: u32,
        /// Crop height.
        height: u32,
    },
}

fn default_pad_value() -> u8 {
    114
}

impl Resize {
    /// Output width and height of the resize step.
    pub fn output_size(&self) -> (u32, u32) {
        match *self {
            Resize::Stretch { width, height }
            | Resize::Letterbox { width, height, .. }
            | Resize::ShortSideCenterCrop { width, height, .. } => (width, height),
        }
    }
}

impl Preprocess {
    /// The tensor shape this preprocessing produces for one image.
    pub fn tensor_shape(&self) -> [usize; 4] {
        let (w, h) = self.resize.output_size();
        let (w, h) = (w as usize, h as usize);
        match self.layout {
            Layout::NCHW => [1, 3, h, w],
            Layout::NHWC => [1, h, w, 3],
        }
    }

    /// Checks every value can work; the message names the first that cannot.
    pub fn validate(&self) -> Result<()> {
        let (w, h) = self.resize.output_size();
        if w == 0 || h == 0 || w > MAX_INPUT_SIDE || h > MAX_INPUT_SIDE {
            return Err(invalid(format!(
                "preprocess.resize size {w}x{h} must be between 1 and {MAX_INPUT_SIDE}"
            )));
        }
        if let Resize::ShortSideCenterCrop { short_side, .. } = self.resize {
            if short_side < w.max(h) || short_side > MAX_INPUT_SIDE {
                return Err(invalid(format!(
                    "preprocess.resize.short_side {short_side} must be at least the crop size {}",
                    w.max(h)
                )));
            }
        }
        for (i, (m, s)) in self.mean.iter().zip(&self.std).enumerate() {
            if !m.is_finite() || !s.is_finite() || *s == 0.0 {
                return Err(invalid(format!(
                    "preprocess mean/std channel {i} must be finite with std != 0"
                )));
            }
        }
        Ok(())
    }
}

/// The `decoder` object of DESIGN.md; `kind` selects the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecoderSpec {
    /// Softmax (or already-probabilities), then top-k above a threshold.
    Classification {
        /// Apply softmax to the output; false when the model outputs probabilities.
        #[serde(default = "default_true")]
        softmax: bool,
        /// How many classes to return at most.
        #[serde(default = "default_top_k")]
        top_k: usize,
    },
    /// Ultralytics YOLOv8 head: `[1, 4 + classes, candidates]`, no NMS inside.
    Yolov8(DetectionParams),
    /// YOLOv5 head: `[1, candidates, 5 + classes]`, objectness × class score.
    Yolov5(DetectionParams),
    /// Return the raw output tensors.
    Raw,
}

/// Score filtering and suppression shared by every detection head; in JSON these
/// keys sit beside `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionParams {
    /// Keep boxes whose score exceeds this.
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f64,
    /// IoU above which the lower-scored box is suppressed.
    #[serde(default = "default_nms_iou")]
    pub nms_iou: f64,
    /// Suppress only boxes of the same class.
    #[serde(default = "default_true")]
    pub class_aware: bool,
    /// Most boxes returned after NMS.
    #[serde(default = "default_max_detections")]
    pub max_detections: usize,
}

impl Default for DetectionParams {
    fn default() -> Self {
        DetectionParams {
            score_threshold: default_score_threshold(),
            nms_iou: default_nms_iou(),
            class_aware: true,
            max_detections: default_max_detections(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_top_k() -> usize {
    5
}
fn default_score_threshold() -> f64 {
    0.25
}
fn default_nms_iou() -> f64 {
    0.45
}
fn default_max_detections() -> usize {
    300
}

impl DecoderSpec {
    /// The sensible default decoder for a task.
    pub fn default_for(task: Task) -> DecoderSpec {
        match task {
            Task::Classification => DecoderSpec::Classification {
                softmax: true,
                top_k: default_top_k(),
            },
            Task::Detection => DecoderSpec::Yolov8(DetectionParams::default()),
            Task::Raw => DecoderSpec::Raw,
        }
    }

    /// The task this decoder serves.
    pub fn task(&self) -> Task {
        match self {
            DecoderSpec::Classification { .. } => Task::Classification,
            DecoderSpec::Yolov8(_) | DecoderSpec::Yolov5(_) => Task::Detection,
            DecoderSpec::Raw => Task::Raw,
        }
    }

    /// The detection parameters, for a detection head.
    pub fn detection(&self) -> Option<&DetectionParams> {
        match self {
            DecoderSpec::Yolov8(p) | DecoderSpec::Yolov5(p) => Some(p),
            _ => None,
        }
    }

    /// The score threshold used when neither the caller nor the manifest sets one.
    pub fn default_threshold(&self) -> f64 {
        self.detection().map_or(0.0, |p| p.score_threshold)
    }

    fn validate(&self) -> Result<()> {
        if let DecoderSpec::Classification { top_k: 0, .. } = self {
            return Err(invalid("decoder.top_k must be at least 1".into()));
        }
        match self.detection() {
            Some(p)
                if !(0.0..=1.0).contains(&p.score_threshold)
                    || !(0.0..=1.0).contains(&p.nms_iou) =>
            {
                Err(invalid(
                    "decoder.score_threshold and nms_iou must be within 0..1".into(),
                ))
            }
            Some(p) if p.max_detections == 0 => {
                Err(invalid("decoder.max_detections must be at least 1".into()))
            }
            _ => Ok(()),
        }
    }
}

/// Numeric precision of an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float.
    Fp32,
    /// 16-bit float.
    Fp16,
    /// 8-bit integer (quantised).
    Int8,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            "int8" => Ok(Precision::Int8),
            _ => Err("expected fp32, fp16 or int8".into()),
        }
    }
}

impl Precision {
    /// Lowercase name as in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }
}

/// File format of an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactFormat {
    /// ONNX protobuf.
    Onnx,
    /// tract NNEF archive.
    Nnef,
    /// Rockchip RKNN.
    Rknn,
    /// Any other file (report, labels, ...).
    Other,
}

/// One file inside the package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// File name inside the package (no directories).
    pub file: String,
    /// File format.
    pub format: ArtifactFormat,
    /// Backend target, e.g. `cpu`, `gpu`, `rk3588`.
    pub target: String,
    /// Numeric precision.
    pub precision: Precision,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

/// What a device needs before it may run the package: a licence from `vendor` that
/// covers `product_id`, signed by one of `keys` (see `docs/licensing.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseRequirement {
    /// Vendor id (the publisher); also salts the device fingerprint.
    pub vendor: String,
    /// Product id the licence must name.
    pub product_id: String,
    /// Edition the licence must grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<String>,
    /// The licence server's public keys that may sign licences for this package.
    pub keys: Vec<LicenseKey>,
    /// The vendor's activation server (`https://...`), used when the device is given a
    /// serial it has no licence for; `OUTPOST_LICENSE_SERVER` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// One licence-signing public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseKey {
    /// Key id: hex of the first 8 bytes of the SHA-256 of the public key.
    pub key_id: String,
    /// Ed25519 public key, 64 hex characters.
    pub public_key: String,
}

impl LicenseRequirement {
    /// The requirement in the licensing crate's terms; checks ids and keys.
    pub fn to_requirement(&self) -> Result<outpost_licensing::Requirement> {
        use outpost_licensing::license_file::valid_id;
        if !valid_id(&self.vendor) || !valid_id(&self.product_id) {
            return Err(invalid(
                "license.vendor and license.product_id must be 1-64 characters of a-z, 0-9, '.', '_' or '-'"
                    .into(),
            ));
        }
        if self
            .edition
            .as_deref()
            .is_some_and(|e| e.is_empty() || e.len() > 64)
        {
            return Err(invalid("license.edition must be 1-64 characters".into()));
        }
        if self.keys.is_empty() {
            return Err(invalid("license.keys is empty".into()));
        }
        if let Some(url) = &self.server {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
                return Err(invalid(
                    "license.server must be an http:// or https:// URL".into(),
                ));
            }
        }
        let keys = outpost_licensing::LicenseKeys::from_hex(
            self.keys
                .iter()
                .map(|k| (k.key_id.as_str(), k.public_key.as_str())),
        )
        .map_err(|e| invalid(format!("license.keys: {e}")))?;
        Ok(outpost_licensing::Requirement {
            vendor: self.vendor.clone(),
            product_id: self.product_id.clone(),
            edition: self.edition.clone(),
            keys,
        })
    }
}

/// File names reserved for the package structure.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File holding the Ed25519 signature over `manifest.json`.
pub const SIGNATURE_FILE: &str = "signature";

fn invalid(msg: String) -> Error {
    Error::ManifestInvalid(msg)
}

/// Only the version, read before anything else so an unknown version gets its own error.
#[derive(Deserialize)]
struct VersionProbe {
    format_version: serde_json::Value,
}

impl Manifest {
    /// Parses manifest bytes: version first, then the schema, then [`Manifest::validate`].
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let probe: VersionProbe = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("not a manifest object with format_version: {e}")))?;
        let found = probe
            .format_version
            .as_u64()
            .ok_or_else(|| invalid("format_version must be a positive integer".into()))?;
        if found != u64::from(FORMAT_VERSION) {
            return Err(Error::UnsupportedFormatVersion {
                found,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Canonical bytes: keys sorted, two-space indent, trailing newline.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        // Going through `Value` sorts object keys (serde_json's map is a BTreeMap).
        let value = serde_json::to_value(self).expect("manifest always serialises");
        let mut out = serde_json::to_vec_pretty(&value).expect("value always serialises");
        out.push(b'\n');
        out
    }

    /// Checks the values the schema alone cannot.
    pub fn validate(&self) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            return Err(Error::UnsupportedFormatVersion {
                found: self.format_version.into(),
                supported: FORMAT_VERSION,
            });
        }
        if self.model.name.trim().is_empty() {
            return Err(invalid("model.name is empty".into()));
        }
        if self.inputs.len() != 1 {
            return Err(invalid(format!(
                "exactly one input is supported, found {}",
                self.inputs.len()
            )));
        }
        let input = &self.inputs[0];
        input.preprocess.validate()?;
        if input.shape != input.preprocess.tensor_shape() {
            return Err(invalid(format!(
                "input shape {:?} disagrees with preprocess, which gives {:?}",
                input.shape,
                input.preprocess.tensor_shape()
            )));
        }
        if self.decoder.task() != self.task {
            return Err(invalid(format!(
                "decoder kind serves task {}, manifest says {}",
                self.decoder.task().as_str(),
                self.task.as_str()
            )));
        }
        self.decoder.validate()?;
        if let Some(t) = self.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(invalid(format!("threshold {t} must be within 0..1")));
            }
        }
        if let Some(license) = &self.license {
            license.to_requirement()?;
        }
        if self.task != Task::Raw && self.labels.is_empty() {
            return Err(invalid("labels are empty".into()));
        }
        if !self
            .artifacts
            .iter()
            .any(|a| a.format != ArtifactFormat::Other)
        {
            return Err(invalid("no model artifact".into()));
        }
        if let Some(p) = self.default_precision {
            if !self
                .artifacts
                .iter()
                .any(|a| a.precision == p && a.format != ArtifactFormat::Other)
            {
                return Err(invalid(format!(
                    "default_precision {} has no model artifact",
                    p.as_str()
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.artifacts {
            if !is_safe_file_name(&a.file) {
                return Err(invalid(format!(
                    "artifact file name {:?} is not allowed",
                    a.file
                )));
            }
            if !seen.insert(a.file.as_str()) {
                return Err(invalid(format!("artifact {} listed twice", a.file)));
            }
            if a.sha256.len() != 64
                || !a
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(invalid(format!(
                    "artifact {} has a malformed sha256",
                    a.file
                )));
            }
        }
        Ok(())
    }

    /// The model input (format version 1 has exactly one).
    pub fn input(&self) -> &InputSpec {
        &self.inputs[0]
    }
}

/// A plain file name: no directories, no reserved names, printable ASCII.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != MANIFEST_FILE
        && name != SIGNATURE_FILE
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            model: ModelInfo {
                name: "m".into(),
                version: "1".into(),
            },
            task: Task::Classification,
            inputs: vec![InputSpec {
                name: "image".into(),
                shape: vec![1, 3, 224, 224],
                preprocess: Preprocess {
                    color: ColorOrder::RGB,
                    layout: Layout::NCHW,
                    resize: Resize::ShortSideCenterCrop {
                        short_side: 256,
                        width: 224,
                        height: 224,
                    },
                    mean: [127.0; 3],
                    std: [128.0; 3],
                },
            }],
            decoder: DecoderSpec::default_for(Task::Classification),
            threshold: None,
            labels: vec!["a".into(), "b".into()],
            artifacts: vec![Artifact {
                file: "model.onnx".into(),
                format: ArtifactFormat::Onnx,
                target: "cpu".into(),
                precision: Precision::Fp32,
                size: 3,
                sha256: "0".repeat(64),
            }],
            license: None,
            default_precision: None,
        }
    }

    fn json(m: &Manifest) -> serde_json::Value {
        serde_json::to_value(m).unwrap()
    }

    fn reparse(v: serde_json::Value) -> Result<Manifest> {
        Manifest::parse(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn canonical_json_round_trips_and_is_stable() {
        let m = sample();
        let bytes = m.to_canonical_json();
        let text = String::from_utf8(bytes.clone()).unwrap();
        // Decimal values stay as written (no f32 widening noise).
        let d = serde_json::to_string(&DecoderSpec::default_for(Task::Detection)).unwrap();
        assert!(d.contains("\"nms_iou\":0.45"), "{d}");
        assert!(text.contains("\"format_version\": 1"), "{text}");
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        assert_eq!(bytes, Manifest::parse(&bytes).unwrap().to_canonical_json());
        assert!(bytes.ends_with(b"}\n"));
    }

    #[test]
    fn design_md_preprocess_and_decoder_objects_parse() {
        let p: Preprocess = serde_json::from_str(
            r#"{"color":"RGB","layout":"NCHW","resize":{"mode":"letterbox","width":640,"height":640,"pad_value":114},"mean":[0,0,0],"std":[255,255,255]}"#,
        )
        .unwrap();
        assert_eq!(p.tensor_shape(), [1, 3, 640, 640]);
        let d: DecoderSpec = serde_json::from_str(
            r#"{"kind": "yolov8", "score_threshold": 0.25, "nms_iou": 0.45, "class_aware": true}"#,
        )
        .unwrap();
        assert_eq!(d, DecoderSpec::default_for(Task::Detection));
        let d: DecoderSpec =
            serde_json::from_str(r#"{"kind": "classification", "softmax": true, "top_k": 5}"#)
                .unwrap();
        assert_eq!(d, DecoderSpec::default_for(Task::Classification));
    }

    #[test]
    fn unknown_version_has_its_own_error() {
        let mut v = json(&sample());
        v["format_version"] = 2.into();
        assert_eq!(reparse(v).unwrap_err().code(), 3007);
    }

    #[test]
    fn every_malformed_variant_is_rejected() {
        type Mutation = fn(&mut serde_json::Value);
        let cases: &[(&str, Mutation)] = &[
            ("not an object", |v| *v = serde_json::json!([1, 2])),
            ("version missing", |v| {
                v.as_object_mut().unwrap().remove("format_version");
            }),
            ("version a string", |v| v["format_version"] = "1".into()),
            ("task unknown", |v| v["task"] = "teleport".into()),
            ("model missing", |v| {
                v.as_object_mut().unwrap().remove("model");
            }),
            ("empty name", |v| v["model"]["name"] = " ".into()),
            ("no inputs", |v| v["inputs"] = serde_json::json!([])),
            ("two inputs", |v| {
                let i = v["inputs"][0].clone();
                v["inputs"] = serde_json::json!([i.clone(), i]);
            }),
            ("shape disagrees", |v| {
                v["inputs"][0]["shape"] = serde_json::json!([1, 3, 100, 100])
            }),
            ("resize mode unknown", |v| {
                v["inputs"][0]["preprocess"]["resize"]["mode"] = "zoom".into()
            }),
            ("zero size", |v| {
                v["inputs"][0]["preprocess"]["resize"]["width"] = 0.into()
            }),
            ("short side smaller than crop", |v| {
                v["inputs"][0]["preprocess"]["resize"]["short_side"] = 100.into()
            }),
            ("std zero", |v| {
                v["inputs"][0]["preprocess"]["std"] = serde_json::json!([1, 0, 1])
            }),
            ("mean two values", |v| {
                v["inputs"][0]["preprocess"]["mean"] = serde_json::json!([1, 1])
            }),
            ("colour unknown", |v| {
                v["inputs"][0]["preprocess"]["color"] = "CMYK".into()
            }),
            ("layout unknown", |v| {
                v["inputs"][0]["preprocess"]["layout"] = "CHW".into()
            }),
            ("decoder for another task", |v| {
                v["decoder"] = serde_json::json!({"kind": "yolov8"})
            }),
            ("decoder unknown", |v| {
                v["decoder"] = serde_json::json!({"kind": "magic"})
            }),
            ("top_k zero", |v| v["decoder"]["top_k"] = 0.into()),
            ("threshold above one", |v| v["threshold"] = 1.5.into()),
            ("no labels", |v| v["labels"] = serde_json::json!([])),
            ("no artifacts", |v| v["artifacts"] = serde_json::json!([])),
            ("path in artifact name", |v| {
                v["artifacts"][0]["file"] = "../etc/passwd".into()
            }),
            ("reserved artifact name", |v| {
                v["artifacts"][0]["file"] = "signature".into()
            }),
            ("bad sha", |v| v["artifacts"][0]["sha256"] = "xyz".into()),
            ("uppercase sha", |v| {
                v["artifacts"][0]["sha256"] = "A".repeat(64).into()
            }),
            ("negative size", |v| v["artifacts"][0]["size"] = (-1).into()),
            ("precision unknown", |v| {
                v["artifacts"][0]["precision"] = "int4".into()
            }),
            ("default precision without artifact", |v| {
                v["default_precision"] = "int8".into()
            }),
            ("artifact twice", |v| {
                let a = v["artifacts"][0].clone();
                v["artifacts"] = serde_json::json!([a.clone(), a]);
            }),
        ];
        for (name, mutate) in cases {
            let mut v = json(&sample());
            mutate(&mut v);
            let err = reparse(v).expect_err(name);
            assert!(
                matches!(err.code(), 3007 | 3008),
                "{name}: unexpected {err} ({})",
                err.code()
            );
        }
    }
}
