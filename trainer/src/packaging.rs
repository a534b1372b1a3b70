//! `package`: check a model against its preprocessing, labels and decoder, then
//! write a signed `.opk`. The same inputs always give the same bytes.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use outpost_runtime::backend::cpu::{declared_inputs, precompile, CpuBackend};
use outpost_runtime::backend::Backend;
use outpost_runtime::decoder::Decoder;
use outpost_runtime::package::manifest::{
    ArtifactFormat, DecoderSpec, InputSpec, LicenseRequirement, Manifest, ModelInfo, Precision,
    Preprocess, Task, FORMAT_VERSION,
};
use outpost_runtime::package::{describe_artifact, PackageWriter};
use outpost_runtime::preprocess::Transform;
use outpost_runtime::Error;

use crate::{io_err, Result, TrainerError};

/// Everything `outpost-trainer package` takes.
#[derive(Debug, Clone)]
pub struct PackageRequest {
    /// The ONNX model.
    pub model: PathBuf,
    /// One class name per line; optional only for the `raw` task.
    pub labels: Option<PathBuf>,
    /// The task.
    pub task: Task,
    /// The `preprocess` object.
    pub preprocess: Preprocess,
    /// The `decoder` object; the task's default when `None`.
    pub decoder: Option<DecoderSpec>,
    /// Model name; the model file's stem when `None`.
    pub name: Option<String>,
    /// Model version.
    pub version: String,
    /// Recommended score threshold.
    pub threshold: Option<f64>,
    /// An INT8 (QDQ) version of the model from `quantize`, packaged beside the FP32 one.
    pub int8_model: Option<PathBuf>,
    /// Precision the device runs unless told otherwise (default FP32).
    pub default_precision: Option<Precision>,
    /// Also ship each CPU model pre-optimised (tract NNEF): a faster load for a
    /// larger package.
    pub precompiled: bool,
    /// The licence a device needs to open the package; `None` for an open model. An
    /// empty `product_id` stands for the model name.
    pub license: Option<LicenseRequirement>,
}

/// Reads a labels file: one name per line, trailing blank lines ignored.
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut labels: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    while labels.last().is_some_and(|l| l.trim().is_empty()) {
        labels.pop();
    }
    if labels.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{}: no labels in the file",
            path.display()
        )));
    }
    Ok(labels)
}

/// Checks the model and builds the signed package bytes.
pub fn build_package(req: &PackageRequest, key: &SigningKey) -> Result<Vec<u8>> {
    let (mut manifest, onnx) = checked_manifest(req)?;
    let mut writer = PackageWriter::new();
    writer.add_file(MODEL_FILE, onnx.clone())?;
    if req.precompiled {
        add_precompiled(&mut manifest, &mut writer, &onnx, Precision::Fp32)?;
    }
    if let Some(path) = &req.int8_model {
        let int8 = std::fs::read(path).map_err(io_err(path))?;
        check_model(
            &int8,
            &manifest.input().name,
            &req.preprocess,
            &manifest.decoder,
            &manifest.labels,
        )?;
        add_artifact(
            &mut manifest,
            &mut writer,
            INT8_MODEL_FILE,
            ArtifactFormat::Onnx,
            Precision::Int8,
            int8.clone(),
        )?;
        if req.precompiled {
            add_precompiled(&mut manifest, &mut writer, &int8, Precision::Int8)?;
        }
    }
    Ok(writer.finish(&manifest, key)?)
}

/// Lists a `cpu`-target artifact in the manifest and adds its bytes to the package.
pub fn add_artifact(
    manifest: &mut Manifest,
    writer: &mut PackageWriter,
    file: &str,
    format: ArtifactFormat,
    precision: Precision,
    bytes: Vec<u8>,
) -> Result<()> {
    manifest
        .artifacts
        .push(describe_artifact(file, format, "cpu", precision, &bytes));
    writer.add_file(file, bytes)?;
    Ok(())
}

/// Adds the pre-optimised form of a CPU model (see
/// [`outpost_runtime::backend::precompiled`]) once it gives the ONNX model's
/// outputs. A model tract cannot save this way ships as ONNX alone.
pub fn add_precompiled(
    manifest: &mut Manifest,
    writer: &mut PackageWriter,
    onnx: &[u8],
    precision: Precision,
) -> Result<()> {
    let input = manifest.input().clone();
    let nnef = match precompile(onnx, &input.name, &input.shape) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "the {} model has no pre-optimised form (tract cannot save it as NNEF); devices will load its ONNX",
                precision.as_str()
            );
            return Ok(());
        }
    };
    check_precompiled(onnx, &nnef, &input.name, &input.shape)?;
    let file = match precision {
        Precision::Int8 => INT8_PRECOMPILED_FILE,
        _ => PRECOMPILED_FILE,
    };
    add_artifact(
        manifest,
        writer,
        file,
        ArtifactFormat::Nnef,
        precision,
        nnef,
    )
}

/// Largest difference allowed between the ONNX model's and its pre-optimised
/// form's outputs, relative to the output's largest magnitude (at least 1). Both
/// run the same graph through the same kernels; only float re-association may differ.
const PRECOMPILED_TOLERANCE: f32 = 1e-4;

