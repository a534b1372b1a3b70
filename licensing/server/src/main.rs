//! `outpost-license-server`: see `docs/license-server.md`.

use std::process::ExitCode;

use clap::Parser;
use outpost_license_server::cli::{init_logging, run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
