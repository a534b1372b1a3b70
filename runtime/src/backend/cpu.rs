//! The CPU backend: tract, with Outpost's ops, optionally on several threads
//! (Outpost's spinning pool for its own ops, tract's rayon pool for tract's).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ndarray::{ArrayD, IxDyn};
use tract_onnx::tract_core::runtime::RunOptions;

use std::time::Instant;

use super::parallel::{self, SpinPool};
use super::precompiled;
use super::profile::Profile;
use super::simd_state;
use super::Backend;
use crate::error::{Error, Result};
use crate::results::OutputTensor;

/// A tract plan for one fixed input shape.
#[derive(Debug)]
pub struct CpuBackend {
    plan: Arc<TypedRunnableModel>,
    output_names: Vec<String>,
    output_shapes: Vec<Vec<Option<usize>>>,
    /// The pool for Outpost's ops, when there is more than one thread.
    pool: Option<SpinPool>,
}

impl CpuBackend {
    /// Parses ONNX bytes, fixes the input to `shape` (f32), optimises, and plans
    /// with `threads` worker threads (1 runs on the calling thread).
    pub fn load(onnx: &[u8], input_name: &str, shape: &[usize], threads: usize) -> Result<Self> {
        let mut phases = LoadPhases::start();
        let decluttered = decluttered_from_onnx(onnx, input_name, shape, &mut phases)?;
        CpuBackend::from_decluttered(decluttered, threads, phases)
    }

    /// Loads a pre-optimised artifact made by [`precompile`] for the same input
    /// name and shape: only the device-specific optimisation is left to do.
    pub fn load_precompiled(
        nnef: &[u8],
        input_name: &str,
        shape: &[usize],
        threads: usize,
    ) -> Result<Self> {
        let mut phases = LoadPhases::start();
        let model = precompiled::read(nnef)?;
        phases.mark("read");
        let inputs = model.input_outlets().map_err(load_err)?;
        let [input] = inputs else {
            return Err(Error::ModelMismatch(format!(
                "the pre-optimised model has {} inputs; exactly one image input is supported",
                inputs.len()
            )));
        };
        let actual = &model.node(input.node).name;
        if actual != input_name {
            return Err(Error::ModelMismatch(format!(
                "the pre-optimised model's input is named {actual:?}, the manifest says {input_name:?}"
            )));
        }
        let fact = model.outlet_fact(*input).map_err(load_err)?;
        if fact.datum_type != f32::datum_type() || fact.shape.as_concrete() != Some(shape) {
            return Err(Error::ModelMismatch(format!(
                "the pre-optimised model takes {fact:?}, the manifest says f32 {shape:?}"
            )));
        }
        CpuBackend::from_decluttered(model, threads, phases)
    }

    /// Replaces ops with Outpost's kernels, runs tract's code generation for this
    /// CPU, and plans.
    fn from_decluttered(
        mut decluttered: TypedModel,
        threads: usize,
        mut phases: LoadPhases,
    ) -> Result<Self> {
        let mut output_names = Vec::new();
        let mut output_shapes = Vec::new();
        for (i, outlet) in decluttered
            .output_outlets()
            .map_err(load_err)?
            .iter()
            .enumerate()
        {
            output_names.push(
                decluttered
                    .outlet_label(*outlet)
                    .map(str::to_string)
                    .unwrap_or_else(|| decluttered.node(outlet.node).name.clone()),
            );
            let fact = decluttered.output_fact(i).map_err(load_err)?;
            output_shapes.push(
                fact.shape
                    .iter()
                    .map(|d| d.to_i64().ok().and_then(|v| usize::try_from(v).ok()))
                    .collect(),
            );
        }
        tracing::debug!(kernels = ?super::routines::active(), "tract inner-loop kernels");
        let mut replaced = super::ops::rewrite_decluttered(&mut decluttered).map_err(load_err)?;
        // `optimize`, not `into_optimized`: the graph is decluttered already, and a
        // second declutter pass costs up to 40% of the load for nothing.
        decluttered.optimize().map_err(load_err)?;
        let mut optimized = decluttered;
        phases.mark("optimize");
        replaced += super::ops::rewrite(&mut optimized).map_err(load_err)?;
        if replaced > 0 {
            tracing::debug!(replaced, "ops replaced by Outpost kernels");
        }
        let options = RunOptions {
            executor: (threads > 1).then(|| {
                tract_onnx::tract_core::tract_linalg::multithread::Executor::multithread(threads)
            }),
            ..RunOptions::default()
        };
        let plan = optimized
            .into_runnable_with_options(&options)
            .map_err(load_err)?;
        let pool = match threads > 1 {
            true => Some(SpinPool::new(threads).map_err(|e| {
                Error::ModelLoad(format!("cannot start {threads} inference threads: {e}"))
            })?),
            false => None,
        };
        phases.mark("plan");
        tracing::debug!(phases = %phases, "model loaded");
        Ok(CpuBackend {
            plan,
            output_names,
            output_shapes,
            pool,
        })
    }
}

