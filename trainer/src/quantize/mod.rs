//! `quantize`: post-training static INT8 in QDQ form, calibrated on images with
//! the package's own preprocessing.

pub mod analysis;
pub mod budget;
pub mod calibrate;
pub mod fold;
pub mod qdq;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use outpost_runtime::package::manifest::Preprocess;
use outpost_runtime::preprocess::Preprocessor;
use outpost_runtime::ImageInput;
use prost::Message;
use serde::Serialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ndarray::{ArrayD, IxDyn};

pub use calibrate::Method;

use crate::{io_err, Result, TrainerError};

/// Settings of one quantisation run.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// How activation ranges are chosen.
    pub method: Method,
    /// Node names kept in FP32.
    pub skip_nodes: Vec<String>,
    /// Op types kept in FP32.
    pub skip_ops: Vec<String>,
    /// Show a progress bar.
    pub progress: bool,
}

/// What a quantisation run did.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeSummary {
    /// The calibration method.
    pub method: Method,
    /// Calibration images used.
    pub calibration_images: usize,
    /// Calibration images that could not be read, by name.
    pub skipped_images: Vec<String>,
    /// Nodes now running in INT8.
    pub quantized_nodes: Vec<String>,
    /// Quantisable nodes kept in FP32: by the skip lists, and grouped convolutions
    /// when weights can only have one scale per tensor.
    pub kept_fp32: Vec<String>,
    /// Weight scales per output channel (opset 13+) or per tensor.
    pub per_channel: bool,
    /// BatchNormalization nodes folded into the Conv before them.
    pub folded_batch_norms: usize,
    /// Activation ranges chosen, by tensor.
    pub ranges: BTreeMap<String, (f32, f32)>,
    /// Per quantised node: its output under INT8 against FP32, worst first.
    pub layers: Vec<analysis::LayerError>,
}

/// The image files of a calibration folder, sorted (recursively).
pub fn calibration_images(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if crate::dataset::is_image(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    if out.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{} holds no JPEG, PNG or BMP images",
            dir.display()
        )));
    }
    Ok(out)
}

/// Parses ONNX bytes into the protobuf model.
pub fn parse_model(onnx: &[u8]) -> Result<tract_onnx::pb::ModelProto> {
    tract_onnx::onnx()
        .proto_model_for_read(&mut &onnx[..])
        .map_err(|e| outpost_runtime::Error::ModelLoad(format!("not an ONNX model: {e:#}")).into())
}

/// Quantises `onnx`, calibrating on `images` preprocessed with `preprocess`.
/// Returns the QDQ model bytes and a summary. The same inputs give the same bytes.
pub fn quantize(
    onnx: &[u8],
    preprocess: &Preprocess,
    images: &[PathBuf],
    options: &QuantizeOptions,
) -> Result<(Vec<u8>, QuantizeSummary)> {
    let calibration = Calibration::run(onnx, preprocess, images, options)?;
    let (quantized, targets) = calibration.build(&[])?;
    let layers = calibration.compare_layers(&quantized, &targets, options.progress)?;
    let summary = calibration.summary(&targets, layers);
    Ok((quantized, summary))
}

/// A calibrated model, ready to be rewritten to QDQ with any subset of its
/// quantisable nodes: mixed precision re-uses one calibration for every trial.
pub struct Calibration {
    /// The model with BatchNorm folded, before any QDQ.
    proto: tract_onnx::pb::ModelProto,
    /// `proto` encoded: the FP32 model the INT8 one is compared with.
    folded: Vec<u8>,
    preprocess: Preprocess,
    per_channel: bool,
    folded_batch_norms: usize,
    /// Every quantisable node, skip lists ignored.
    all: Vec<qdq::Target>,
    /// The nodes left after the skip lists.
    targets: Vec<qdq::Target>,
    ranges: BTreeMap<String, (f32, f32)>,
    inputs: Vec<Vec<f32>>,
    skipped: Vec<String>,
    method: Method,
    skip_nodes: Vec<String>,
    skip_ops: Vec<String>,
}

