//! `outpost-trainer`: the workstation CLI.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use outpost_runtime::package::manifest::{DecoderSpec, Precision, Preprocess, Task};
use outpost_runtime::package::{Package, TrustedKeys};
use outpost_runtime::{Config, Manifest, Predictor};
use outpost_trainer::dataset::load_classification;
use outpost_trainer::evaluate::{
    evaluate_classification, evaluate_detection, render_detection, render_text, CocoIndex, Truth,
};
use outpost_trainer::packaging::checked_manifest;
use outpost_trainer::{build_package, inspect, keys, quantize, PackageRequest};

#[derive(Parser)]
#[command(
    name = "outpost-trainer",
    version,
    about = "Turn an ONNX model into a signed Outpost package"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    Classification,
    Detection,
    Raw,
}

impl TaskArg {
    fn task(self) -> Task {
        match self {
            TaskArg::Classification => Task::Classification,
            TaskArg::Detection => Task::Detection,
            TaskArg::Raw => Task::Raw,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    Minmax,
    Percentile,
    Entropy,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new Ed25519 signing key pair (private.key, public.key) into a directory.
    Keygen {
        /// Directory for the key pair.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a model and write a signed .opk package.
    Package {
        /// The ONNX model.
        #[arg(long)]
        model: PathBuf,
        /// Class names, one per line, in output order.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// What the model does.
        #[arg(long, value_enum)]
        task: TaskArg,
        /// JSON file holding the `preprocess` object.
        #[arg(long)]
        preprocess: PathBuf,
        /// JSON file holding the `decoder` object (default: the task's default).
        #[arg(long)]
        decoder: Option<PathBuf>,
        /// Key directory (or private.key file) from `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Output package path.
        #[arg(long)]
        out: PathBuf,
        /// Model name (default: the model file name, or its folder's for model.onnx).
        #[arg(long)]
        name: Option<String>,
        /// Model version.
        #[arg(long = "model-version", default_value = "1.0.0")]
        model_version: String,
        /// Recommended score threshold (default: the decoder's).
        #[arg(long)]
        threshold: Option<f64>,
        /// INT8 model from `quantize`, packaged beside the FP32 one.
        #[arg(long)]
        int8: Option<PathBuf>,
        /// Precision the device runs unless told otherwise: fp32 or int8.
        #[arg(long = "default-precision")]
        default_precision: Option<Precision>,
    },
    /// Describe a model: inputs and outputs, operators, parameters, MACs, and the
    /// operators a target cannot run.
    Inspect {
        /// The ONNX model.
        model: PathBuf,
        /// Input shape for models with dynamic dimensions, e.g. 1x3x640x640.
        #[arg(long = "input-shape")]
        input_shape: Option<String>,
        /// Only report this target's unsupported operators (cpu).
        #[arg(long)]
        target: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Quantise a model to INT8 (QDQ ONNX), calibrated on a folder of images.
    Quantize {
        /// The FP32 ONNX model.
        #[arg(long)]
        model: PathBuf,
        /// JSON file holding the `preprocess` object used for calibration.
        #[arg(long)]
        preprocess: PathBuf,
        /// Folder of calibration images (JPEG, PNG, BMP; searched recursively).
        #[arg(long)]
        calibration: PathBuf,
        /// How activation ranges are chosen.
        #[arg(long, value_enum, default_value_t = MethodArg::Percentile)]
        method: MethodArg,
        /// --method percentile: the range runs from the (100 - P)th to the Pth
        /// percentile of the observed values.
        #[arg(long, default_value_t = 99.99)]
        percentile: f64,
        /// Keep this node in FP32 (repeatable).
        #[arg(long = "skip-node")]
        skip_nodes: Vec<String>,
        /// Keep every node of this op type in FP32 (repeatable), e.g. Gemm.
        #[arg(long = "skip-op")]
        skip_ops: Vec<String>,
        /// Output QDQ ONNX model.
        #[arg(long)]
        out: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure accuracy: top-1/top-5 for classification, mAP for detection.
    Evaluate {
        /// An ONNX model, or a signed .opk package (then --preprocess and --labels come from it).
        #[arg(long)]
        model: PathBuf,
        /// JSON file holding the `preprocess` object (ONNX models only).
        #[arg(long)]
        preprocess: Option<PathBuf>,
        /// Class names, one per line (ONNX models only).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// JSON file holding the `decoder` object (ONNX models only).
        #[arg(long)]
        decoder: Option<PathBuf>,
        /// Task of an ONNX model (packages carry theirs).
        #[arg(long, value_enum)]
        task: Option<TaskArg>,
        /// Classification: an ImageFolder tree (one folder per class label) or a
        /// labels.tsv list. Detection: a folder of images with YOLO txt labels
        /// (beside each image or in a sibling labels/ folder), Pascal VOC xml
        /// (beside or in a sibling Annotations/ folder), or --annotations.
        #[arg(long)]
        dataset: PathBuf,
        /// Detection without labels: measure agreement with this model's boxes
        /// (e.g. the FP32 model when evaluating INT8).
        #[arg(long = "reference-model")]
        reference_model: Option<PathBuf>,
        /// Detection: a COCO json annotation file (default: YOLO txt or VOC xml
        /// label files found beside the images).
        #[arg(long)]
        annotations: Option<PathBuf>,
        /// Public key trusted to sign the package (.opk models).
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<PathBuf>,
        /// CPU threads (default: OUTPOST_THREADS, else the number of cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid {what} object", path.display()))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG_LEVEL")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Keygen { out } => {
            let id = keys::keygen(&out)?;
            println!(
                "wrote {}/private.key and public.key (key id {id})",
                out.display()
            );
            println!("keep private.key secret; ship public.key to devices");
        }
        Command::Package {
            model,
            labels,
            task,
            preprocess,
            decoder,
            key,
            out,
            name,
            model_version,
            threshold,
            int8,
            default_precision,
        } => {
            let task = task.task();
            let preprocess: Preprocess = read_json(&preprocess, "preprocess")?;
            let decoder: Option<DecoderSpec> =
                decoder.map(|p| read_json(&p, "decoder")).transpose()?;
            let key = keys::load_signing_key(&key)?;
            let request = PackageRequest {
                model,
                labels,
                task,
                preprocess,
                decoder,
                name,
                version: model_version,
                threshold,
                int8_model: int8,
                default_precision,
            };
            let bytes = build_package(&request, &key)
                .with_context(|| format!("cannot package {}", request.model.display()))?;
            write_atomically(&out, &bytes)?;
            println!("wrote {} ({} bytes)", out.display(), bytes.len());
        }
        Command::Inspect {
            model,
            input_shape,
            target,
            json,
        } => {
            let onnx = std::fs::read(&model)
                .with_context(|| format!("cannot read {}", model.display()))?;
            let shape = input_shape
                .as_deref()
                .map(inspect::parse_shape)
                .transpose()?;
            let mut report = inspect::inspect(&onnx, shape.as_deref())?;
            if let Some(t) = &target {
                if !inspect::TARGETS.contains(&t.as_str()) {
                    anyhow::bail!(
                        "unknown target {t}; known targets: {}",
                        inspect::TARGETS.join(", ")
                    );
                }
                report.unsupported.retain(|k, _| k == t);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", inspect::render_text(&report));
            }
        }
        Command::Quantize {
            model,
            preprocess,
            calibration,
            method,
            percentile,
            skip_nodes,
            skip_ops,
            out,
            json,
        } => {
            let preprocess: Preprocess = read_json(&preprocess, "preprocess")?;
            preprocess.validate().map_err(coded)?;
            let onnx = std::fs::read(&model)
                .with_context(|| format!("cannot read {}", model.display()))?;
            let images = quantize::calibration_images(&calibration)?;
            let options = quantize::QuantizeOptions {
                method: match method {
                    MethodArg::Minmax => quantize::Method::MinMax,
                    MethodArg::Percentile => quantize::Method::Percentile { percentile },
                    MethodArg::Entropy => quantize::Method::Entropy,
                },
                skip_nodes,
                skip_ops,
                progress: !json,
            };
            let (bytes, summary) = quantize::quantize(&onnx, &preprocess, &images, &options)
                .with_context(|| format!("cannot quantise {}", model.display()))?;
            write_atomically(&out, &bytes)?;
            if json {
                let mut v = serde_json::to_value(&summary)?;
                v["fp32_bytes"] = onnx.len().into();
                v["int8_bytes"] = bytes.len().into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "wrote {}: {} nodes in INT8, {} kept in FP32, {} calibration images ({} skipped)",
                    out.display(),
                    summary.quantized_nodes.len(),
                    summary.kept_fp32.len(),
                    summary.calibration_images,
                    summary.skipped_images.len()
                );
                println!(
                    "size {:.1} MB -> {:.1} MB ({:.0}%)",
                    onnx.len() as f64 / 1e6,
                    bytes.len() as f64 / 1e6,
                    bytes.len() as f64 / onnx.len() as f64 * 100.0
                );
                println!("layers furthest from FP32 on the calibration set (--skip-node keeps one in FP32):");
                for l in summary.layers.iter().take(5) {
                    println!(
                        "  {:<40} {:<6} cosine {:.5}  relative error {:.4}",
                        l.node, l.op, l.cosine, l.relative_error
                    );
                }
            }
        }
        Command::Evaluate {
            model,
            preprocess,
            labels,
            decoder,
            task,
            dataset,
            reference_model,
            annotations,
            trusted_keys,
            threads,
            json,
        } => {
            let parts = ModelParts {
                preprocess,
                labels,
                decoder,
                task: task.map(TaskArg::task).unwrap_or(Task::Classification),
            };
            let trusted = (!trusted_keys.is_empty()).then_some(trusted_keys);
            // Top-5 needs five classes back; mAP needs every box down to a low score.
            let config = |threshold: f32| Config {
                threads,
                threshold: Some(threshold),
                top_k: Some(5),
                trusted_keys: trusted.clone(),
                ..Config::default()
            };
            // Read the task first, so the model is loaded once, with the right settings.
            let source = ModelSource::open(&model, &parts, &config(0.0))?;
            match source.manifest().task {
                Task::Classification => {
                    let predictor = source.predictor(&config(0.0))?;
                    let samples = load_classification(&dataset, &predictor.manifest().labels)?;
                    let report = evaluate_classification(&predictor, &samples, !json)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{}", render_text(&report));
                    }
                }
                Task::Detection => {
                    let predictor = source.predictor(&Config {
                        top_k: Some(MAP_MAX_DETECTIONS),
                        ..config(0.001)
                    })?;
                    let reference = reference_model
                        .map(|m| {
                            let config = Config {
                                threshold: None,
                                top_k: Some(MAP_MAX_DETECTIONS),
                                ..config(0.0)
                            };
                            ModelSource::open(&m, &parts, &config)?.predictor(&config)
                        })
                        .transpose()?;
                    let truth = match (&reference, &annotations) {
                        (Some(r), _) => Truth::Reference(r),
                        (None, Some(a)) => {
                            Truth::Coco(CocoIndex::load(a, &predictor.manifest().labels)?)
                        }
                        (None, None) => Truth::LabelFiles,
                    };
                    let images = quantize::calibration_images(&dataset)?;
                    let report = evaluate_detection(&predictor, &images, truth, !json)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{}", render_detection(&report));
                    }
                }
                Task::Raw => anyhow::bail!("evaluate needs a classification or detection model"),
            }
        }
    }
    Ok(())
}

/// Most boxes per image counted by mAP (as the YOLOv8 decoder's default).
const MAP_MAX_DETECTIONS: usize = 300;

/// What an unpackaged ONNX model needs beside itself.
struct ModelParts {
    preprocess: Option<PathBuf>,
    labels: Option<PathBuf>,
    decoder: Option<PathBuf>,
    task: Task,
}

/// A verified package (`.opk` or directory) or a checked bare ONNX model, read once.
enum ModelSource {
    Package(Box<Package>),
    Onnx(Box<Manifest>, Vec<u8>),
}

impl ModelSource {
    fn open(model: &Path, parts: &ModelParts, config: &Config) -> Result<ModelSource> {
        if model.is_dir() || model.extension().is_some_and(|e| e == "opk") {
            let settings = config.resolve().map_err(coded)?;
            let trusted = TrustedKeys::load(&settings.trusted_keys).map_err(coded)?;
            return Ok(ModelSource::Package(Box::new(
                Package::open(model, &trusted).map_err(coded)?,
            )));
        }
        let preprocess = parts
            .preprocess
            .as_ref()
            .context("--preprocess is required for an ONNX model")?;
        let request = PackageRequest {
            model: model.to_path_buf(),
            labels: Some(
                parts
                    .labels
                    .clone()
                    .context("--labels is required for an ONNX model")?,
            ),
            task: parts.task,
            preprocess: read_json(preprocess, "preprocess")?,
            decoder: parts
                .decoder
                .as_ref()
                .map(|p| read_json(p, "decoder"))
                .transpose()?,
            name: None,
            version: "unpackaged".into(),
            threshold: None,
            int8_model: None,
            default_precision: None,
        };
        let (manifest, onnx) = checked_manifest(&request)
            .with_context(|| format!("cannot load {}", model.display()))?;
        Ok(ModelSource::Onnx(Box::new(manifest), onnx))
    }

    fn manifest(&self) -> &Manifest {
        match self {
            ModelSource::Package(p) => p.manifest(),
            ModelSource::Onnx(m, _) => m,
        }
    }

    fn predictor(&self, config: &Config) -> Result<Predictor> {
        let settings = config.resolve().map_err(coded)?;
        match self {
            ModelSource::Package(p) => Predictor::from_package(p, settings),
            ModelSource::Onnx(m, onnx) => Predictor::from_parts((**m).clone(), onnx, settings),
        }
        .map_err(coded)
    }
}

/// Keeps a runtime error's stable code in the message.
fn coded(e: outpost_runtime::Error) -> anyhow::Error {
    anyhow::anyhow!("error {}: {e}", e.code())
}

/// Writes to a temporary file beside `path`, then renames, so a reader never sees half a package.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
