//! [`Predictor`]: a verified package, a backend and a decoder, ready to infer.

use std::path::Path;
use std::time::Instant;

use crate::backend::{self, cpu::CpuBackend, profile::Profile, Backend};
use crate::config::{BackendKind, Config, Settings};
use crate::decoder::Decoder;
use crate::error::{Error, Result};
use crate::image::{ImageInput, RgbImage};
use crate::package::manifest::{ArtifactFormat, InputSpec, Manifest, Precision};
use crate::package::{Package, TrustedKeys};
use crate::preprocess::{Prepared, Preprocessor};
use crate::results::{OutputTensor, Prediction};

/// A loaded model. `Send + Sync`: share one predictor (e.g. in an `Arc`) across
/// threads; each `infer` call is independent.
#[derive(Debug)]
pub struct Predictor {
    manifest: Manifest,
    settings: Settings,
    preprocessor: Preprocessor,
    backend: Box<dyn Backend>,
    decoder: Decoder,
    key_id: String,
    precision: Precision,
    artifact: String,
    license: Option<outpost_licensing::Claims>,
}

impl Predictor {
    /// Opens, verifies and loads a package file or directory.
    pub fn open(package: impl AsRef<Path>, config: &Config) -> Result<Predictor> {
        let started = Instant::now();
        let settings = config.resolve()?;
        let trusted = TrustedKeys::load(&settings.trusted_keys)?;
        let package = Package::open(package, &trusted)?;
        let predictor = Predictor::from_package(&package, settings)?;
        tracing::info!(
            model = %predictor.manifest.model.name,
            backend = predictor.backend.name(),
            threads = predictor.settings.threads,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "package loaded"
        );
        Ok(predictor)
    }

