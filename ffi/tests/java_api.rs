//! The Java API (`android/`) on the host JVM: `javac` compiles the `ai.outpost`
//! classes, their JUnit tests and `examples/java/Classify.java`; JUnit runs the
//! tests against the host build of liboutpost; `Classify` must give the `outpost`
//! CLI's results on the shared models.
//!
//! Needs a JDK (`javac`, `java`) and JUnit 5's console launcher (Debian's `junit5`,
//! or the jar named by `OUTPOST_JUNIT_JAR`); `.ci/run` installs them.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{assert_same_results, cli_results, example_results, lib_dir, root, run, run_ok};

fn junit_jar() -> PathBuf {
    std::env::var_os("OUTPOST_JUNIT_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/share/java/junit-platform-console-standalone.jar".into())
}

fn java_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "java"))
        .collect();
    files.sort();
    files
}

/// Compiles the Java API, its tests and the example into `classes`.
fn compile(classes: &Path) {
    let jar = junit_jar();
    assert!(jar.is_file(), "no JUnit console jar at {}", jar.display());
    let root = root();
    let mut sources = java_sources(&root.join("android/src/main/java/ai/outpost"));
    sources.extend(java_sources(&root.join("android/src/test/java/ai/outpost")));
    sources.push(root.join("examples/java/Classify.java"));
    run_ok(
        Command::new("javac")
            .args(["-Xlint:all", "-Werror", "-encoding", "UTF-8", "-d"])
            .arg(classes)
            .arg("-cp")
            .arg(&jar)
            .args(&sources),
    );
}

fn java(classes: &Path) -> Command {
    let mut cmd = Command::new("java");
    cmd.arg(format!("-Djava.library.path={}", lib_dir().display()))
        .arg("-Xcheck:jni")
        .arg("-cp")
        .arg(classes);
    cmd
}

#[test]
fn junit_tests_of_the_java_api_pass_on_the_host_jvm() {
    let tmp = tempfile::tempdir().unwrap();
    let classes = tmp.path().join("classes");
    compile(&classes);
    let classifier = common::efficientnet_package();
    let detector = common::yolov8_package();
    let small = common::cls_package();
    let reference =
        common::load_json(&common::shared().join("reference/efficientnet_lite0_top5.json"));
    let top1 = reference["chelsea.jpg"][0]["index"].to_string();
    let props = [
        ("outpost.classifier", classifier.path.display().to_string()),
        ("outpost.detector", detector.path.display().to_string()),
        ("outpost.small", small.path.display().to_string()),
        ("outpost.keys", small.key_dir.display().to_string()),
        (
            "outpost.images",
            common::shared().join("images").display().to_string(),
        ),
        (
            "outpost.text",
            root()
                .join("examples/images/text_upside_down.png")
                .display()
                .to_string(),
        ),
        ("outpost.chelsea.top1", top1),
    ];
    // (-jar ignores the -cp that java() adds; --class-path below names the classes.)
    let mut cmd = java(&classes);
    for (k, v) in props {
        cmd.arg(format!("-D{k}={v}"));
    }
    let out = run(cmd
        .arg("-jar")
        .arg(junit_jar())
        .arg("--class-path")
        .arg(&classes)
        .args(["--select-package", "ai.outpost", "--disable-banner"])
        .args(["--details", "tree", "--disable-ansi-colors"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "JUnit failed: {}", out.status);
    assert!(stdout.contains("9 tests successful"), "{stdout}");
    assert!(stdout.contains("0 tests failed"), "{stdout}");
}

#[test]
fn the_java_example_gives_the_cli_results() {
    let tmp = tempfile::tempdir().unwrap();
    let classes = tmp.path().join("classes");
    compile(&classes);
    let images = common::shared().join("images");
    let classifier = common::efficientnet_package();
    for name in ["chelsea.jpg", "rocket.jpg"] {
        let image = images.join(name);
        let mut program = java(&classes);
        program.arg("Classify");
        assert_same_results(
            &example_results(program, &classifier, &image),
            &cli_results(&classifier, &image),
            name,
        );
    }
    let detector = common::yolov8_package();
    let image = images.join("astronaut.jpg");
    let mut program = java(&classes);
    program.arg("Classify");
    assert_same_results(
        &example_results(program, &detector, &image),
        &cli_results(&detector, &image),
        "yolov8 astronaut",
    );
}