impl Calibration {
    /// Folds BatchNorm, checks the skip lists, and observes the activation ranges of
    /// every node left to quantise over the calibration images.
    pub fn run(
        onnx: &[u8],
        preprocess: &Preprocess,
        images: &[PathBuf],
        options: &QuantizeOptions,
    ) -> Result<Calibration> {
        let mut proto = parse_model(onnx)?;
        let opset = proto
            .opset_import
            .iter()
            .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .max()
            .unwrap_or(0);
        if opset < 10 {
            return Err(TrainerError::Invalid(format!(
                "the model uses ONNX opset {opset}; QDQ needs opset 10 or later (re-export it)"
            )));
        }
        // Per-channel DequantizeLinear arrived in opset 13; older models get
        // per-tensor weight scales (less accurate, still standard).
        let per_channel = opset >= 13;
        let graph = proto
            .graph
            .as_mut()
            .ok_or_else(|| TrainerError::Invalid("the ONNX model has no graph".into()))?;
        fold::constants_to_initializers(graph);
        let folded_batch_norms = fold::fold_batch_norm(graph)?;
        let all = qdq::targets(graph, &[], &[], true);
        let targets = qdq::targets(graph, &options.skip_nodes, &options.skip_ops, per_channel);
        for s in &options.skip_nodes {
            if !all.iter().any(|t| &t.name == s) {
                return Err(TrainerError::Invalid(format!(
                    "--skip-node {s}: no quantisable node has that name"
                )));
            }
        }
        if targets.is_empty() {
            return Err(TrainerError::Invalid(
                "nothing to quantise: no Conv, Gemm or MatMul with float weights is left".into(),
            ));
        }
        // Calibrate the folded graph: it is what gets quantised.
        let folded = proto.encode_to_vec();
        let mut tensors: Vec<String> = targets.iter().map(|t| t.activation.clone()).collect();
        tensors.sort();
        tensors.dedup();

        let passes = if options.method == Method::MinMax {
            1
        } else {
            2
        };
        let bar = progress_bar(
            options.progress,
            images.len() as u64 * (passes + 1),
            "calibrating",
        );
        let (inputs, skipped) = prepare_images(preprocess, images, &bar)?;
        let observers = observe(&folded, preprocess, &inputs, &tensors, options.method, &bar)?;
        bar.finish_and_clear();
        let ranges = tensors
            .iter()
            .zip(&observers)
            .map(|(t, o)| (t.clone(), o.range(options.method)))
            .collect();
        Ok(Calibration {
            proto,
            folded,
            preprocess: preprocess.clone(),
            per_channel,
            folded_batch_norms,
            all,
            targets,
            ranges,
            inputs,
            skipped,
            method: options.method,
            skip_nodes: options.skip_nodes.clone(),
            skip_ops: options.skip_ops.clone(),
        })
    }

    /// The FP32 model (BatchNorm folded) that the INT8 one derives from.
    pub fn fp32_model(&self) -> &[u8] {
        &self.folded
    }

    /// The preprocessed calibration inputs.
    pub fn inputs(&self) -> &[Vec<f32>] {
        &self.inputs
    }

    /// The QDQ model with every calibrated node quantised except `keep_fp32`
    /// (node names), and the nodes it quantised.
    pub fn build(&self, keep_fp32: &[String]) -> Result<(Vec<u8>, Vec<qdq::Target>)> {
        let targets: Vec<qdq::Target> = self
            .targets
            .iter()
            .filter(|t| !keep_fp32.contains(&t.name))
            .cloned()
            .collect();
        if targets.is_empty() {
            return Err(TrainerError::Invalid(
                "nothing left to quantise: every node is kept in FP32".into(),
            ));
        }
        let mut proto = self.proto.clone();
        let graph = proto
            .graph
            .as_mut()
            .ok_or_else(|| TrainerError::Invalid("the ONNX model has no graph".into()))?;
        qdq::rewrite(graph, &targets, &self.ranges, self.per_channel)?;
        Ok((proto.encode_to_vec(), targets))
    }

    /// Each quantised node's output in `quantized` against FP32 on the calibration
    /// set, worst first.
    pub fn compare_layers(
        &self,
        quantized: &[u8],
        targets: &[qdq::Target],
        progress: bool,
    ) -> Result<Vec<analysis::LayerError>> {
        let graph = self
            .proto
            .graph
            .as_ref()
            .ok_or_else(|| TrainerError::Invalid("the ONNX model has no graph".into()))?;
        // The tensors compared: each quantised node's first output.
        let outputs: Vec<String> = targets
            .iter()
            .map(|t| graph.node[t.node].output[0].clone())
            .collect();
        let bar = progress_bar(progress, self.inputs.len() as u64 * 2, "comparing layers");
        let layers = analysis::compare_layers(
            &self.folded,
            quantized,
            self.preprocess.tensor_shape(),
            &self.inputs,
            targets,
            &outputs,
            &bar,
        )?;
        bar.finish_and_clear();
        Ok(layers)
    }

    /// Quantisable nodes left out of calibration, with why: the skip lists, or
    /// grouped convolutions when weights can only have one scale per tensor.
    pub fn left_out(&self) -> Vec<(String, String)> {
        self.all
            .iter()
            .filter(|a| !self.targets.iter().any(|t| t.node == a.node))
            .map(|a| {
                let reason = if self.skip_nodes.contains(&a.name) || self.skip_ops.contains(&a.op) {
                    "skip list"
                } else {
                    "grouped convolution: one weight scale per tensor before opset 13"
                };
                (a.name.clone(), reason.to_string())
            })
            .collect()
    }

