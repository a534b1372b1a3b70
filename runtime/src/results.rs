//! Typed results, with the field names of DESIGN.md (and of EasyEdge's SDKs).

use serde::{Deserialize, Serialize};

/// One class of a classification result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// Class index in the model output.
    pub index: usize,
    /// Class name.
    pub label: String,
    /// Probability in 0..1.
    pub confidence: f32,
}

/// One detected object; the box is in 0..1 of the original image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Class index.
    pub index: usize,
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

/// A raw model output, for tasks without a decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputTensor {
    /// Output name in the model graph.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// The result of one inference, by task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", content = "results", rename_all = "snake_case")]
pub enum Prediction {
    /// Best classes first.
    Classification(Vec<Classification>),
    /// Best boxes first.
    Detection(Vec<Detection>),
    /// Raw outputs.
    Raw(Vec<OutputTensor>),
}

impl Prediction {
    /// The classifications, if this is a classification result.
    pub fn classifications(&self) -> Option<&[Classification]> {
        match self {
            Prediction::Classification(c) => Some(c),
            _ => None,
        }
    }

    /// The detections, if this is a detection result.
    pub fn detections(&self) -> Option<&[Detection]> {
        match self {
            Prediction::Detection(d) => Some(d),
            _ => None,
        }
    }
}
