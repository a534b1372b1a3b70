//! `compile`: from an FP32 ONNX model to one signed package holding the FP32 and
//! INT8 artifacts for the `cpu` target and the report that says what INT8 costs.
//!
//! The steps: check the model as `package` does, calibrate, quantise, measure
//! both models on the user's data, keep layers in FP32 while an accuracy budget
//! is exceeded, time both models, write the report.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use outpost_runtime::package::manifest::{ArtifactFormat, Precision};
use outpost_runtime::package::PackageWriter;
use outpost_runtime::{Config, Manifest};

use crate::evaluate::{evaluate_model, load_eval_data, DetectionTruth, EvalData};
use crate::packaging::{
    add_artifact, add_precompiled, checked_manifest, INT8_MODEL_FILE, MODEL_FILE,
};
use crate::quantize::{budget, calibration_images, Calibration, QuantizeOptions};
use crate::report::{self, Report};
use crate::{PackageRequest, Result};

/// File names of the report inside a package.
pub const REPORT_JSON: &str = "report.json";
/// See [`REPORT_JSON`].
pub const REPORT_HTML: &str = "report.html";

/// Everything `compile` takes.
pub struct CompileRequest {
    /// The model, its labels, preprocessing and decoder, as for `package`.
    pub package: PackageRequest,
    /// Folder of calibration images.
    pub calibration: PathBuf,
    /// Method and skip lists.
    pub options: QuantizeOptions,
    /// The evaluation data: see [`crate::evaluate::load_eval_data`].
    pub dataset: PathBuf,
    /// Detection: a COCO json file with the dataset's boxes.
    pub annotations: Option<PathBuf>,
    /// Most points of the metric INT8 may lose; layers stay FP32 until it holds.
    pub accuracy_budget: Option<f64>,
    /// CPU threads for evaluation and timing (default: OUTPOST_THREADS, else all cores).
    pub threads: Option<usize>,
    /// Timed runs per model.
    pub latency_runs: usize,
}

/// The result of `compile`.
pub struct Compiled {
    /// The FP32 model's manifest (artifacts are added when packaging).
    pub manifest: Manifest,
    /// The FP32 model, as given.
    pub fp32: Vec<u8>,
    /// The INT8 (QDQ) model.
    pub int8: Vec<u8>,
    /// The report.
    pub report: Report,
}