/// Runs, once and ahead of time, the device-independent part of [`CpuBackend::load`]
/// (parsing, type analysis, declutter) for this input name and shape, and returns
/// the result as a tract NNEF artifact for [`CpuBackend::load_precompiled`].
pub fn precompile(onnx: &[u8], input_name: &str, shape: &[usize]) -> Result<Vec<u8>> {
    let model = decluttered_from_onnx(onnx, input_name, shape, &mut LoadPhases::start())?;
    precompiled::write(&model)
}

/// Parses ONNX bytes, checks the single input's name, fixes it to `shape` (f32),
/// and declutters.
fn decluttered_from_onnx(
    onnx: &[u8],
    input_name: &str,
    shape: &[usize],
    phases: &mut LoadPhases,
) -> Result<TypedModel> {
    let onnx_framework = tract_onnx::onnx();
    let mut proto = onnx_framework
        .proto_model_for_read(&mut &onnx[..])
        .map_err(|e| Error::ModelLoad(format!("{e:#}")))?;
    if let Some(graph) = proto.graph.as_mut() {
        super::qdq_weights::dequantize_weights(graph);
    }
    let mut model = onnx_framework
        .model_for_proto_model(&proto)
        .map_err(|e| Error::ModelLoad(format!("{e:#}")))?;
    // The model holds its own copy of every initializer from here on.
    drop(proto);
    let inputs = model
        .input_outlets()
        .map_err(|e| Error::ModelLoad(format!("{e:#}")))?
        .to_vec();
    if inputs.len() != 1 {
        return Err(Error::ModelMismatch(format!(
            "the model has {} inputs; exactly one image input is supported",
            inputs.len()
        )));
    }
    let actual = model.node(inputs[0].node).name.clone();
    if actual != input_name {
        return Err(Error::ModelMismatch(format!(
            "the model's input is named {actual:?}, the manifest says {input_name:?}"
        )));
    }
    model
        .set_input_fact(0, f32::fact(shape).into())
        .map_err(|e| Error::ModelLoad(format!("{e:#}")))?;
    phases.mark("parse");
    let typed = model.into_typed().map_err(|e| {
        Error::ModelMismatch(format!("the model does not accept input {shape:?}: {e:#}"))
    })?;
    phases.mark("type");
    let decluttered = typed.into_decluttered().map_err(load_err)?;
    phases.mark("declutter");
    Ok(decluttered)
}

/// Milliseconds spent in each load phase, for the debug log.
struct LoadPhases {
    last: Instant,
    done: Vec<(&'static str, f64)>,
}

impl LoadPhases {
    fn start() -> Self {
        LoadPhases {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.done
            .push((phase, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }
}

impl std::fmt::Display for LoadPhases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (phase, ms)) in self.done.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{phase}={ms:.1}ms")?;
        }
        Ok(())
    }
}

fn tensor(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
    Ok(ArrayD::from_shape_vec(IxDyn(shape), data)
        .map_err(|e| Error::Inference(e.to_string()))?
        .into_tensor())
}

fn load_err(e: TractError) -> Error {
    Error::ModelLoad(format!("{e:#}"))
}

fn infer_err(e: TractError) -> Error {
    Error::Inference(format!("{e:#}"))
}

