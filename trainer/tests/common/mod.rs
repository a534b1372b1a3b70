//! Helpers shared by the trainer's end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared`, relative to the workspace root.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// Runs `outpost-trainer` with two CPU threads.
pub fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost-trainer"))
        .args(args)
        .env("OUTPOST_THREADS", "2")
        .output()
        .expect("outpost-trainer runs")
}
