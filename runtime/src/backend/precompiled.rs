//! Pre-optimised CPU artifacts: tract's decluttered graph, saved as NNEF with
//! tract's extensions ("tract-opl").
//!
//! Opening an ONNX model spends most of its time in tract's parsing, type analysis
//! and declutter passes, and they give the same graph on every device for a fixed
//! input shape. The trainer runs them once, at packaging time, and ships the result;
//! the device then only reads it and runs the target-specific optimisation.

use tract_nnef::framework::Nnef;
use tract_onnx::prelude::*;
use tract_onnx_opl::WithOnnx;

use crate::error::{Error, Result};

/// tract's NNEF framework with the ONNX extensions, keeping names as they are
/// (ONNX names like `softmax_11.tmp_0` are not plain NNEF identifiers, and
/// outputs are reported by name).
fn framework() -> Nnef {
    let mut nnef = tract_nnef::nnef().with_onnx();
    nnef.allow_extended_identifier_syntax(true);
    nnef
}

/// Serialises a decluttered model to NNEF archive bytes, the same bytes for the
/// same model.
pub fn write(model: &TypedModel) -> Result<Vec<u8>> {
    let mut model = model.clone();
    // Source-format metadata (an ONNX file's free-text properties) is not needed to
    // run, and tract's NNEF reader cannot parse every string it may hold.
    model.properties.clear();
    framework()
        .write_to_tar_with_config(&model, Vec::new(), false, true)
        .map_err(|e| Error::ModelLoad(format!("cannot save the model as NNEF: {e:#}")))
}

/// Reads NNEF archive bytes made by [`write`] back into a decluttered model.
pub fn read(bytes: &[u8]) -> Result<TypedModel> {
    let mut reader: &[u8] = bytes;
    framework()
        .model_for_read(&mut reader)
        .map_err(|e| Error::ModelLoad(format!("not a readable tract NNEF artifact: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_load_error_not_a_panic() {
        for bytes in [&b""[..], b"\x1f\x8b", b"graph.nnef", &[0u8; 1024][..]] {
            let err = read(bytes).unwrap_err();
            assert_eq!(err.code(), Error::ModelLoad(String::new()).code());
        }
    }
}
