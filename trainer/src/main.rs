//! `outpost-trainer`: the workstation CLI.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use outpost_runtime::package::manifest::{
    LicenseKey, LicenseRequirement, Precision, Preprocess, Task,
};
use outpost_runtime::package::signing::{key_id, public_key_file, read_public_key};
use outpost_runtime::package::{Package, TrustedKeys};
use outpost_runtime::{Config, Manifest, Predictor};
use outpost_trainer::dataset::load_classification;
use outpost_trainer::evaluate::{
    evaluate_classification, evaluate_detection, evaluation_config, reference_config,
    render_detection, render_text, CocoIndex, Truth,
};
use outpost_trainer::packaging::checked_manifest;
use outpost_trainer::report::Report;
use outpost_trainer::{build_package, compile, inspect, keys, quantize, PackageRequest};

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

/// The model and what it needs to run: shared by `package`, `quantize` and `compile`.
#[derive(Args)]
struct ModelArgs {
    /// The ONNX model.
    #[arg(long)]
    model: PathBuf,
    /// Class names, one per line, in output order.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// What the model does.
    #[arg(long, value_enum, default_value_t = TaskArg::Classification)]
    task: TaskArg,
    /// JSON file holding the `preprocess` object.
    #[arg(long)]
    preprocess: PathBuf,
    /// JSON file holding the `decoder` object (default: the task's default).
    #[arg(long)]
    decoder: Option<PathBuf>,
}

/// Package identity and signing: shared by `package` and `compile`.
#[derive(Args)]
struct PackageArgs {
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
    /// Precision the device runs unless told otherwise: fp32 or int8 (default fp32).
    #[arg(long = "default-precision")]
    default_precision: Option<Precision>,
    /// Leave out the pre-optimised CPU models (tract NNEF): a smaller package,
    /// but every device then re-optimises the ONNX model when it loads it.
    #[arg(long = "no-precompiled")]
    no_precompiled: bool,
    /// Sell the model per device: the vendor id whose licences open the package
    /// (needs --license-key).
    #[arg(long = "license-vendor", requires = "license_keys")]
    license_vendor: Option<String>,
    /// Product id the licences must name (default: the model name).
    #[arg(long = "license-product", requires = "license_vendor")]
    license_product: Option<String>,
    /// Edition the licences must grant (default: any).
    #[arg(long = "license-edition", requires = "license_vendor")]
    license_edition: Option<String>,
    /// Public key of the licence server (`public.key`, or its key directory);
    /// repeatable, for key rotation.
    #[arg(long = "license-key", requires = "license_vendor")]
    license_keys: Vec<PathBuf>,
    /// The vendor's activation server URL, written into the package so devices
    /// activate there (they may override it with OUTPOST_LICENSE_SERVER).
    #[arg(long = "license-server", requires = "license_vendor")]
    license_server: Option<String>,
}

impl PackageArgs {
    /// The manifest's `license` section, when the package is sold per device. An
    /// empty product id stands for the model name.
    fn license(&self) -> Result<Option<LicenseRequirement>> {
        let Some(vendor) = &self.license_vendor else {
            return Ok(None);
        };
        let mut entries = Vec::new();
        for path in &self.license_keys {
            let key = read_public_key(&public_key_file(path)).map_err(coded)?;
            entries.push(LicenseKey {
                key_id: key_id(&key),
                public_key: hex::encode(key.as_bytes()),
            });
        }
        Ok(Some(LicenseRequirement {
            vendor: vendor.clone(),
            product_id: self.license_product.clone().unwrap_or_default(),
            edition: self.license_edition.clone(),
            keys: entries,
            server: self.license_server.clone(),
        }))
    }
}

/// Calibration settings: shared by `quantize` and `compile`.
#[derive(Args)]
struct CalibrationArgs {
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
}

