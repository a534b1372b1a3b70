//! Helpers shared by the binding tests: where cargo put the library and the CLI,
//! running programs with a clean environment, and comparing their results with
//! the `outpost` CLI's.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common;

/// `target/<profile>`: where cargo put the `outpost` CLI (built for the runtime's
/// own tests in the same workspace run).
pub fn build_dir() -> PathBuf {
    lib_dir().parent().unwrap().to_path_buf()
}

/// `target/<profile>/deps`, beside this test: where `cargo test` leaves
/// `liboutpost.so` and `liboutpost.a` (`cargo build` also copies them one up).
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().to_path_buf()
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a command with no `OUTPOST_*` settings from the caller's environment.
pub fn run(cmd: &mut Command) -> Output {
    for (k, _) in std::env::vars() {
        if k.starts_with("OUTPOST_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Installs the library into `prefix` with the install script users run.
pub fn install(prefix: &Path) {
    let lib = lib_dir();
    assert!(
        lib.join("liboutpost.so").is_file() && lib.join("liboutpost.a").is_file(),
        "no liboutpost.so/.a in {}",
        lib.display()
    );
    run_ok(
        Command::new("bash")
            .arg(root().join("ffi/install.sh"))
            .arg("--lib-dir")
            .arg(&lib)
            .arg(prefix),
    );
}

/// Configures and builds a CMake project against the installed prefix.
pub fn cmake_build(source: &Path, build: &Path, prefix: &Path, extra: &[&str]) {
    run_ok(
        Command::new("cmake")
            .arg("-S")
            .arg(source)
            .arg("-B")
            .arg(build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
            .args(extra),
    );
    run_ok(Command::new("cmake").arg("--build").arg(build));
}

/// `outpost infer --json` on one image: that image's `results`.
pub fn cli_results(package: &common::TestPackage, image: &Path) -> Value {
    let cli = build_dir().join("outpost");
    assert!(
        cli.is_file(),
        "no outpost CLI at {}: build it with cargo build -p outpost-runtime",
        cli.display()
    );
    let out = run_ok(
        Command::new(cli)
            .arg("infer")
            .arg(&package.path)
            .arg(image)
            .arg("--trusted-key")
            .arg(&package.key_dir)
            .args(["--threads", "1", "--json"]),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["error_code"], 0, "{v}");
    v[0]["results"].clone()
}

/// An example program's JSON for one image: `PROGRAM PACKAGE IMAGE KEY_DIR`.
pub fn example_results(mut program: Command, package: &common::TestPackage, image: &Path) -> Value {
    let out = run_ok(program.arg(&package.path).arg(image).arg(&package.key_dir));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    if let Some(code) = v.get("error_code") {
        assert_eq!(code, 0, "{v}");
    }
    v["results"].clone()
}

/// The same results: same indices and labels, and the same `f32` scores and
/// boxes (C prints them with `%.9g`, the CLI with the shortest exact form).
pub fn assert_same_results(c: &Value, rust: &Value, what: &str) {
    let (c, rust) = (c.as_array().unwrap(), rust.as_array().unwrap());
    assert!(!rust.is_empty(), "{what}: no results to compare");
    assert_eq!(c.len(), rust.len(), "{what}: count");
    for (a, b) in c.iter().zip(rust) {
        let keys = b.as_object().unwrap();
        assert_eq!(
            a.as_object().unwrap().len(),
            keys.len(),
            "{what}: {a} vs {b}"
        );
        for (k, bv) in keys {
            let av = &a[k];
            match bv {
                Value::Number(n) if k != "index" => assert_eq!(
                    av.as_f64().map(|x| x as f32),
                    n.as_f64().map(|x| x as f32),
                    "{what}: {k} of {a} vs {b}"
                ),
                _ => assert_eq!(av, bv, "{what}: {k}"),
            }
        }
    }
}

/// A generated file that is checked in must equal what its generator makes now;
/// `OUTPOST_BLESS=1` rewrites it instead. `how` says how to regenerate it.
pub fn check_generated(checked_in: &Path, generated: &[u8], how: &str) {
    if std::env::var_os("OUTPOST_BLESS").is_some() {
        std::fs::create_dir_all(checked_in.parent().unwrap()).unwrap();
        std::fs::write(checked_in, generated).unwrap();
        return;
    }
    let current = std::fs::read(checked_in).unwrap_or_default();
    assert!(
        current == generated,
        "{} is out of date: regenerate it with\n  {how}\nand commit it",
        checked_in.display()
    );
}
