//! `outpost-trainer`: the workstation CLI.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use outpost_runtime::package::manifest::{DecoderSpec, Preprocess, Task};
use outpost_trainer::{build_package, keys, PackageRequest};

#[derive(Parser)]
#[command(
    name = "outpost-trainer",
    version,
    about = "Turn an ONNX model into a signed Outpost package"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    Classification,
    Detection,
    Raw,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new Ed25519 signing key pair (private.key, public.key) into a directory.
    Keygen {
        /// Directory for the key pair.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a model and write a signed .opk package.
    Package {
        /// The ONNX model.
        #[arg(long)]
        model: PathBuf,
        /// Class names, one per line, in output order.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// What the model does.
        #[arg(long, value_enum)]
        task: TaskArg,
        /// JSON file holding the `preprocess` object.
        #[arg(long)]
        preprocess: PathBuf,
        /// JSON file holding the `decoder` object (default: the task's default).
        #[arg(long)]
        decoder: Option<PathBuf>,
        /// Key directory (or private.key file) from `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Output package path.
        #[arg(long)]
        out: PathBuf,
        /// Model name (default: the model file name, or its folder's for model.onnx).
        #[arg(long)]
        name: Option<String>,
        /// Model version.
        #[arg(long = "model-version", default_value = "1.0.0")]
        model_version: String,
        /// Recommended score threshold (default: the decoder's).
        #[arg(long)]
        threshold: Option<f64>,
    },
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid {what} object", path.display()))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG_LEVEL")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Keygen { out } => {
            let id = keys::keygen(&out)?;
            println!(
                "wrote {}/private.key and public.key (key id {id})",
                out.display()
            );
            println!("keep private.key secret; ship public.key to devices");
        }
        Command::Package {
            model,
            labels,
            task,
            preprocess,
            decoder,
            key,
            out,
            name,
            model_version,
            threshold,
        } => {
            let task = match task {
                TaskArg::Classification => Task::Classification,
                TaskArg::Detection => Task::Detection,
                TaskArg::Raw => Task::Raw,
            };
            let preprocess: Preprocess = read_json(&preprocess, "preprocess")?;
            let decoder: Option<DecoderSpec> =
                decoder.map(|p| read_json(&p, "decoder")).transpose()?;
            let key = keys::load_signing_key(&key)?;
            let request = PackageRequest {
                model,
                labels,
                task,
                preprocess,
                decoder,
                name,
                version: model_version,
                threshold,
            };
            let bytes = build_package(&request, &key)
                .with_context(|| format!("cannot package {}", request.model.display()))?;
            write_atomically(&out, &bytes)?;
            println!("wrote {} ({} bytes)", out.display(), bytes.len());
        }
    }
    Ok(())
}

/// Writes to a temporary file beside `path`, then renames, so a reader never sees half a package.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
