//! Offline activation: request files in, licence files out, straight on the database
//! and keys (no HTTP). The same rules as `POST /v1/activate` apply.
//!
//! - [`activate_bytes`]: one request file (the `offline-activate` subcommand).
//! - [`bulk_activate`]: many request files into one tar archive holding
//!   `<request-file-stem>.license.json` for each licence issued and `report.json`
//!   listing every request, the refused ones with their code and message.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use outpost_licensing::license_file::LicenseFile;
use outpost_licensing::protocol::{ActivationRequest, ErrorBody, MAX_REQUEST_BYTES};
use outpost_licensing::unix_now;
use serde::Serialize;

use crate::audit::Actor;
use crate::codes::{self, error_body};
use crate::db::Db;
use crate::keys::KeyRing;
use crate::rules::activation::{self, record_bad_request};

/// Failure of a bulk run as a whole (not of one request).
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// An input or the archive cannot be read or written.
    #[error("{file}: {reason}")]
    Io {
        /// The file.
        file: String,
        /// The operating-system reason.
        reason: String,
    },
    /// No request file was given or found.
    #[error("no request files (give .json files or directories holding them)")]
    NoInputs,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BulkError + '_ {
    move |e| BulkError::Io {
        file: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Reads at most `MAX_REQUEST_BYTES + 1` bytes of a request file.
pub fn read_request_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    f.take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Applies the activation rules to one request body. Every attempt is audited.
pub async fn activate_bytes(
    db: &Db,
    keys: &KeyRing,
    bytes: &[u8],
    actor: &Actor,
) -> Result<LicenseFile, ErrorBody> {
    if bytes.len() > MAX_REQUEST_BYTES {
        let message = format!("request larger than {MAX_REQUEST_BYTES} bytes");
        record_bad_request(db, actor, codes::TOO_LARGE, &message).await;
        return Err(ErrorBody {
            error_code: codes::TOO_LARGE,
            message,
            detail: 0,
        });
    }
    let req = match ActivationRequest::parse(bytes) {
        Ok(r) => r,
        Err(e) => {
            let body = error_body(&e);
            record_bad_request(db, actor, body.error_code, &body.message).await;
            return Err(body);
        }
    };
    match activation::activate(db, keys, &req, actor, unix_now()).await {
        Ok(g) => Ok(g.license),
        Err(e) => Err(e.body()),
    }
}

/// One request of a bulk run, as listed in `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ReportEntry {
    /// The request file.
    pub file: String,
    /// 0 when a licence was issued, else the error code.
    pub error_code: u32,
    /// The error message, or the licence file's name in the archive.
    pub message: String,
    /// The licence's activation id (issued requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<String>,
}

/// What a bulk run did; also written as `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BulkReport {
    /// Requests read.
    pub requests: usize,
    /// Licences issued.
    pub issued: usize,
    /// Requests refused.
    pub refused_count: usize,
    /// Refused requests with their code and message.
    pub refused: Vec<ReportEntry>,
    /// Issued licences: request file and archive entry.
    pub licensed: Vec<ReportEntry>,
}

/// The request files named by `inputs`: files as given, directories' `*.json` files
/// in name order.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, BulkError> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(io_err(input))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    if files.is_empty() {
        return Err(BulkError::NoInputs);
    }
    Ok(files)
}

/// A unique archive entry name for a request file.
fn entry_name(path: &Path, used: &mut HashSet<String>) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty() && s != "report")
        .unwrap_or_else(|| "request".into());
    let mut name = format!("{stem}.license.json");
    let mut n = 2;
    while !used.insert(name.clone()) {
        name = format!("{stem}-{n}.license.json");
        n += 1;
    }
    name
}

fn append(
    tar: &mut tar::Builder<std::fs::File>,
    name: &str,
    bytes: &[u8],
    archive: &Path,
) -> Result<(), BulkError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(unix_now());
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, bytes)
        .map_err(io_err(archive))
}

/// Activates every request and writes the archive (atomically: a temporary file
/// renamed into place). Refusals do not stop the run.
pub async fn bulk_activate(
    db: &Db,
    keys: &KeyRing,
    inputs: &[PathBuf],
    archive: &Path,
) -> Result<BulkReport, BulkError> {
    let files = collect_inputs(inputs)?;
    let actor = Actor::cli("bulk-activate");
    let dir = archive
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let tmp = tempfile_in(dir)?;
    let mut tar = tar::Builder::new(tmp.reopen().map_err(io_err(archive))?);
    let mut used = HashSet::new();
    let mut refused = Vec::new();
    let mut licensed = Vec::new();
    for file in &files {
        let shown = file.display().to_string();
        let outcome = match read_request_file(file) {
            Ok(bytes) => activate_bytes(db, keys, &bytes, &actor).await,
            Err(e) => Err(ErrorBody {
                error_code: codes::BAD_REQUEST,
                message: format!("cannot read the request file: {e}"),
                detail: 0,
            }),
        };
        match outcome {
            Ok(license) => {
                let name = entry_name(file, &mut used);
                append(&mut tar, &name, &license.to_json(), archive)?;
                licensed.push(ReportEntry {
                    file: shown,
                    error_code: 0,
                    message: name,
                    activation_id: Some(license.claims.activation_id.clone()),
                });
            }
            Err(body) => refused.push(ReportEntry {
                file: shown,
                error_code: body.error_code,
                message: body.message,
                activation_id: None,
            }),
        }
    }
    let report = BulkReport {
        requests: files.len(),
        issued: licensed.len(),
        refused_count: refused.len(),
        refused,
        licensed,
    };
    let mut json = serde_json::to_vec_pretty(&report).unwrap_or_default();
    json.push(b'\n');
    append(&mut tar, "report.json", &json, archive)?;
    let f = tar.into_inner().map_err(io_err(archive))?;
    f.sync_all().map_err(io_err(archive))?;
    tmp.persist(archive).map_err(|e| io_err(archive)(e.error))?;
    Ok(report)
}

fn tempfile_in(dir: &Path) -> Result<tempfile::NamedTempFile, BulkError> {
    tempfile::Builder::new()
        .prefix(".bulk-")
        .suffix(".tar.tmp")
        .tempfile_in(dir)
        .map_err(io_err(dir))
}