    /// Loads an already verified package with resolved settings.
    ///
    /// The model artifact is the one at the configured precision, else the
    /// package's `default_precision`, else FP32.
    ///
    /// A package that needs a licence is refused (2xxx) unless a valid one is
    /// installed; the check runs before any model is read.
    pub fn from_package(package: &Package, settings: Settings) -> Result<Predictor> {
        let manifest = package.manifest().clone();
        let license = crate::license::enforce(&manifest, &settings)?;
        let precision = settings
            .precision
            .or(manifest.default_precision)
            .unwrap_or(Precision::Fp32);
        let onnx = cpu_artifact(&manifest, ArtifactFormat::Onnx, precision);
        let mut predictor = match cpu_artifact(&manifest, ArtifactFormat::Nnef, precision) {
            Some(nnef) => {
                let loaded = {
                    let model = package.artifact(&nnef)?;
                    Predictor::from_precompiled(manifest.clone(), &model, settings.clone())
                };
                match loaded {
                    Ok(mut p) => {
                        p.artifact = nnef;
                        p
                    }
                    // A pre-optimised artifact this runtime's tract cannot read (made
                    // by another version) still leaves the portable ONNX model.
                    Err(e @ Error::ModelLoad(_)) => {
                        let Some(onnx) = &onnx else { return Err(e) };
                        tracing::warn!(error = %e, "pre-optimised artifact {nnef} unusable, loading {onnx}");
                        let mut p =
                            Predictor::from_parts(manifest, &package.artifact(onnx)?, settings)?;
                        p.artifact = onnx.clone();
                        p
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                let onnx = onnx.ok_or_else(|| Error::NoSuitableArtifact {
                    target: "cpu".into(),
                    precision: precision.as_str().into(),
                })?;
                let mut p = Predictor::from_parts(manifest, &package.artifact(&onnx)?, settings)?;
                p.artifact = onnx;
                p
            }
        };
        predictor.key_id = package.key_id().to_string();
        predictor.precision = precision;
        predictor.license = license.map(|l| l.claims);
        Ok(predictor)
    }

    /// Builds a predictor from a manifest and model bytes that were **not** verified.
    /// For workstation tools (the trainer evaluates models before packaging them);
    /// a device loads packages through [`Predictor::open`].
    pub fn from_parts(manifest: Manifest, model: &[u8], settings: Settings) -> Result<Predictor> {
        let input = checked_input(&manifest, &settings)?;
        let cpu = CpuBackend::load(model, &input.name, &input.shape, settings.threads)?;
        Predictor::with_backend(manifest, cpu, settings)
    }

    /// Like [`Predictor::from_parts`], from a pre-optimised CPU artifact
    /// ([`crate::backend::cpu::precompile`]).
    pub fn from_precompiled(
        manifest: Manifest,
        model: &[u8],
        settings: Settings,
    ) -> Result<Predictor> {
        let input = checked_input(&manifest, &settings)?;
        let cpu = CpuBackend::load_precompiled(model, &input.name, &input.shape, settings.threads)?;
        Predictor::with_backend(manifest, cpu, settings)
    }

    fn with_backend(manifest: Manifest, cpu: CpuBackend, settings: Settings) -> Result<Predictor> {
        let input = manifest.input();
        let threshold = settings
            .threshold
            .map(f64::from)
            .or(manifest.threshold)
            .unwrap_or_else(|| manifest.decoder.default_threshold()) as f32;
        let decoder = Decoder::new(
            manifest.decoder.clone(),
            manifest.labels.clone(),
            threshold,
            settings.top_k,
        );
        decoder.check_outputs(cpu.output_shapes())?;
        Ok(Predictor {
            preprocessor: Preprocessor::new(input.preprocess.clone()),
            backend: Box::new(cpu),
            decoder,
            key_id: String::new(),
            precision: Precision::Fp32,
            artifact: String::new(),
            license: None,
            manifest,
            settings,
        })
    }

    /// Runs the whole pipeline on one image.
    pub fn infer(&self, image: ImageInput<'_>) -> Result<Prediction> {
        let rgb = self.decode(image)?;
        let prepared = self.preprocess(&rgb)?;
        let transform = prepared.transform;
        let outputs = self.run_model(prepared)?;
        self.postprocess(outputs, &transform)
    }

    /// Runs several images; the first failure stops the batch.
    pub fn infer_batch(&self, images: &[ImageInput<'_>]) -> Result<Vec<Prediction>> {
        images.iter().map(|img| self.infer(*img)).collect()
    }

    /// Stage 1: decode or convert the input to RGB.
    pub fn decode(&self, image: ImageInput<'_>) -> Result<RgbImage> {
        image.to_rgb()
    }

    /// Stage 2: resize and normalise into the model's input tensor.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Prepared> {
        self.preprocessor.run(image)
    }

    /// Stage 3: run the model.
    pub fn run_model(&self, prepared: Prepared) -> Result<Vec<OutputTensor>> {
        self.backend.run(&prepared.shape, prepared.data)
    }

    /// Times stage 3 node by node over `runs` runs (see [`Profile`]); `None` where
    /// the backend cannot profile.
    pub fn profile_model(&self, prepared: &Prepared, runs: usize) -> Result<Option<Profile>> {
        self.backend.profile(&prepared.shape, &prepared.data, runs)
    }

    /// Stage 4: decode outputs into typed results.
    pub fn postprocess(
        &self,
        outputs: Vec<OutputTensor>,
        transform: &crate::preprocess::Transform,
    ) -> Result<Prediction> {
        self.decoder.decode(outputs, transform)
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// File name of the package artifact that runs, e.g. `model.nnef.tar` when the
    /// pre-optimised model was used; empty for [`Predictor::from_parts`] and
    /// [`Predictor::from_precompiled`].
    pub fn artifact(&self) -> &str {
        &self.artifact
    }

    /// Precision of the model artifact that runs (FP32 for [`Predictor::from_parts`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The backend that runs the model.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The score threshold in force.
    pub fn threshold(&self) -> f32 {
        self.decoder.threshold()
    }

    /// Id of the key that signed the package (empty for [`Predictor::from_parts`]).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The licence this predictor runs under; `None` for an open model.
    pub fn license(&self) -> Option<&outpost_licensing::Claims> {
        self.license.as_ref()
    }
}

/// The artifact the CPU backend runs: ONNX, target `cpu`, at `precision`.
/// The manifest's input, once the manifest is valid and the configured backend
/// exists on this build (checked before any model is loaded).
fn checked_input<'m>(manifest: &'m Manifest, settings: &Settings) -> Result<&'m InputSpec> {
    manifest.validate()?;
    let kind = backend::select(settings.backend)?;
    debug_assert_eq!(kind, BackendKind::Cpu);
    Ok(manifest.input())
}

/// The CPU artifact of this format and precision, if the package has one.
fn cpu_artifact(
    manifest: &Manifest,
    format: ArtifactFormat,
    precision: Precision,
) -> Option<String> {
    manifest
        .artifacts
        .iter()
        .find(|a| a.format == format && a.target == "cpu" && a.precision == precision)
        .map(|a| a.file.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictor_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Predictor>();
    }
}
