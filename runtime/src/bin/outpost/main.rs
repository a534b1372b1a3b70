//! `outpost`: the device CLI (info, infer, bench, license).

mod bench;
mod license;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use outpost_runtime::package::manifest::Precision;
use outpost_runtime::package::{Package, TrustedKeys};
use outpost_runtime::{BackendKind, Config, ImageInput, Prediction, Predictor};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "outpost",
    version,
    about = "Run signed Outpost model packages on this device"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Settings shared by every command; each also has an `OUTPOST_*` variable.
#[derive(Args, Clone)]
struct Common {
    /// Public key file or key directory trusted to sign packages (repeatable).
    #[arg(long = "trusted-key", global = true)]
    trusted_keys: Vec<PathBuf>,
    /// CPU threads (default: OUTPOST_THREADS, else the number of cores, at most 8).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Backend: auto, cpu, gpu, npu.
    #[arg(long, global = true)]
    backend: Option<BackendKind>,
    /// Model precision: fp32 or int8 (default: the package's).
    #[arg(long, global = true)]
    precision: Option<Precision>,
    /// Serial number of a licensed package (default: OUTPOST_SERIAL, else any
    /// installed licence for the model).
    #[arg(long, global = true)]
    serial: Option<String>,
    /// Licence directory (default: OUTPOST_LICENSE_DIR, else ~/.outpost/licenses).
    #[arg(long = "license-dir", global = true)]
    license_dir: Option<PathBuf>,
    /// App package name or bundle id, for product-line licences (default: OUTPOST_APP_ID).
    #[arg(long = "app-id", global = true)]
    app_id: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a package and print its manifest summary and artifacts.
    Info {
        /// Package file or directory.
        package: PathBuf,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Run a package on images and print the results.
    Infer {
        /// Package file or directory.
        package: PathBuf,
        /// Images (JPEG, PNG, BMP).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Score threshold 0..1.
        #[arg(long)]
        threshold: Option<f32>,
        /// Most results per image.
        #[arg(long = "top-k")]
        top_k: Option<usize>,
        /// EasyEdge-style JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Time load, first inference and each stage; report medians, p90 and peak memory.
    Bench {
        /// Package file or directory.
        package: PathBuf,
        /// Image to use (default: a generated 640x480 picture).
        image: Option<PathBuf>,
        /// Timed runs after warm-up.
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Untimed warm-up runs.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Also time the model node by node (as many runs again) and show where
        /// its time goes, per operator and per node.
        #[arg(long)]
        profile: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Licences: what is installed, and installing licence files.
    License {
        #[command(subcommand)]
        action: LicenseAction,
    },
}

#[derive(Subcommand)]
enum LicenseAction {
    /// List installed licences: models, kind, expiry, and whether each is valid here.
    Status {
        /// Also say whether this package may open, and why not.
        #[arg(long)]
        package: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Activate a serial online for a package and install the licence.
    Activate {
        /// The package the licence is for (it names the vendor, product and keys).
        #[arg(long)]
        package: PathBuf,
        /// Activation server (default: OUTPOST_LICENSE_SERVER, else the package's).
        #[arg(long)]
        server: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Write an offline activation request (JSON) for the vendor to turn into a licence.
    Request {
        /// The package the licence is for.
        #[arg(long)]
        package: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Install a licence file (from offline activation) into the licence directory.
    Import {
        /// The licence file.
        file: PathBuf,
        /// Refuse the file unless it opens this package on this device.
        #[arg(long)]
        package: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

impl Common {
    fn config(&self) -> Config {
        Config {
            threads: self.threads,
            backend: self.backend,
            precision: self.precision,
            trusted_keys: (!self.trusted_keys.is_empty()).then(|| self.trusted_keys.clone()),
            serial: self.serial.clone(),
            license_dir: self.license_dir.clone(),
            app_id: self.app_id.clone(),
            ..Config::default()
        }
    }
}

fn init_logging(config: &Config) {
    let level = config
        .resolve()
        .map(|s| s.log_level.as_str())
        .unwrap_or("warn");
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(std::io::stderr)
        .init();
}

/// Turns a runtime error into a message that keeps its stable code.
fn coded(e: outpost_runtime::Error) -> anyhow::Error {
    anyhow::anyhow!("error {}: {e}", e.code())
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info {
            package,
            json,
            common,
        } => {
            let config = common.config();
            init_logging(&config);
            info(&package, &config, json)
        }
        Command::Infer {
            package,
            images,
            threshold,
            top_k,
            json,
            common,
        } => {
            let config = Config {
                threshold,
                top_k,
                ..common.config()
            };
            init_logging(&config);
            infer(&package, &images, &config, json)
        }
        Command::Bench {
            package,
            image,
            runs,
            warmup,
            profile,
            json,
            common,
        } => {
            let config = common.config();
            init_logging(&config);
            let report = bench::run(
                &package,
                image.as_deref(),
                &config,
                runs.max(1),
                warmup,
                profile,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", bench::table(&report));
            }
            Ok(())
        }
        Command::License { action } => match action {
            LicenseAction::Status {
                package,
                json,
                common,
            } => {
                let config = common.config();
                init_logging(&config);
                license::status(&config, package.as_deref(), json)
            }
            LicenseAction::Activate {
                package,
                server,
                common,
            } => {
                let config = Config {
                    license_server: server,
                    ..common.config()
                };
                init_logging(&config);
                license::activate(&config, &package)
            }
            LicenseAction::Request { package, common } => {
                let config = common.config();
                init_logging(&config);
                license::request(&config, &package)
            }
            LicenseAction::Import {
                file,
                package,
                common,
            } => {
                let config = common.config();
                init_logging(&config);
                license::import(&config, &file, package.as_deref())
            }
        },
    }
}

fn info(path: &Path, config: &Config, as_json: bool) -> Result<()> {
    let settings = config.resolve().map_err(coded)?;
    let trusted = TrustedKeys::load(&settings.trusted_keys).map_err(coded)?;
    let package = Package::open(path, &trusted).map_err(coded)?;
    // `info` is how a person checks a package: hash every artifact, not only the
    // ones a run would read.
    package.verify_artifacts().map_err(coded)?;
    let m = package.manifest();
    if as_json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(());
    }
    let input = m.input();
    println!(
        "package     {} (verified, signed by key {})",
        path.display(),
        package.key_id()
    );
    println!("model       {} {}", m.model.name, m.model.version);
    println!("task        {}", m.task.as_str());
    println!("format      v{}", m.format_version);
    println!("input       {} {:?}", input.name, input.shape);
    println!(
        "preprocess  {} {:?} {:?} mean {:?} std {:?}",
        serde_json::to_string(&input.preprocess.resize)?,
        input.preprocess.color,
        input.preprocess.layout,
        input.preprocess.mean,
        input.preprocess.std
    );
    println!("decoder     {}", serde_json::to_string(&m.decoder)?);
    if let Some(t) = m.threshold {
        println!("threshold   {t}");
    }
    println!(
        "precision   {} by default",
        m.default_precision.unwrap_or(Precision::Fp32).as_str()
    );
    match &m.license {
        None => println!("licence     none (open model)"),
        Some(l) => println!(
            "licence     required: vendor {}, product {}{}, {} server key(s){}",
            l.vendor,
            l.product_id,
            l.edition
                .as_deref()
                .map(|e| format!(", edition {e}"))
                .unwrap_or_default(),
            l.keys.len(),
            l.server
                .as_deref()
                .map(|s| format!(", activation server {s}"))
                .unwrap_or_default()
        ),
    }
    let preview: Vec<&str> = m.labels.iter().take(5).map(String::as_str).collect();
    println!(
        "labels      {} ({}{})",
        m.labels.len(),
        preview.join(", "),
        if m.labels.len() > 5 { ", ..." } else { "" }
    );
    println!("artifacts");
    for a in &m.artifacts {
        println!(
            "  {:<20} {:>12} bytes  {:?} {} {}  sha256 {}",
            a.file,
            a.size,
            a.format,
            a.target,
            a.precision.as_str(),
            a.sha256
        );
    }
    // The trainer's report (from `outpost-trainer compile`), signed with the package.
    if let Ok(report) = package.artifact("report.json") {
        let summary = serde_json::from_slice::<serde_json::Value>(&report)
            .ok()
            .and_then(|v| v["verdict"]["summary"].as_str().map(str::to_string))
            .unwrap_or_else(|| "report.json holds no verdict".into());
        println!("report      {summary} (report.html has the details)");
    }
    Ok(())
}

fn infer(package: &Path, images: &[PathBuf], config: &Config, as_json: bool) -> Result<()> {
    let predictor = Predictor::open(package, config).map_err(coded)?;
    let mut outputs = Vec::new();
    let mut failures = 0;
    for path in images {
        let started = Instant::now();
        let result = std::fs::read(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .and_then(|bytes| {
                predictor
                    .infer(ImageInput::Encoded(&bytes))
                    .map_err(coded_keep)
            });
        let cost_ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(prediction) => {
                if as_json {
                    outputs.push(json!({
                        "image": path.display().to_string(),
                        "error_code": 0,
                        "results": results_json(&prediction),
                        "cost_ms": (cost_ms * 1000.0).round() / 1000.0,
                    }));
                } else {
                    print_table(path, &prediction, cost_ms);
                }
            }
            Err(e) => {
                failures += 1;
                let code = e
                    .downcast_ref::<CodedError>()
                    .map(|c| c.0.code())
                    .unwrap_or(1005);
                if as_json {
                    outputs.push(json!({
                        "image": path.display().to_string(),
                        "error_code": code,
                        "message": format!("{e:#}"),
                    }));
                } else {
                    eprintln!("{}: error {code}: {e:#}", path.display());
                }
            }
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&outputs)?);
    }
    if failures > 0 {
        anyhow::bail!("{failures} of {} images failed", images.len());
    }
    Ok(())
}

/// Wraps a runtime error so its code survives `anyhow`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CodedError(outpost_runtime::Error);

fn coded_keep(e: outpost_runtime::Error) -> anyhow::Error {
    CodedError(e).into()
}

fn results_json(p: &Prediction) -> serde_json::Value {
    match p {
        Prediction::Classification(c) => json!(c),
        Prediction::Detection(d) => json!(d),
        Prediction::Raw(t) => json!(t
            .iter()
            .map(|t| json!({"name": t.name, "shape": t.shape}))
            .collect::<Vec<_>>()),
    }
}

fn print_table(path: &Path, p: &Prediction, cost_ms: f64) {
    println!("{} ({cost_ms:.1} ms)", path.display());
    match p {
        Prediction::Classification(c) => {
            println!("  {:>5}  {:<30} {:>10}", "index", "label", "confidence");
            for r in c {
                println!("  {:>5}  {:<30} {:>10.4}", r.index, r.label, r.confidence);
            }
        }
        Prediction::Detection(d) => {
            println!(
                "  {:>5}  {:<16} {:>10}  {:>6} {:>6} {:>6} {:>6}",
                "index", "label", "confidence", "x1", "y1", "x2", "y2"
            );
            for r in d {
                println!(
                    "  {:>5}  {:<16} {:>10.4}  {:>6.3} {:>6.3} {:>6.3} {:>6.3}",
                    r.index, r.label, r.confidence, r.x1, r.y1, r.x2, r.y2
                );
            }
            if d.is_empty() {
                println!("  (no objects above the threshold)");
            }
        }
        Prediction::Raw(t) => {
            for o in t {
                println!("  output {} shape {:?}", o.name, o.shape);
            }
        }
    }
}