/// Runs the plan node by node with a clean vector state before each node (see
/// [`simd_state`]) and after the last; adds each node's milliseconds to
/// `node_ms[node id]` when given.
fn run_nodes(
    state: &mut TypedSimpleState,
    pool: Option<&SpinPool>,
    input: Tensor,
    mut node_ms: Option<&mut [f64]>,
) -> Result<TVec<TValue>> {
    let outputs = parallel::scope(pool, || {
        state.run_plan_with_eval(tvec!(input.into_tvalue()), |ctx, op_state, node, inputs| {
            simd_state::clear_upper_state();
            let started = node_ms.is_some().then(Instant::now);
            let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
            if let (Some(ms), Some(t)) = (node_ms.as_deref_mut(), started) {
                ms[node.id] += t.elapsed().as_secs_f64() * 1e3;
            }
            out
        })
    })
    .map_err(infer_err);
    simd_state::clear_upper_state();
    outputs
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn output_shapes(&self) -> &[Vec<Option<usize>>] {
        &self.output_shapes
    }

    fn profile(&self, shape: &[usize], data: &[f32], runs: usize) -> Result<Option<Profile>> {
        let model = self.plan.model();
        let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); model.nodes.len()];
        let mut totals = Vec::new();
        let mut state = self.plan.spawn().map_err(infer_err)?;
        for _ in 0..runs.max(1) {
            let input = tensor(shape, data.to_vec())?;
            let mut run: Vec<f64> = vec![0.0; model.nodes.len()];
            let started = Instant::now();
            run_nodes(&mut state, self.pool.as_ref(), input, Some(&mut run))?;
            totals.push(started.elapsed().as_secs_f64() * 1e3);
            for (samples, ms) in per_node.iter_mut().zip(run) {
                samples.push(ms);
            }
        }
        // Inputs and constants take no time; leave them out.
        let order = self.plan.order_without_consts();
        let (names, samples): (Vec<_>, Vec<_>) = order
            .iter()
            .filter(|&&id| {
                !model
                    .input_outlets()
                    .is_ok_and(|i| i.iter().any(|o| o.node == id))
            })
            .map(|&id| {
                let node = model.node(id);
                (
                    (node.name.clone(), node.op().name().to_string()),
                    std::mem::take(&mut per_node[id]),
                )
            })
            .unzip();
        Ok(Some(Profile::from_samples(names, samples, totals)))
    }

    fn run(&self, shape: &[usize], data: Vec<f32>) -> Result<Vec<OutputTensor>> {
        let input = tensor(shape, data)?;
        let mut state = self.plan.spawn().map_err(infer_err)?;
        let outputs = run_nodes(&mut state, self.pool.as_ref(), input, None)?;
        outputs
            .into_iter()
            .zip(&self.output_names)
            .map(|(value, name)| {
                let t = value
                    .cast_to::<f32>()
                    .map_err(|e| Error::Inference(format!("{e:#}")))?;
                let data = t
                    .to_plain_array_view::<f32>()
                    .map_err(|e| Error::Inference(format!("{e:#}")))?
                    .iter()
                    .copied()
                    .collect();
                Ok(OutputTensor {
                    name: name.clone(),
                    shape: t.shape().to_vec(),
                    data,
                })
            })
            .collect()
    }
}

/// What an ONNX model declares about its inputs, read without optimising it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredInput {
    /// Input name.
    pub name: String,
    /// Declared shape; `None` for a symbolic dimension.
    pub shape: Vec<Option<usize>>,
}

/// Parses ONNX bytes and lists the inputs it declares.
pub fn declared_inputs(onnx: &[u8]) -> Result<Vec<DeclaredInput>> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])
        .map_err(load_err)?;
    let outlets = model.input_outlets().map_err(load_err)?.to_vec();
    outlets
        .iter()
        .enumerate()
        .map(|(i, outlet)| {
            let fact = model.input_fact(i).map_err(load_err)?;
            let shape = fact
                .shape
                .dims()
                .map(|d| {
                    tract_onnx::tract_hir::infer::Factoid::concretize(d)
                        .and_then(|d| d.to_i64().ok())
                        .and_then(|v| usize::try_from(v).ok())
                })
                .collect();
            Ok(DeclaredInput {
                name: model.node(outlet.node).name.clone(),
                shape,
            })
        })
        .collect()
}