/// Runs both forms on the same deterministic input and compares every output.
fn check_precompiled(onnx: &[u8], nnef: &[u8], input: &str, shape: &[usize]) -> Result<()> {
    let from_onnx = CpuBackend::load(onnx, input, shape, 1)?;
    let precompiled = CpuBackend::load_precompiled(nnef, input, shape, 1)?;
    let len: usize = shape.iter().product();
    // A smooth pattern in [-1, 1]: every input position matters, no RNG needed.
    let data: Vec<f32> = (0..len).map(|i| ((i % 977) as f32 * 0.37).sin()).collect();
    let expected = from_onnx.run(shape, data.clone())?;
    let actual = precompiled.run(shape, data)?;
    let mismatch = |why: String| {
        TrainerError::Invalid(format!(
            "the pre-optimised model differs from the ONNX model: {why}"
        ))
    };
    if expected.len() != actual.len() {
        return Err(mismatch(format!(
            "{} outputs against {}",
            actual.len(),
            expected.len()
        )));
    }
    for (e, a) in expected.iter().zip(&actual) {
        if e.name != a.name || e.shape != a.shape {
            return Err(mismatch(format!(
                "output {} {:?} against {} {:?}",
                a.name, a.shape, e.name, e.shape
            )));
        }
        let scale = e.data.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        // A NaN on one side only counts as the largest difference.
        let worst = e
            .data
            .iter()
            .zip(&a.data)
            .map(|(x, y)| match (x.is_nan(), y.is_nan()) {
                (true, true) => 0.0,
                (false, false) => (x - y).abs(),
                _ => f32::INFINITY,
            })
            .fold(0.0f32, f32::max);
        let within = worst <= PRECOMPILED_TOLERANCE * scale;
        if !within {
            return Err(mismatch(format!(
                "output {} differs by up to {worst} (scale {scale})",
                e.name
            )));
        }
        tracing::debug!(output = %e.name, worst, "pre-optimised model checked");
    }
    Ok(())
}

/// File name of the FP32 CPU model inside a package.
pub const MODEL_FILE: &str = "model.onnx";
/// File name of the INT8 CPU model inside a package.
pub const INT8_MODEL_FILE: &str = "model_int8.onnx";
/// File name of the pre-optimised FP32 CPU model inside a package.
pub const PRECOMPILED_FILE: &str = "model.nnef.tar";
/// File name of the pre-optimised INT8 CPU model inside a package.
pub const INT8_PRECOMPILED_FILE: &str = "model_int8.nnef.tar";

/// The model loads at the preprocessing's shape, and the decoder accepts what it
/// declares and what it actually returns for a blank image.
fn check_model(
    onnx: &[u8],
    input: &str,
    preprocess: &Preprocess,
    decoder: &DecoderSpec,
    labels: &[String],
) -> Result<()> {
    let shape = preprocess.tensor_shape().to_vec();
    let backend = CpuBackend::load(onnx, input, &shape, 1)?;
    let check = Decoder::new(decoder.clone(), labels.to_vec(), 0.5, None);
    check.check_outputs(backend.output_shapes())?;
    let outputs = backend.run(&shape, vec![0.0; shape.iter().product()])?;
    let (w, h) = preprocess.resize.output_size();
    let identity = Transform {
        scale: [1.0, 1.0],
        offset: [0.0, 0.0],
        original: [w, h],
    };
    check.decode(outputs, &identity)?;
    Ok(())
}

/// Checks the model against the request (it loads, its input matches the
/// preprocessing, its outputs suit the decoder and labels) and returns the
/// manifest a package of it would carry, with the model bytes.
pub fn checked_manifest(req: &PackageRequest) -> Result<(Manifest, Vec<u8>)> {
    let onnx = std::fs::read(&req.model).map_err(io_err(&req.model))?;
    let labels = match (&req.labels, req.task) {
        (Some(path), _) => read_labels(path)?,
        (None, Task::Raw) => Vec::new(),
        (None, task) => {
            return Err(TrainerError::Invalid(format!(
                "--labels is required for task {}",
                task.as_str()
            )))
        }
    };
    let decoder = req
        .decoder
        .clone()
        .unwrap_or_else(|| DecoderSpec::default_for(req.task));
    req.preprocess.validate()?;
    let shape = req.preprocess.tensor_shape().to_vec();

    // The model must declare one input whose fixed dimensions match the preprocessing.
    let inputs = declared_inputs(&onnx)?;
    let [input] = inputs.as_slice() else {
        return Err(Error::ModelMismatch(format!(
            "the model has {} inputs; exactly one image input is supported",
            inputs.len()
        ))
        .into());
    };
    if input.shape.len() != shape.len()
        || input
            .shape
            .iter()
            .zip(&shape)
            .any(|(d, s)| d.is_some_and(|d| d != *s))
    {
        return Err(Error::ModelMismatch(format!(
            "the model's input {} has shape {}, the preprocessing gives {shape:?} ({:?} layout)",
            input.name,
            fmt_shape(&input.shape),
            req.preprocess.layout
        ))
        .into());
    }

    // It must load, and its outputs must suit the decoder, declared and actual.
    check_model(&onnx, &input.name, &req.preprocess, &decoder, &labels)?;

    let name = req.name.clone().unwrap_or_else(|| default_name(&req.model));
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        model: ModelInfo {
            name: name.clone(),
            version: req.version.clone(),
        },
        task: req.task,
        inputs: vec![InputSpec {
            name: input.name.clone(),
            shape,
            preprocess: req.preprocess.clone(),
        }],
        decoder,
        threshold: req.threshold,
        labels,
        artifacts: vec![describe_artifact(
            MODEL_FILE,
            ArtifactFormat::Onnx,
            "cpu",
            Precision::Fp32,
            &onnx,
        )],
        license: req.license.clone().map(|mut l| {
            if l.product_id.is_empty() {
                l.product_id = name.clone();
            }
            l
        }),
        default_precision: req.default_precision,
    };
    Ok((manifest, onnx))
}

/// The model file's stem, or its folder's name when the file is just `model.onnx`.
fn default_name(model: &Path) -> String {
    let stem = model.file_stem().map(|s| s.to_string_lossy().into_owned());
    match stem.as_deref() {
        Some("model") | None => model
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
        Some(s) => s.to_string(),
    }
}

fn fmt_shape(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}