    /// What a run that quantised `targets` did.
    pub fn summary(
        &self,
        targets: &[qdq::Target],
        layers: Vec<analysis::LayerError>,
    ) -> QuantizeSummary {
        QuantizeSummary {
            method: self.method,
            calibration_images: self.inputs.len(),
            skipped_images: self.skipped.clone(),
            quantized_nodes: targets.iter().map(|t| t.name.clone()).collect(),
            kept_fp32: self
                .all
                .iter()
                .filter(|a| !targets.iter().any(|t| t.node == a.node))
                .map(|a| a.name.clone())
                .collect(),
            per_channel: self.per_channel,
            folded_batch_norms: self.folded_batch_norms,
            ranges: self
                .ranges
                .iter()
                .filter(|(t, _)| targets.iter().any(|q| &q.activation == *t))
                .map(|(t, r)| (t.clone(), *r))
                .collect(),
            layers,
        }
    }
}

/// A model planned to return chosen intermediate tensors, for calibration and
/// layer-by-layer comparison.
pub struct Probe {
    plan: std::sync::Arc<TypedRunnableModel>,
    shape: [usize; 4],
}

impl Probe {
    /// Plans `onnx` at the preprocessing's input shape, returning `tensors`.
    pub fn new(onnx: &[u8], shape: [usize; 4], tensors: &[String]) -> Result<Probe> {
        let load = |e: TractError| outpost_runtime::Error::ModelLoad(format!("{e:#}"));
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .map_err(load)?;
        model
            .set_input_fact(0, f32::fact(shape).into())
            .map_err(load)?;
        let inputs = model.input_outlets().map_err(load)?.to_vec();
        let outlets = tensors
            .iter()
            .map(|t| {
                // Graph inputs are source nodes named after the tensor, without a label.
                let input = inputs.iter().find(|o| model.node(o.node).name == *t);
                input
                    .copied()
                    .or_else(|| model.find_outlet_label(t))
                    .ok_or_else(|| {
                        TrainerError::Invalid(format!("tensor {t} is not an output of any node"))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        model.select_output_outlets(&outlets).map_err(load)?;
        let plan = model
            .into_optimized()
            .map_err(load)?
            .into_runnable()
            .map_err(load)?;
        Ok(Probe { plan, shape })
    }

    /// Runs one input; calls `f(i, values)` for each requested tensor in order.
    pub fn run(&self, data: &[f32], mut f: impl FnMut(usize, &[f32])) -> Result<()> {
        let t = ArrayD::from_shape_vec(IxDyn(&self.shape), data.to_vec())
            .map_err(|e| TrainerError::Invalid(e.to_string()))?
            .into_tensor();
        let outs = self
            .plan
            .run(tvec!(t.into_tvalue()))
            .map_err(|e| outpost_runtime::Error::Inference(format!("{e:#}")))?;
        for (i, v) in outs.iter().enumerate() {
            let view = v
                .to_plain_array_view::<f32>()
                .map_err(|e| TrainerError::Invalid(format!("{e:#}")))?;
            match view.as_slice() {
                Some(s) => f(i, s),
                None => f(i, &view.iter().copied().collect::<Vec<_>>()),
            }
        }
        Ok(())
    }
}

/// Decodes and preprocesses images; unreadable ones are reported by name and left out.
pub fn prepare_images(
    preprocess: &Preprocess,
    images: &[PathBuf],
    bar: &ProgressBar,
) -> Result<(Vec<Vec<f32>>, Vec<String>)> {
    let pre = Preprocessor::new(preprocess.clone());
    let mut inputs = Vec::new();
    let mut skipped = Vec::new();
    for path in images {
        let prepared = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                ImageInput::Encoded(&b)
                    .to_rgb()
                    .and_then(|rgb| pre.run(&rgb))
                    .map_err(|e| format!("error {}: {e}", e.code()))
            });
        match prepared {
            Ok(p) => inputs.push(p.data),
            Err(why) => {
                bar.suspend(|| eprintln!("skipping {}: {why}", path.display()));
                skipped.push(path.display().to_string());
            }
        }
    }
    if inputs.is_empty() {
        return Err(TrainerError::Invalid(
            "no calibration image could be read".into(),
        ));
    }
    Ok((inputs, skipped))
}

/// Runs the FP32 model over the inputs and observes each named tensor.
fn observe(
    onnx: &[u8],
    preprocess: &Preprocess,
    inputs: &[Vec<f32>],
    tensors: &[String],
    method: Method,
    bar: &ProgressBar,
) -> Result<Vec<calibrate::Observer>> {
    let probe = Probe::new(onnx, preprocess.tensor_shape(), tensors)?;
    let mut observers = vec![calibrate::Observer::default(); tensors.len()];
    for data in inputs {
        probe.run(data, |i, v| observers[i].observe_range(v))?;
        bar.inc(1);
    }
    if !matches!(method, Method::MinMax) {
        for data in inputs {
            probe.run(data, |i, v| observers[i].observe_histogram(v))?;
            bar.inc(1);
        }
    }
    Ok(observers)
}

/// A progress bar on stderr, or a hidden one.
pub fn progress_bar(show: bool, len: u64, what: &str) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(&format!("{what} {{bar:30}} {{pos}}/{{len}}, eta {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