/// Accuracy measurement while quantising: shared by `quantize` and `compile`.
#[derive(Args)]
struct AccuracyArgs {
    /// Labelled images to measure FP32 against INT8: an ImageFolder tree or a
    /// labels.tsv list (classification); a folder of images with YOLO txt or VOC
    /// xml labels, or --annotations, or no labels to measure agreement with FP32
    /// (detection). Writes report.json and report.html.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Detection: a COCO json annotation file for --dataset.
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// Most points of top-1 (classification) or mAP@0.5 (detection) INT8 may lose;
    /// the most sensitive layers stay in FP32 until it holds.
    #[arg(long = "accuracy-budget", requires = "dataset")]
    accuracy_budget: Option<f64>,
    /// CPU threads (default: OUTPOST_THREADS, else the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed runs per model for the report's latency.
    #[arg(long = "latency-runs", default_value_t = 20)]
    latency_runs: usize,
    /// Folder for report.json and report.html (default: beside the output).
    #[arg(long = "report-dir")]
    report_dir: Option<PathBuf>,
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
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        package: PackageArgs,
        /// INT8 model from `quantize`, packaged beside the FP32 one.
        #[arg(long)]
        int8: Option<PathBuf>,
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
    /// Quantise a model to INT8 (QDQ ONNX), calibrated on a folder of images; with
    /// --dataset, measure what INT8 costs and write the report.
    Quantize {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        calibration: CalibrationArgs,
        #[command(flatten)]
        accuracy: AccuracyArgs,
        /// Output QDQ ONNX model.
        #[arg(long)]
        out: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Quantise, measure FP32 against INT8, and write one signed package with both
    /// models for the cpu target and the report inside (and beside it).
    Compile {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        calibration: CalibrationArgs,
        #[command(flatten)]
        accuracy: AccuracyArgs,
        #[command(flatten)]
        package: PackageArgs,
        /// Print the report as JSON.
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
        /// Packages: the artifact to evaluate, fp32 or int8 (default: the package's).
        #[arg(long)]
        precision: Option<Precision>,
        /// Classification: an ImageFolder tree (one folder per class label) or a
        /// labels.tsv list. Detection: a folder of images with YOLO txt labels
        /// (beside each image or in a sibling labels/ folder), Pascal VOC xml
        /// (beside or in a sibling Annotations/ folder), or --annotations.
        #[arg(long)]
        dataset: PathBuf,
        /// Detection without labels: measure agreement with this model's boxes
        /// (e.g. the FP32 model when evaluating INT8; a package runs at FP32).
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

impl ModelArgs {
    /// The package request for this model (no INT8 artifact yet).
    fn request(&self, package: Option<&PackageArgs>) -> Result<PackageRequest> {
        Ok(PackageRequest {
            model: self.model.clone(),
            labels: self.labels.clone(),
            task: self.task.task(),
            preprocess: read_json(&self.preprocess, "preprocess")?,
            decoder: self
                .decoder
                .as_ref()
                .map(|p| read_json(p, "decoder"))
                .transpose()?,
            name: package.and_then(|p| p.name.clone()),
            version: package.map_or_else(|| "unpackaged".into(), |p| p.model_version.clone()),
            threshold: package.and_then(|p| p.threshold),
            int8_model: None,
            default_precision: package.and_then(|p| p.default_precision),
            precompiled: package.is_some_and(|p| !p.no_precompiled),
            license: package.map(PackageArgs::license).transpose()?.flatten(),
        })
    }
}

impl CalibrationArgs {
    fn options(&self, progress: bool) -> quantize::QuantizeOptions {
        quantize::QuantizeOptions {
            method: match self.method {
                MethodArg::Minmax => quantize::Method::MinMax,
                MethodArg::Percentile => quantize::Method::Percentile {
                    percentile: self.percentile,
                },
                MethodArg::Entropy => quantize::Method::Entropy,
            },
            skip_nodes: self.skip_nodes.clone(),
            skip_ops: self.skip_ops.clone(),
            progress,
        }
    }
}

/// Quantises with accuracy measured on `--dataset`: the compile pipeline, unsigned.
fn compile_with(
    model: &ModelArgs,
    calibration: &CalibrationArgs,
    accuracy: &AccuracyArgs,
    package: Option<&PackageArgs>,
    progress: bool,
) -> Result<compile::Compiled> {
    let dataset = accuracy
        .dataset
        .clone()
        .context("--dataset is required: it measures what INT8 costs")?;
    if let Some(b) = accuracy.accuracy_budget {
        anyhow::ensure!(
            b.is_finite() && b >= 0.0,
            "--accuracy-budget {b}: give the points INT8 may lose, 0 or more (e.g. 1.0)"
        );
    }
    let mut request = model.request(package)?;
    // The INT8 artifact is added when packaging; the default is set then.
    request.default_precision = None;
    let request = compile::CompileRequest {
        package: request,
        calibration: calibration.calibration.clone(),
        options: calibration.options(progress),
        dataset,
        annotations: accuracy.annotations.clone(),
        accuracy_budget: accuracy.accuracy_budget,
        threads: accuracy.threads,
        latency_runs: accuracy.latency_runs,
    };
    compile::compile(&request).with_context(|| format!("cannot compile {}", model.model.display()))
}

/// Writes the report into `--report-dir`, else into `<out stem>.report/` beside `out`.
fn save_report(report: &Report, accuracy: &AccuracyArgs, out: &Path) -> Result<PathBuf> {
    let dir = accuracy.report_dir.clone().unwrap_or_else(|| {
        let stem = out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        out.with_file_name(format!("{stem}.report"))
    });
    compile::write_report(report, &dir)?;
    Ok(dir)
}

/// The lines a person reads after `quantize --dataset` or `compile`.
fn print_report(report: &Report, dir: &Path) {
    println!("{}", report.verdict.summary);
    println!(
        "size {:.1} MB -> {:.1} MB ({:.0}%), latency {:.2} ms -> {:.2} ms ({:.2}x) with {} thread(s)",
        report.size.fp32_bytes as f64 / 1e6,
        report.size.int8_bytes as f64 / 1e6,
        report.size.ratio * 100.0,
        report.latency.fp32_ms,
        report.latency.int8_ms,
        report.latency.int8_speedup,
        report.latency.threads
    );
    if !report.kept_fp32.is_empty() {
        println!("kept in FP32:");
        for k in &report.kept_fp32 {
            println!("  {} ({})", k.node, k.reason);
        }
    }
    println!("report: {}/report.html", dir.display());
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
            package,
            int8,
        } => {
            let mut request = model.request(Some(&package))?;
            request.int8_model = int8;
            let key = keys::load_signing_key(&package.key)?;
            let bytes = build_package(&request, &key)
                .with_context(|| format!("cannot package {}", request.model.display()))?;
            write_atomically(&package.out, &bytes)?;
            println!("wrote {} ({} bytes)", package.out.display(), bytes.len());
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
            calibration,
            accuracy,
            out,
            json,
        } => {
            if accuracy.dataset.is_some() {
                let compiled = compile_with(&model, &calibration, &accuracy, None, !json)?;
                write_atomically(&out, &compiled.int8)?;
                let dir = save_report(&compiled.report, &accuracy, &out)?;
                if json {
                    println!("{}", String::from_utf8_lossy(&compiled.report.to_json()));
                } else {
                    println!("wrote {}", out.display());
                    print_report(&compiled.report, &dir);
                }
                return budget_status(&compiled.report);
            }
            let preprocess: Preprocess = read_json(&model.preprocess, "preprocess")?;
            preprocess.validate().map_err(coded)?;
            let onnx = std::fs::read(&model.model)
                .with_context(|| format!("cannot read {}", model.model.display()))?;
            let images = quantize::calibration_images(&calibration.calibration)?;
            let options = calibration.options(!json);
            let (bytes, summary) = quantize::quantize(&onnx, &preprocess, &images, &options)
                .with_context(|| format!("cannot quantise {}", model.model.display()))?;
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
                println!("add --dataset to measure accuracy and write a report");
            }
        }
        Command::Compile {
            model,
            calibration,
            accuracy,
            package,
            json,
        } => {
            let key = keys::load_signing_key(&package.key)?;
            let compiled = compile_with(&model, &calibration, &accuracy, Some(&package), !json)?;
            let dir = save_report(&compiled.report, &accuracy, &package.out)?;
            if !compiled.report.verdict.good_enough && accuracy.accuracy_budget.is_some() {
                print_report(&compiled.report, &dir);
                return budget_status(&compiled.report);
            }
            let bytes = compile::write_package(
                &compiled,
                package.default_precision,
                !package.no_precompiled,
                &key,
            )?;
            write_atomically(&package.out, &bytes)?;
            if json {
                println!("{}", String::from_utf8_lossy(&compiled.report.to_json()));
            } else {
                println!("wrote {} ({} bytes)", package.out.display(), bytes.len());
                print_report(&compiled.report, &dir);
            }
        }
        Command::Evaluate {
            model,
            preprocess,
            labels,
            decoder,
            task,
            precision,
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
            let base = Config {
                threads,
                precision,
                trusted_keys: (!trusted_keys.is_empty()).then_some(trusted_keys),
                ..Config::default()
            };
            // Read the task first, so the model is loaded once, with the right settings.
            let source = ModelSource::open(&model, &parts, &base)?;
            if precision.is_some() && matches!(source, ModelSource::Onnx(..)) {
                anyhow::bail!(
                    "--precision picks an artifact of a package; an ONNX model runs as it is"
                );
            }
            let task = source.manifest().task;
            let predictor = source.predictor(&evaluation_config(task, &base))?;
            match task {
                Task::Classification => {
                    let samples = load_classification(&dataset, &predictor.manifest().labels)?;
                    let report = evaluate_classification(&predictor, &samples, !json)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{}", render_text(&report));
                    }
                }
                Task::Detection => {
                    let reference_config = Config {
                        precision: Some(Precision::Fp32),
                        ..reference_config(&base)
                    };
                    let reference = reference_model
                        .map(|m| {
                            ModelSource::open(&m, &parts, &reference_config)?
                                .predictor(&reference_config)
                        })
                        .transpose()?;
                    let coco = annotations
                        .map(|a| CocoIndex::load(&a, &predictor.manifest().labels))
                        .transpose()?;
                    let truth = match (&reference, &coco) {
                        (Some(r), _) => Truth::Reference(r),
                        (None, Some(index)) => Truth::Coco(index),
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

/// Fails (exit status 1) when an accuracy budget was given and not met.
fn budget_status(report: &Report) -> Result<()> {
    match &report.mixed_precision {
        Some(m) if !m.met => anyhow::bail!(
            "the accuracy budget of {:.2} points cannot be met: the best INT8 model tried loses {:.2} points; nothing was packaged (see the report)",
            m.budget_points,
            report.verdict.loss_points
        ),
        _ => Ok(()),
    }
}

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
            precompiled: false,
            license: None,
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
