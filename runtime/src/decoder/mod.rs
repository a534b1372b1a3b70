//! Task decoders: small pure functions from output tensors to typed results.
//! They know nothing of backends.

pub mod classification;
pub mod detection;

use crate::error::{Error, Result};
use crate::package::manifest::DecoderSpec;
use crate::preprocess::Transform;
use crate::results::{OutputTensor, Prediction};

/// A decoder bound to its labels and the threshold and top-k in force.
#[derive(Debug, Clone)]
pub struct Decoder {
    spec: DecoderSpec,
    labels: Vec<String>,
    threshold: f32,
    top_k: Option<usize>,
}

impl Decoder {
    /// Binds a decoder spec; `threshold` and `top_k` override the spec's defaults.
    pub fn new(
        spec: DecoderSpec,
        labels: Vec<String>,
        threshold: f32,
        top_k: Option<usize>,
    ) -> Decoder {
        Decoder {
            spec,
            labels,
            threshold,
            top_k,
        }
    }

    /// The score threshold in force.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Checks output shapes the model declares against what this decoder reads.
    /// `None` dimensions are unknown until run time.
    pub fn check_outputs(&self, shapes: &[Vec<Option<usize>>]) -> Result<()> {
        let classes = self.labels.len();
        let first = shapes
            .first()
            .ok_or_else(|| Error::ModelMismatch("model has no output".into()))?;
        match self.spec {
            DecoderSpec::Classification { .. } => {
                let width: Option<usize> =
                    first.iter().try_fold(1usize, |acc, d| d.map(|d| acc * d));
                if let Some(w) = width {
                    if w != classes {
                        return Err(Error::ModelMismatch(format!(
                            "classification output has {w} values, labels list {classes} classes"
                        )));
                    }
                }
            }
            DecoderSpec::Yolov5(_) => {
                let cols = 5 + classes;
                let ok = first.len() == 3
                    && first[0].is_none_or(|d| d == 1)
                    && first[2].is_none_or(|d| d == cols);
                if !ok {
                    return Err(Error::ModelMismatch(format!(
                        "YOLOv5 output should be [1, N, {cols}] for {classes} labels, got {first:?}"
                    )));
                }
            }
            DecoderSpec::Yolov8(_) => {
                let rows = 4 + classes;
                let ok = first.len() == 3
                    && first[0].is_none_or(|d| d == 1)
                    && (first[1].is_none_or(|d| d == rows) || first[2].is_none_or(|d| d == rows));
                if !ok {
                    return Err(Error::ModelMismatch(format!(
                        "YOLOv8 output should be [1, {rows}, N] for {classes} labels, got {first:?}"
                    )));
                }
            }
            DecoderSpec::Raw => {}
        }
        Ok(())
    }

    /// Decodes one image's outputs.
    pub fn decode(&self, mut outputs: Vec<OutputTensor>, t: &Transform) -> Result<Prediction> {
        match self.spec {
            DecoderSpec::Classification { softmax, top_k } => {
                let out = outputs
                    .first_mut()
                    .ok_or_else(|| Error::Inference("model returned no output".into()))?;
                if out.data.len() != self.labels.len() {
                    return Err(Error::ModelMismatch(format!(
                        "classification output has {} values, labels list {}",
                        out.data.len(),
                        self.labels.len()
                    )));
                }
                if softmax {
                    classification::softmax(&mut out.data);
                }
                Ok(Prediction::Classification(classification::top_k(
                    &out.data,
                    &self.labels,
                    self.top_k.unwrap_or(top_k),
                    self.threshold,
                )))
            }
            DecoderSpec::Yolov8(ref p) | DecoderSpec::Yolov5(ref p) => {
                let out = outputs
                    .first()
                    .ok_or_else(|| Error::Inference("model returned no output".into()))?;
                let head = if matches!(self.spec, DecoderSpec::Yolov5(_)) {
                    detection::yolov5_candidates
                } else {
                    detection::yolov8_candidates
                };
                let mut cands = head(out, self.labels.len(), self.threshold)?;
                detection::to_unit(&mut cands, t);
                let max = self.top_k.unwrap_or(p.max_detections);
                let kept = detection::nms(cands, p.nms_iou as f32, p.class_aware, max);
                Ok(Prediction::Detection(detection::label(kept, &self.labels)))
            }
            DecoderSpec::Raw => Ok(Prediction::Raw(outputs)),
        }
    }
}
