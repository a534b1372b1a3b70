//! Kernels Outpost adds to tract-linalg's routine table.
//!
//! tract's convolution ops ask `tract_linalg::routines` for an inner-loop kernel by
//! function (e.g. `depthwise_w`) and run the best one declared for this CPU. A kernel
//! declared here with `inventory::submit!` competes with tract's own on the same
//! terms (architecture first, then instruction-set level), so the op, its zone walk
//! and its threading stay tract's and only the inner loop changes.

pub mod depthwise_hwc;
pub mod depthwise_w;
pub mod direct_conv;
pub mod point_gemm;
pub mod qgemm;

use std::hash::{Hash, Hasher};

use tract_onnx::prelude::DatumType;
use tract_onnx::tract_core::tract_linalg::routines::{best_for, Func};

/// Names of the kernels tract will run on this CPU for the functions Outpost
/// provides. Calling it also keeps this module's registrations linked in.
pub fn active() -> Vec<(&'static str, &'static str)> {
    let isa = tract_onnx::tract_core::tract_linalg::isa::native();
    [(Func::DepthwiseW, "depthwise_w")]
        .into_iter()
        .map(|(func, label)| {
            let name = best_for(func, DatumType::F32, &isa).map_or("none", |r| r.name());
            (label, name)
        })
        .collect()
}

/// Whether two sets of packed `f32` weights are bit for bit the same (packed
/// weights compare and hash by bits, so that ops holding them stay `Eq` and
/// `Hash` for tract's graph patching).
pub(crate) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Hashes packed `f32` weights by their bits (see [`same_bits`]).
pub(crate) fn hash_bits<H: Hasher>(values: &[f32], state: &mut H) {
    values.iter().for_each(|v| v.to_bits().hash(state));
}