/// Runs every step but signing.
pub fn compile(req: &CompileRequest) -> Result<Compiled> {
    let progress = req.options.progress;
    let (manifest, fp32) = checked_manifest(&req.package)?;
    let data = load_eval_data(
        manifest.task,
        &req.dataset,
        req.annotations.as_deref(),
        &manifest.labels,
    )?;
    let preprocess = &req.package.preprocess;
    let images = calibration_images(&req.calibration)?;
    let calibration = Calibration::run(&fp32, preprocess, &images, &req.options)?;
    let base = Config {
        threads: req.threads,
        ..Config::default()
    };
    let evaluate =
        |model: &[u8]| evaluate_model(&manifest, model, &data, Some(&fp32), &base, progress);
    let fp32_eval = evaluate(&fp32)?;

    let (full, targets) = calibration.build(&[])?;
    let layers = calibration.compare_layers(&full, &targets, progress)?;
    let full_eval = evaluate(&full)?;
    let full_metric = full_eval.headline();
    let first = ((full, full_eval), full_metric);
    let outcome = match req.accuracy_budget {
        Some(budget_points) => {
            let ranking: Vec<String> = layers.iter().map(|l| l.node.clone()).collect();
            budget::search(
                &ranking,
                budget_points,
                fp32_eval.headline(),
                first,
                |keep| {
                    let (model, _) = calibration.build(keep)?;
                    let eval = evaluate(&model)?;
                    let metric = eval.headline();
                    Ok(((model, eval), metric))
                },
            )?
        }
        // No budget: the fully quantised model, nothing searched.
        None => budget::Outcome {
            model: first.0,
            metric: first.1,
            kept_fp32: Vec::new(),
            trials: Vec::new(),
            met: true,
        },
    };
    let (int8, int8_eval) = outcome.model;

    let threads = base.resolve()?.threads;
    let input = calibration
        .inputs()
        .first()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let input_name = &manifest.input().name;
    let shape = preprocess.tensor_shape();
    let runs = req.latency_runs.max(1);
    let fp32_ms = crate::latency::median_ms(&fp32, input_name, &shape, input, threads, runs)?;
    let int8_ms = crate::latency::median_ms(&int8, input_name, &shape, input, threads, runs)?;

    let summary = calibration.summary(&targets, Vec::new());
    let kept_fp32: Vec<report::KeptLayer> = outcome
        .kept_fp32
        .iter()
        .map(|n| (n.clone(), "accuracy budget".to_string()))
        .chain(calibration.left_out())
        .map(|(node, reason)| report::KeptLayer { node, reason })
        .collect();
    let report = Report {
        trainer_version: env!("CARGO_PKG_VERSION").into(),
        model: report::ModelSummary {
            name: manifest.model.name.clone(),
            version: manifest.model.version.clone(),
            task: manifest.task.as_str().into(),
        },
        verdict: report::Verdict::new(&fp32_eval, &int8_eval, req.accuracy_budget),
        dataset: report::DatasetSummary {
            source: req.dataset.display().to_string(),
            images: data.len(),
            truth: truth_name(&data).into(),
        },
        size: report::Size {
            fp32_bytes: fp32.len() as u64,
            int8_bytes: int8.len() as u64,
            ratio: int8.len() as f64 / fp32.len().max(1) as f64,
        },
        latency: report::Latency {
            machine: crate::latency::machine_description(),
            threads,
            runs,
            fp32_ms,
            int8_ms,
            int8_speedup: fp32_ms / int8_ms.max(1e-9),
        },
        calibration: report::CalibrationSettings {
            method: req.options.method,
            source: req.calibration.display().to_string(),
            images: summary.calibration_images,
            skipped_images: summary.skipped_images.clone(),
            weights: if summary.per_channel {
                "int8, symmetric, per output channel".into()
            } else {
                "int8, symmetric, per tensor (opset < 13)".into()
            },
            activations: "uint8, asymmetric, per tensor".into(),
            folded_batch_norms: summary.folded_batch_norms,
            skip_nodes: req.options.skip_nodes.clone(),
            skip_ops: req.options.skip_ops.clone(),
        },
        mixed_precision: req.accuracy_budget.map(|b| report::MixedPrecision {
            budget_points: b,
            met: outcome.met,
            trials: outcome.trials.clone(),
        }),
        kept_fp32,
        layers: layers
            .iter()
            .map(|l| report::LayerRow {
                node: l.node.clone(),
                op: l.op.clone(),
                cosine: l.cosine,
                relative_error: l.relative_error,
                precision: if outcome.kept_fp32.contains(&l.node) {
                    "fp32".into()
                } else {
                    "int8".into()
                },
            })
            .collect(),
        fp32: fp32_eval,
        int8: int8_eval,
    };
    Ok(Compiled {
        manifest,
        fp32,
        int8,
        report,
    })
}

fn truth_name(data: &EvalData) -> &'static str {
    match data {
        EvalData::Classification(_) => "class labels",
        EvalData::Detection { truth, .. } => match truth {
            DetectionTruth::LabelFiles => "YOLO txt / Pascal VOC label files",
            DetectionTruth::Coco(_) => "COCO json",
            DetectionTruth::Fp32 => "agreement with the FP32 model's boxes",
        },
    }
}

/// Signs a package holding both models (and their pre-optimised forms when
/// `precompiled`) and the report. INT8 is the default precision only when asked for.
pub fn write_package(
    compiled: &Compiled,
    default_precision: Option<Precision>,
    precompiled: bool,
    key: &SigningKey,
) -> Result<Vec<u8>> {
    let mut manifest = compiled.manifest.clone();
    manifest.default_precision = default_precision;
    let mut writer = PackageWriter::new();
    writer.add_file(MODEL_FILE, compiled.fp32.clone())?;
    if precompiled {
        add_precompiled(&mut manifest, &mut writer, &compiled.fp32, Precision::Fp32)?;
    }
    for (name, format, bytes) in [
        (INT8_MODEL_FILE, ArtifactFormat::Onnx, compiled.int8.clone()),
        (
            REPORT_JSON,
            ArtifactFormat::Other,
            compiled.report.to_json(),
        ),
        (
            REPORT_HTML,
            ArtifactFormat::Other,
            compiled.report.to_html(),
        ),
    ] {
        add_artifact(
            &mut manifest,
            &mut writer,
            name,
            format,
            Precision::Int8,
            bytes,
        )?;
        if precompiled && name == INT8_MODEL_FILE {
            add_precompiled(&mut manifest, &mut writer, &compiled.int8, Precision::Int8)?;
        }
    }
    Ok(writer.finish(&manifest, key)?)
}

/// Writes `report.json` and `report.html` into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(crate::io_err(dir))?;
    for (name, bytes) in [
        (REPORT_JSON, report.to_json()),
        (REPORT_HTML, report.to_html()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(crate::io_err(&path))?;
    }
    Ok(())
}
