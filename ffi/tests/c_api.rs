//! The C API from C: the library is installed with `ffi/install.sh` into a
//! temporary prefix, `examples/c` and `ffi/tests/c` are built there with CMake
//! (`find_package(Outpost)`) and gcc, as a user's project would build them, and
//! their output is checked against the `outpost` CLI on the shared models.
//!
//! Needs `cmake`, `pkg-config` and a C compiler (`.ci/run` installs them).

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod support;

use std::process::Command;

use serde_json::Value;
use support::{
    assert_same_results, cli_results, cmake_build, example_results, install, root, run, run_ok,
};

#[test]
fn c_programs_built_with_cmake_and_pkg_config_match_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    install(&prefix);
    for file in [
        "include/outpost.h",
        "lib/pkgconfig/outpost.pc",
        "lib/cmake/Outpost/OutpostConfig.cmake",
        "lib/cmake/Outpost/OutpostConfigVersion.cmake",
    ] {
        assert!(prefix.join(file).is_file(), "{file} not installed");
    }
    let shared_build = tmp.path().join("shared");
    let static_build = tmp.path().join("static");
    let example = root().join("examples/c");
    cmake_build(&example, &shared_build, &prefix, &[]);
    cmake_build(&example, &static_build, &prefix, &["-DOUTPOST_STATIC=ON"]);
    let shared_exe = shared_build.join("classify");
    let static_exe = static_build.join("classify");

    // The statically linked program needs no liboutpost.so at run time, and its
    // stack is not executable (tract's assembly has no .note.GNU-stack).
    let ldd = run_ok(Command::new("ldd").arg(&static_exe));
    assert!(
        !String::from_utf8_lossy(&ldd.stdout).contains("liboutpost"),
        "static example links liboutpost.so"
    );
    let headers = run_ok(Command::new("readelf").arg("-lW").arg(&static_exe));
    let stack = String::from_utf8_lossy(&headers.stdout)
        .lines()
        .find(|l| l.contains("GNU_STACK"))
        .map(str::to_string)
        .expect("a GNU_STACK header");
    assert!(!stack.contains("RWE"), "executable stack: {stack}");

    let images = common::shared().join("images");
    let classifier = common::efficientnet_package();
    for name in ["chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg"] {
        let image = images.join(name);
        let rust = cli_results(&classifier, &image);
        assert_same_results(
            &example_results(Command::new(&shared_exe), &classifier, &image),
            &rust,
            name,
        );
        if name == "chelsea.jpg" {
            assert_same_results(
                &example_results(Command::new(&static_exe), &classifier, &image),
                &rust,
                "static",
            );
        }
    }

    let detector = common::yolov8_package();
    for name in ["astronaut.jpg", "coffee.jpg"] {
        let image = images.join(name);
        assert_same_results(
            &example_results(Command::new(&shared_exe), &detector, &image),
            &cli_results(&detector, &image),
            name,
        );
    }

    // pkg-config, as a Makefile would use it.
    let pc = run_ok(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "outpost"])
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
    );
    let flags = String::from_utf8(pc.stdout).unwrap();
    let pc_exe = tmp.path().join("classify_pc");
    run_ok(
        Command::new("cc")
            .arg(example.join("classify.c"))
            .arg("-o")
            .arg(&pc_exe)
            .args(flags.split_whitespace())
            .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display())),
    );
    let small = common::cls_package();
    let text = root().join("examples/images/text_upside_down.png");
    let c = example_results(Command::new(&pc_exe), &small, &text);
    assert_eq!(c[0]["label"], "180", "{c}");
    assert_same_results(&c, &cli_results(&small, &text), "pkg-config build");

    // An error comes back as its code and message, in JSON, exit status 1.
    let out = run(Command::new(&shared_exe)
        .arg(&small.path)
        .arg(root().join("examples/c/classify.c"))
        .arg(&small.key_dir));
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error_code"], 1101, "{v}");
    assert!(v["message"].as_str().unwrap().contains("decode"), "{v}");
}

#[test]
fn every_entry_point_survives_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    install(&prefix);
    let build = tmp.path().join("build");
    cmake_build(&root().join("ffi/tests/c"), &build, &prefix, &[]);
    let small = common::cls_package();
    let licenses = tmp.path().join("licenses");
    std::fs::create_dir_all(&licenses).unwrap();
    let out = run(Command::new(build.join("abuse"))
        .arg(&small.path)
        .arg(&small.key_dir)
        .arg(root().join("examples/images/text_upside_down.png"))
        .arg(&licenses)
        .env("HOME", tmp.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "abuse failed: {}", out.status);
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
