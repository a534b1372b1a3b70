//! Layer-by-layer comparison of a quantised model with its FP32 original: the
//! cosine similarity and relative error of each quantised node's output over the
//! calibration set, worst first. It points at the layers that lose accuracy.

use indicatif::ProgressBar;
use serde::Serialize;

use super::qdq::Target;
use super::Probe;
use crate::Result;

/// How far one node's INT8 output is from FP32.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerError {
    /// Node name.
    pub node: String,
    /// Op type.
    pub op: String,
    /// Output tensor compared.
    pub tensor: String,
    /// Cosine similarity of all outputs over the set (1 = same direction).
    pub cosine: f64,
    /// ‖int8 − fp32‖ / ‖fp32‖ over the set.
    pub relative_error: f64,
}

#[derive(Default, Clone, Copy)]
struct Sums {
    dot: f64,
    aa: f64,
    bb: f64,
    diff: f64,
}

/// Compares each target's first output in `int8` with `fp32` on `inputs`.
pub fn compare_layers(
    fp32: &[u8],
    int8: &[u8],
    shape: [usize; 4],
    inputs: &[Vec<f32>],
    targets: &[Target],
    outputs: &[String],
    bar: &ProgressBar,
) -> Result<Vec<LayerError>> {
    let a = Probe::new(fp32, shape, outputs)?;
    let b = Probe::new(int8, shape, outputs)?;
    let mut sums = vec![Sums::default(); outputs.len()];
    for data in inputs {
        let mut reference: Vec<Vec<f32>> = vec![Vec::new(); outputs.len()];
        a.run(data, |i, v| reference[i] = v.to_vec())?;
        b.run(data, |i, v| {
            let s = &mut sums[i];
            for (x, y) in reference[i].iter().zip(v) {
                let (x, y) = (f64::from(*x), f64::from(*y));
                s.dot += x * y;
                s.aa += x * x;
                s.bb += y * y;
                s.diff += (x - y) * (x - y);
            }
        })?;
        bar.inc(2);
    }
    let mut layers: Vec<LayerError> = targets
        .iter()
        .zip(outputs)
        .zip(&sums)
        .map(|((t, tensor), s)| LayerError {
            node: t.name.clone(),
            op: t.op.clone(),
            tensor: tensor.clone(),
            cosine: if s.aa > 0.0 && s.bb > 0.0 {
                s.dot / (s.aa.sqrt() * s.bb.sqrt())
            } else {
                1.0
            },
            relative_error: if s.aa > 0.0 {
                (s.diff / s.aa).sqrt()
            } else {
                s.diff.sqrt()
            },
        })
        .collect();
    layers.sort_by(|x, y| x.cosine.total_cmp(&y.cosine).then(x.node.cmp(&y.node)));
    Ok(layers)
}
