//! Pre-optimised CPU artifacts: tract's decluttered graph, saved as NNEF with
//! tract's extensions ("tract-opl").
//!
//! Opening an ONNX model spends most of its time in tract's parsing, type analysis
//! and declutter passes, and they give the same graph on every device for a fixed
//! input shape. The trainer runs them once, at packaging time, and ships the result;
//! the device then only reads it and runs the target-specific optimisation.
//!
//! Beside tract's `graph.nnef` the archive carries the same document already
//! parsed ([`GRAPH_BINARY`], see [`super::nnef_binary`]): the device decodes that
//! instead of running tract's text parser. Archives without it (made by an older
//! trainer) or with anything else tract understands (quantisation files,
//! sub-models) are read by tract's own reader.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use tract_nnef::ast::{Identifier, ProtoModel};
use tract_nnef::framework::Nnef;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::format_err;
use tract_onnx_opl::WithOnnx;

use super::nnef_binary;
use crate::error::{Error, Result};

/// The archive entry holding the parsed `graph.nnef` in Outpost's binary form.
pub const GRAPH_BINARY: &str = "outpost.graph.bin";

/// tract's name for the NNEF document inside the archive.
const GRAPH_TEXT: &str = "graph.nnef";

/// tract's NNEF framework with the ONNX extensions, keeping names as they are
/// (ONNX names like `softmax_11.tmp_0` are not plain NNEF identifiers, and
/// outputs are reported by name).
fn framework() -> Nnef {
    let mut nnef = tract_nnef::nnef().with_onnx();
    nnef.allow_extended_identifier_syntax(true);
    nnef
}

/// Serialises a decluttered model to NNEF archive bytes, the same bytes for the
/// same model: tract's archive plus [`GRAPH_BINARY`].
pub fn write(model: &TypedModel) -> Result<Vec<u8>> {
    let mut model = model.clone();
    // Source-format metadata (an ONNX file's free-text properties) is not needed to
    // run, and tract's NNEF reader cannot parse every string it may hold.
    model.properties.clear();
    let save_err = |e: &dyn std::fmt::Display| {
        Error::ModelLoad(format!("cannot save the model as NNEF: {e:#}"))
    };
    let tract_tar = framework()
        .write_to_tar_with_config(&model, Vec::new(), false, true)
        .map_err(|e| save_err(&e))?;
    with_graph_binary(&tract_tar).map_err(|e| save_err(&e))
}

/// Copies tract's archive and appends the binary form of its `graph.nnef`, parsed
/// by tract's parser, so that the device gets exactly the document it would parse.
fn with_graph_binary(tract_tar: &[u8]) -> TractResult<Vec<u8>> {
    let mut out = tar::Builder::new(Vec::new());
    let mut graph = None;
    let mut mtime = 0;
    for entry in tar::Archive::new(tract_tar).entries()? {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        mtime = header.mtime()?;
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data)?;
        let path = entry.path()?.into_owned();
        if path == Path::new(GRAPH_TEXT) {
            graph = Some(String::from_utf8(data.clone())?);
        }
        // `append_data`, not `append`: it writes the GNU long-name record that
        // paths over 100 bytes need (tensor names like YOLOv8's are).
        out.append_data(&mut header, &path, data.as_slice())?;
    }
    let graph = graph.ok_or_else(|| format_err!("tract wrote no {GRAPH_TEXT}"))?;
    let doc = tract_nnef::ast::parse::parse_document(&graph)?;
    let binary = nnef_binary::encode(&doc);
    let mut header = tar::Header::new_gnu();
    header.set_path(GRAPH_BINARY)?;
    header.set_size(binary.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_cksum();
    out.append(&header, binary.as_slice())?;
    Ok(out.into_inner()?)
}

/// Reads NNEF archive bytes made by [`write`] (or by tract) back into a
/// decluttered model.
pub fn read(bytes: &[u8]) -> Result<TypedModel> {
    let read_err = |e: &dyn std::fmt::Display| {
        Error::ModelLoad(format!("not a readable tract NNEF artifact: {e:#}"))
    };
    if let Some(proto) = proto_model_from_binary(bytes).map_err(|e| read_err(&e))? {
        return framework()
            .model_for_proto_model(&proto)
            .map_err(|e| read_err(&e));
    }
    let mut reader: &[u8] = bytes;
    framework()
        .model_for_read(&mut reader)
        .map_err(|e| read_err(&e))
}

/// The archive's model from [`GRAPH_BINARY`] and its tensors, or `None` where
/// tract's reader is needed: no binary graph, or entries other than tensors.
fn proto_model_from_binary(bytes: &[u8]) -> TractResult<Option<ProtoModel>> {
    // Headers first (cheap: data is skipped), so that an archive tract must read
    // does not have its tensors decoded twice.
    let mut has_binary = false;
    for entry in tar::Archive::new(bytes).entries()? {
        let entry = entry?;
        let path = entry.path()?;
        let path = path.strip_prefix("./").unwrap_or(&path);
        if path == Path::new(GRAPH_BINARY) {
            has_binary = true;
        } else if path != Path::new(GRAPH_TEXT) && path.extension().is_none_or(|e| e != "dat") {
            return Ok(None);
        }
    }
    if !has_binary {
        return Ok(None);
    }
    let mut doc = None;
    let mut tensors = HashMap::new();
    for entry in tar::Archive::new(bytes).entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let path = path.strip_prefix("./").unwrap_or(&path);
        if path == Path::new(GRAPH_BINARY) {
            // The header's size is not trusted for the allocation.
            let mut data = Vec::with_capacity(entry.size().min(bytes.len() as u64) as usize);
            entry.read_to_end(&mut data)?;
            doc = Some(nnef_binary::decode(&data)?);
        } else if path == Path::new(GRAPH_TEXT) {
            // The same document as text, for tract's tools.
        } else {
            // A tensor (`.dat`): the only other kind the scan above lets through.
            let id = tract_nnef::resource::resource_path_to_id(path)?;
            let tensor = tract_nnef::tensors::read_tensor(&mut entry)?;
            if tensors.insert(Identifier(id), Arc::new(tensor)).is_some() {
                return Err(format_err!("the tensor {path:?} is in the archive twice"));
            }
        }
    }
    Ok(doc.map(|doc| ProtoModel {
        doc,
        tensors,
        quantization: None,
        resources: HashMap::new(),
    }))
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
