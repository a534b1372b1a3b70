//! Backends run a model; they know nothing of tasks, images or HTTP.
//!
//! Each backend implements [`Backend`]. [`select`] resolves a [`BackendKind`]
//! to a backend this build has: `auto` falls back to `cpu`, and a backend that is
//! not compiled in keeps its name and answers "not available on this build".

pub mod cpu;
pub mod nnef_binary;
pub mod ops;
pub mod parallel;
pub mod precompiled;
pub mod profile;
pub mod qdq_weights;
pub mod routines;
pub mod simd_state;

use self::profile::Profile;
use crate::config::BackendKind;
use crate::error::{Error, Result};
use crate::results::OutputTensor;

/// A loaded model ready to run. Implementations are `Send + Sync`: one instance
/// serves concurrent callers.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Backend name, e.g. `cpu`.
    fn name(&self) -> &'static str;
    /// Output shapes as declared by the model; `None` where only known at run time.
    fn output_shapes(&self) -> &[Vec<Option<usize>>];
    /// Runs one input tensor of `shape`, returning every output as f32.
    fn run(&self, shape: &[usize], data: Vec<f32>) -> Result<Vec<OutputTensor>>;
    /// Times each node over `runs` runs of one input; `None` where the backend
    /// cannot say.
    fn profile(&self, _shape: &[usize], _data: &[f32], _runs: usize) -> Result<Option<Profile>> {
        Ok(None)
    }
}

/// The backend that will serve `kind` on this build, or why none can.
pub fn select(kind: BackendKind) -> Result<BackendKind> {
    match kind {
        BackendKind::Cpu => Ok(BackendKind::Cpu),
        BackendKind::Auto => {
            tracing::info!("backend auto: no GPU or NPU backend in this build, using cpu");
            Ok(BackendKind::Cpu)
        }
        other => Err(Error::BackendUnavailable(other.as_str().to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_cpu_and_missing_backends_say_so() {
        assert_eq!(select(BackendKind::Auto).unwrap(), BackendKind::Cpu);
        assert_eq!(select(BackendKind::Cpu).unwrap(), BackendKind::Cpu);
        let err = select(BackendKind::Gpu).unwrap_err();
        assert_eq!(err.code(), 4001);
        assert!(err.to_string().contains("gpu"));
    }
}
