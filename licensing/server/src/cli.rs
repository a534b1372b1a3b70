//! The command line: `serve`, `rotate-key`, `public-key`, `offline-activate`,
//! `bulk-activate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::api::{self, AppState};
use crate::audit::Actor;
use crate::auth::AdminTokens;
use crate::db::Db;
use crate::keys::KeyRing;
use crate::limits::{RateConfig, RateLimits};
use crate::metrics::Metrics;
use crate::offline;

/// Default database: a SQLite file in the working directory.
pub const DEFAULT_DB: &str = "sqlite://outpost-license.db";
/// Default key directory.
pub const DEFAULT_KEYS: &str = "outpost-license-keys";

/// Outpost licence activation server.
#[derive(Debug, Parser)]
#[command(name = "outpost-license-server", version, about)]
pub struct Cli {
    /// Write logs (to stderr) as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// Log filter, e.g. `info` or `outpost_license_server=debug`.
    #[arg(long, global = true, env = "OUTPOST_LOG", default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(ServeArgs),
    /// Make a new signing key current (restart running servers to use it).
    RotateKey(KeysArgs),
    /// Print the root public key (hex), creating the keys if absent.
    PublicKey(KeysArgs),
    /// Turn one offline request file into a licence file.
    OfflineActivate(OfflineArgs),
    /// Activate many request files into one tar archive with a report.
    BulkActivate(BulkArgs),
}

/// Where the database is.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Database URL: `sqlite://FILE` (created if missing) or `postgres://USER:PASS@HOST/DB`.
    #[arg(long, env = "OUTPOST_LICENSE_DB", default_value = DEFAULT_DB)]
    pub db: String,
    /// Largest number of database connections.
    #[arg(long, default_value_t = 10)]
    pub max_connections: u32,
}

/// Where the keys are.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Key directory (created with a root key on first use).
    #[arg(long, env = "OUTPOST_LICENSE_KEYS", default_value = DEFAULT_KEYS)]
    pub keys: PathBuf,
}

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Database.
    #[command(flatten)]
    pub db: DbArgs,
    /// Keys.
    #[command(flatten)]
    pub keys: KeysArgs,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "OUTPOST_LICENSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// File of admin tokens, one per line (also: env OUTPOST_ADMIN_TOKENS, comma-separated).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Activation requests per second per client IP (0 = no limit).
    #[arg(long, default_value_t = 20.0)]
    pub rate_per_ip: f64,
    /// Burst of activation requests per client IP (default: twice --rate-per-ip).
    #[arg(long)]
    pub rate_burst: Option<f64>,
    /// Refused activation attempts per minute per serial (0 = no limit); granted
    /// activations do not count.
    #[arg(long, default_value_t = 10.0)]
    pub rate_per_serial: f64,
}

/// `offline-activate` options.
#[derive(Debug, Args)]
pub struct OfflineArgs {
    /// Database.
    #[command(flatten)]
    pub db: DbArgs,
    /// Keys.
    #[command(flatten)]
    pub keys: KeysArgs,
    /// The request file written by `outpost license request`.
    pub request: PathBuf,
    /// Where to write the licence (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `bulk-activate` options.
#[derive(Debug, Args)]
pub struct BulkArgs {
    /// Database.
    #[command(flatten)]
    pub db: DbArgs,
    /// Keys.
    #[command(flatten)]
    pub keys: KeysArgs,
    /// The tar archive to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Request files, or directories of `*.json` request files.
    #[arg(required = true)]
    pub requests: Vec<PathBuf>,
}

/// Sets up `tracing` to stderr, as text or JSON lines.
pub fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = if cli.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("warning: cannot set up logging: {e}");
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve(a).await,
            Command::RotateKey(k) => {
                let id = KeyRing::rotate(&k.keys)?;
                let ring = KeyRing::load(&k.keys)?;
                println!(
                    "new current key {id} (endorsed by root key {}); restart the servers to use it",
                    ring.root().id
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::PublicKey(k) => {
                let ring = KeyRing::open_or_create(&k.keys)?;
                println!("{}", ring.root_public_hex());
                Ok(ExitCode::SUCCESS)
            }
            Command::OfflineActivate(a) => offline_activate(a).await,
            Command::BulkActivate(a) => bulk_activate(a).await,
        }
    })
}

async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let keys = KeyRing::open_or_create(&a.keys.keys).context("cannot load the signing keys")?;
    let env_tokens = std::env::var("OUTPOST_ADMIN_TOKENS").ok();
    let tokens = AdminTokens::load(a.admin_token_file.as_deref(), env_tokens.as_deref())?;
    if tokens.is_empty() {
        tracing::warn!("no admin token configured: the admin API refuses every request");
    }
    let db = Db::connect(&a.db.db, a.db.max_connections)
        .await
        .context("cannot open the database")?;
    let rate = RateConfig {
        per_ip: a.rate_per_ip,
        ip_burst: a.rate_burst.unwrap_or(a.rate_per_ip * 2.0),
        per_serial_per_minute: a.rate_per_serial,
    };
    let state = Arc::new(AppState {
        db: db.clone(),
        keys,
        limits: RateLimits::new(rate),
        metrics: Metrics::default(),
        tokens,
    });
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    tracing::info!(%addr, backend = ?db.backend(), key_id = %state.keys.current().id, "serving");
    api::serve(listener, state, api::shutdown_signal()).await?;
    db.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn open(db: &DbArgs, keys: &Path) -> anyhow::Result<(Db, KeyRing)> {
    let ring = KeyRing::open_or_create(keys).context("cannot load the signing keys")?;
    let db = Db::connect(&db.db, db.max_connections)
        .await
        .context("cannot open the database")?;
    Ok((db, ring))
}

async fn offline_activate(a: OfflineArgs) -> anyhow::Result<ExitCode> {
    let bytes = offline::read_request_file(&a.request)
        .with_context(|| format!("cannot read {}", a.request.display()))?;
    let (db, keys) = open(&a.db, &a.keys.keys).await?;
    let result = offline::activate_bytes(&db, &keys, &bytes, &Actor::cli("offline-activate")).await;
    db.close().await;
    match result {
        Ok(license) => {
            let json = license.to_json();
            match &a.out {
                Some(path) => {
                    std::fs::write(path, &json)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "wrote {} (expires {})",
                        path.display(),
                        outpost_licensing::format_time(license.claims.expires_at)
                    );
                }
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&json)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(body) => {
            eprintln!("error {}: {}", body.error_code, body.message);
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn bulk_activate(a: BulkArgs) -> anyhow::Result<ExitCode> {
    let (db, keys) = open(&a.db, &a.keys.keys).await?;
    let report = offline::bulk_activate(&db, &keys, &a.requests, &a.out).await;
    db.close().await;
    let report = report?;
    println!(
        "{} requests: {} licences issued, {} refused; wrote {}",
        report.requests,
        report.issued,
        report.refused_count,
        a.out.display()
    );
    for r in &report.refused {
        println!(
            "  refused {}: error {}: {}",
            r.file, r.error_code, r.message
        );
    }
    Ok(ExitCode::SUCCESS)
}
