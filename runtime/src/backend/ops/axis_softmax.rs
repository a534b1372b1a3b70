//! Softmax over an axis that is not the last one, computed on contiguous rows.
//!
//! For a tensor seen as `[outer, n, inner]` (the softmax axis has length `n`), every
//! pass walks whole rows of `inner` contiguous values: the running maximum, then
//! `exp(x - max)` with the running sum, then the division. tract's generic path
//! visits each of the `outer × inner` strided columns through ndarray views
//! instead.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// Softmax along `axis` of an f32 tensor.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct AxisSoftmax {
    /// The softmax axis.
    pub axis: usize,
}

impl Op for AxisSoftmax {
    fn name(&self) -> StaticName {
        "OutpostAxisSoftmax".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("axis: {}", self.axis)])
    }

    op_as_typed_op!();
}

impl EvalOp for AxisSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let mut output = input.into_tensor();
        let shape = output.shape().to_vec();
        let mut plain = output.try_as_plain_ram_mut()?;
        softmax_axis(plain.as_slice_mut::<f32>()?, &shape, self.axis);
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for AxisSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].datum_type.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Below this, `exp` underflows f32's normal range: the result would be subnormal
/// or 0, and libm's `expf` takes its slower underflow path. Against the row
/// maximum's term of 1 such values are below 1e-38, so 0 is as exact as f32 can tell.
const EXP_UNDERFLOW: f32 = -87.0;

fn exp_or_zero(v: f32) -> f32 {
    if v < EXP_UNDERFLOW {
        0.0
    } else {
        v.exp()
    }
}

/// Softmax along `axis` of a row-major tensor of `shape`, in place.
pub fn softmax_axis(data: &mut [f32], shape: &[usize], axis: usize) {
    let n = shape.get(axis).copied().unwrap_or(1);
    let inner: usize = shape.iter().skip(axis + 1).product();
    if n == 0 || inner == 0 {
        return;
    }
    let mut max = vec![0f32; inner];
    let mut sum = vec![0f32; inner];
    for block in data.chunks_exact_mut(n * inner) {
        max.copy_from_slice(&block[..inner]);
        for row in block.chunks_exact(inner).skip(1) {
            for (m, &x) in max.iter_mut().zip(row) {
                *m = m.max(x);
            }
        }
        sum.fill(0.0);
        for row in block.chunks_exact_mut(inner) {
            for ((x, &m), s) in row.iter_mut().zip(&max).zip(sum.iter_mut()) {
                *x = exp_or_zero(*x - m);
                *s += *x;
            }
        }
        for s in sum.iter_mut() {
            *s = 1.0 / *s;
        }
        for row in block.chunks_exact_mut(inner) {
            for (x, &r) in row.iter_mut().zip(&sum) {
                *x *= r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax by definition, one strided column at a time, in f64.
    fn naive(data: &[f32], shape: &[usize], axis: usize) -> Vec<f32> {
        let n = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        let outer: usize = shape[..axis].iter().product();
        let mut out = vec![0f32; data.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| o * n * inner + k * inner + i;
                let max = (0..n).map(|k| data[at(k)] as f64).fold(f64::MIN, f64::max);
                let sum: f64 = (0..n).map(|k| (data[at(k)] as f64 - max).exp()).sum();
                for k in 0..n {
                    out[at(k)] = ((data[at(k)] as f64 - max).exp() / sum) as f32;
                }
            }
        }
        out
    }

    /// A small deterministic generator (xorshift), values in -20..20.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 40_000) as f32 / 1000.0 - 20.0
            })
            .collect()
    }

    #[test]
    fn matches_the_definition_on_odd_shapes_and_every_axis() {
        let shapes: [&[usize]; 6] = [
            &[1, 16, 4, 37],
            &[3, 5, 7],
            &[2, 1, 9],
            &[1, 7, 1],
            &[4, 3, 2, 5, 3],
            &[1, 16, 4, 8400],
        ];
        for (seed, shape) in shapes.iter().enumerate() {
            for axis in 0..shape.len() - 1 {
                let input = values(shape.iter().product(), seed as u64 + 7);
                let mut got = input.clone();
                softmax_axis(&mut got, shape, axis);
                let want = naive(&input, shape, axis);
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-6, "{shape:?} axis {axis}: {worst}");
            }
        }
    }

    #[test]
    fn values_far_below_the_maximum_become_zero_as_in_f64() {
        // Spreads of hundreds, as in YOLOv8's DFL head.
        let shape = [4usize, 16, 50];
        let input: Vec<f32> = (0..4 * 16 * 50)
            .map(|i| (i % 255) as f32 * 1.7 - 200.0)
            .collect();
        let mut got = input.clone();
        softmax_axis(&mut got, &shape, 1);
        let want = naive(&input, &shape, 1);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert!(got.contains(&0.0));
    }

    #[test]
    fn large_inputs_do_not_overflow() {
        let shape = [2, 3, 4];
        let mut data: Vec<f32> = (0..24).map(|i| 80.0 + i as f32 * 10.0).collect();
        softmax_axis(&mut data, &shape, 1);
        assert!(data.iter().all(|v| v.is_finite()));
        // Each column sums to 1.
        for o in 0..2 {
            for i in 0..4 {
                let s: f32 = (0..3).map(|k| data[o * 12 + k * 4 + i]).sum();
                assert!((s - 1.0).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn the_op_runs_in_a_tract_model_like_tract_softmax() {
        use tract_onnx::tract_core::ops::nn::Softmax;
        let shape = [1usize, 16, 4, 33];
        let input = tensor1(&values(shape.iter().product(), 3))
            .into_shape(&shape)
            .unwrap();
        let run = |op: Box<dyn TypedOp>| -> Tensor {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact(shape)).unwrap();
            let y = model.wire_node("softmax", op, &[x]).unwrap();
            model.select_output_outlets(&y).unwrap();
            let plan = model.into_runnable().unwrap();
            plan.run(tvec!(input.clone().into_tvalue()))
                .unwrap()
                .remove(0)
                .into_tensor()
        };
        let ours = run(Box::new(AxisSoftmax { axis: 1 }));
        let theirs = run(Box::new(Softmax {
            axes: tvec![1],
            ..Softmax::default()
        }));
        ours.close_enough(&theirs, Approximation::Close).unwrap();
    }
}
