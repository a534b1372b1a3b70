//! The compile report: FP32 against INT8 on the user's data, size, latency,
//! per-layer sensitivity, the layers kept in FP32 and the calibration settings.
//! Written as `report.json` for machines and a self-contained `report.html` for
//! people, beside the package and inside it.

pub mod html;

use serde::Serialize;

use crate::evaluate::Evaluation;
use crate::quantize::budget::Trial;
use crate::quantize::Method;

/// Accuracy budget used for the verdict when none was given, in points.
pub const DEFAULT_BUDGET_POINTS: f64 = 1.0;

/// Everything the report says.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Version of the trainer that wrote it.
    pub trainer_version: String,
    /// The model.
    pub model: ModelSummary,
    /// Is the INT8 model good enough, at a glance.
    pub verdict: Verdict,
    /// The data accuracy was measured on.
    pub dataset: DatasetSummary,
    /// The FP32 model's full evaluation.
    pub fp32: Evaluation,
    /// The INT8 model's full evaluation (the model that ships).
    pub int8: Evaluation,
    /// Artifact sizes.
    pub size: Size,
    /// Model latency on the machine that compiled.
    pub latency: Latency,
    /// How activations were calibrated and weights quantised.
    pub calibration: CalibrationSettings,
    /// The mixed-precision search, when an accuracy budget was given.
    pub mixed_precision: Option<MixedPrecision>,
    /// Quantisable layers left in FP32, and why.
    pub kept_fp32: Vec<KeptLayer>,
    /// Per-layer sensitivity: each quantisable layer's output with every layer in
    /// INT8 against FP32 on the calibration set, worst first.
    pub layers: Vec<LayerRow>,
}

/// Model identity.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Task.
    pub task: String,
}

/// The answer to "can I ship the INT8 model?".
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The INT8 model loses no more than the budget.
    pub good_enough: bool,
    /// The metric compared: `top1` or `map50`.
    pub metric: String,
    /// FP32 value (fraction).
    pub fp32: f64,
    /// INT8 value (fraction).
    pub int8: f64,
    /// FP32 minus INT8, in points.
    pub loss_points: f64,
    /// The budget, in points.
    pub budget_points: f64,
    /// Whether the budget was given (`--accuracy-budget`) or is the default.
    pub budget_given: bool,
    /// One sentence for people.
    pub summary: String,
}

/// The evaluation data.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    /// Where it came from.
    pub source: String,
    /// Images listed.
    pub images: usize,
    /// What the truth is: class labels, label files, COCO json, or FP32's boxes.
    pub truth: String,
}

/// Artifact sizes.
#[derive(Debug, Clone, Serialize)]
pub struct Size {
    /// FP32 ONNX bytes.
    pub fp32_bytes: u64,
    /// INT8 ONNX bytes.
    pub int8_bytes: u64,
    /// INT8 / FP32.
    pub ratio: f64,
}

/// Latency of the model alone (no decoding or preprocessing).
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// The machine.
    pub machine: String,
    /// CPU threads.
    pub threads: usize,
    /// Timed runs per model (the median is reported).
    pub runs: usize,
    /// FP32 median, milliseconds.
    pub fp32_ms: f64,
    /// INT8 median, milliseconds.
    pub int8_ms: f64,
    /// FP32 / INT8: above 1 when INT8 is faster.
    pub int8_speedup: f64,
}

/// Calibration and quantisation settings.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationSettings {
    /// Range method, with its parameter.
    pub method: Method,
    /// Calibration folder.
    pub source: String,
    /// Images used.
    pub images: usize,
    /// Images that could not be read, by name.
    pub skipped_images: Vec<String>,
    /// Weights: int8 symmetric, per output channel or per tensor.
    pub weights: String,
    /// Activations: uint8 asymmetric, per tensor.
    pub activations: String,
    /// BatchNormalization nodes folded before quantising.
    pub folded_batch_norms: usize,
    /// Nodes kept in FP32 by name (`--skip-node`).
    pub skip_nodes: Vec<String>,
    /// Op types kept in FP32 (`--skip-op`).
    pub skip_ops: Vec<String>,
}

/// The mixed-precision search.
#[derive(Debug, Clone, Serialize)]
pub struct MixedPrecision {
    /// The budget, in points.
    pub budget_points: f64,
    /// Whether a model within the budget was found.
    pub met: bool,
    /// Every model tried.
    pub trials: Vec<Trial>,
}

/// A quantisable layer left in FP32.
#[derive(Debug, Clone, Serialize)]
pub struct KeptLayer {
    /// Node name.
    pub node: String,
    /// Why: `accuracy budget`, `skip list`, or `grouped convolution`.
    pub reason: String,
}

/// One layer's sensitivity.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    /// Node name.
    pub node: String,
    /// Op type.
    pub op: String,
    /// Cosine similarity with FP32.
    pub cosine: f64,
    /// Relative error against FP32.
    pub relative_error: f64,
    /// Precision in the shipped model: `int8` or `fp32`.
    pub precision: String,
}

impl Verdict {
    /// Compares the two evaluations against the budget (default 1 point).
    pub fn new(fp32: &Evaluation, int8: &Evaluation, budget: Option<f64>) -> Verdict {
        let (a, b) = (fp32.headline(), int8.headline());
        let loss = crate::quantize::budget::loss_points(a, b);
        let budget_points = budget.unwrap_or(DEFAULT_BUDGET_POINTS);
        let good_enough = loss <= budget_points + 1e-9;
        let name = metric_label(int8.metric_name());
        let summary = format!(
            "{}: {name} {:.2}% against {:.2}% in FP32, {} ({} budget {:.2})",
            if good_enough {
                "INT8 is good enough"
            } else {
                "INT8 loses too much"
            },
            b * 100.0,
            a * 100.0,
            if loss >= 0.005 {
                format!("{loss:.2} points lost")
            } else if loss <= -0.005 {
                format!("{:.2} points gained", -loss)
            } else {
                "nothing lost".to_string()
            },
            if budget.is_some() { "given" } else { "default" },
            budget_points
        );
        Verdict {
            good_enough,
            metric: int8.metric_name().into(),
            fp32: a,
            int8: b,
            loss_points: loss,
            budget_points,
            budget_given: budget.is_some(),
            summary,
        }
    }
}

/// How a metric key reads to people.
pub fn metric_label(metric: &str) -> &'static str {
    match metric {
        "top1" => "top-1",
        "top5" => "top-5",
        "map50" => "mAP@0.5",
        "map50_95" => "mAP@0.5:0.95",
        _ => "accuracy",
    }
}

impl Report {
    /// Pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The self-contained HTML page.
    pub fn to_html(&self) -> Vec<u8> {
        html::render(self).into_bytes()
    }
}
