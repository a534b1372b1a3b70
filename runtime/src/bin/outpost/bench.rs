//! `outpost bench`: load time, first inference, and per-stage medians, p90 and
//! peak memory. Timing runs are not disturbed by memory probes: peak RSS per
//! stage comes from one extra instrumented pass (Linux `clear_refs` + `VmHWM`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use outpost_runtime::backend::profile::{self, Profile};
use outpost_runtime::{Config, ImageInput, Predictor};
use serde::Serialize;

/// Timing of one stage.
#[derive(Debug, Serialize)]
pub struct StageReport {
    median_ms: f64,
    p90_ms: f64,
    /// Peak resident memory while the stage ran (MiB), where the OS tells.
    peak_rss_mb: Option<f64>,
}

/// The whole report; `--json` prints it as is.
#[derive(Debug, Serialize)]
pub struct Report {
    model: String,
    backend: String,
    precision: String,
    /// The package artifact that ran (`model.nnef.tar` when pre-optimised).
    artifact: String,
    threads: usize,
    image: String,
    runs: usize,
    load_ms: f64,
    first_ms: f64,
    total_median_ms: f64,
    stages: BTreeMap<&'static str, StageReport>,
    peak_rss_mb: Option<f64>,
    /// With `--profile`: the model stage, node by node.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<Profile>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Value at quantile `q` (nearest rank) of unsorted samples.
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn median(samples: &[f64]) -> f64 {
    profile::median(&mut samples.to_vec())
}

/// Peak RSS of this process in MiB (`VmHWM`), on Linux.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak RSS mark so the next reading covers only what follows.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn sample_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encoding a generated image in memory cannot fail");
    out.into_inner()
}

/// Runs the benchmark.
pub fn run(
    package: &Path,
    image: Option<&Path>,
    config: &Config,
    runs: usize,
    warmup: usize,
    profile: bool,
) -> Result<Report> {
    let bytes = match image {
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        None => sample_png(),
    };
    let started = Instant::now();
    let predictor = Predictor::open(package, config).map_err(super::coded)?;
    let load_ms = ms(started);
    let input = ImageInput::Encoded(&bytes);

    let started = Instant::now();
    predictor.infer(input).map_err(super::coded)?;
    let first_ms = ms(started);
    for _ in 0..warmup {
        predictor.infer(input).map_err(super::coded)?;
    }

    let mut times: [Vec<f64>; 4] = Default::default();
    let mut totals = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let rgb = predictor.decode(input).map_err(super::coded)?;
        let t1 = Instant::now();
        let prepared = predictor.preprocess(&rgb).map_err(super::coded)?;
        let transform = prepared.transform;
        let t2 = Instant::now();
        let outputs = predictor.run_model(prepared).map_err(super::coded)?;
        let t3 = Instant::now();
        predictor
            .postprocess(outputs, &transform)
            .map_err(super::coded)?;
        let t4 = Instant::now();
        for (i, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)].iter().enumerate() {
            times[i].push((*b - *a).as_secs_f64() * 1e3);
        }
        totals.push((t4 - t0).as_secs_f64() * 1e3);
    }

    // One instrumented pass: peak RSS per stage.
    let overall_peak = peak_rss_mb();
    let mut peaks: [Option<f64>; 4] = [None; 4];
    if reset_peak_rss() {
        let rgb = predictor.decode(input).map_err(super::coded)?;
        peaks[0] = peak_rss_mb();
        reset_peak_rss();
        let prepared = predictor.preprocess(&rgb).map_err(super::coded)?;
        let transform = prepared.transform;
        peaks[1] = peak_rss_mb();
        reset_peak_rss();
        let outputs = predictor.run_model(prepared).map_err(super::coded)?;
        peaks[2] = peak_rss_mb();
        reset_peak_rss();
        predictor
            .postprocess(outputs, &transform)
            .map_err(super::coded)?;
        peaks[3] = peak_rss_mb();
    }

    let profile = if profile {
        let rgb = predictor.decode(input).map_err(super::coded)?;
        let prepared = predictor.preprocess(&rgb).map_err(super::coded)?;
        predictor
            .profile_model(&prepared, runs)
            .map_err(super::coded)?
    } else {
        None
    };

    let names = ["decode", "preprocess", "model", "postprocess"];
    let stages = names
        .iter()
        .zip(times.iter().zip(peaks))
        .map(|(name, (t, peak))| {
            (
                *name,
                StageReport {
                    median_ms: round3(median(t)),
                    p90_ms: round3(quantile(t, 0.9)),
                    peak_rss_mb: peak.map(round3),
                },
            )
        })
        .collect();
    Ok(Report {
        model: predictor.manifest().model.name.clone(),
        backend: predictor.backend_name().to_string(),
        precision: predictor.precision().as_str().to_string(),
        artifact: predictor.artifact().to_string(),
        threads: predictor.settings().threads,
        image: image.map_or("generated 640x480 PNG".into(), |p| p.display().to_string()),
        runs,
        load_ms: round3(load_ms),
        first_ms: round3(first_ms),
        total_median_ms: round3(median(&totals)),
        stages,
        peak_rss_mb: overall_peak.map(round3),
        profile,
    })
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A readable table of the report.
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "model {} ({}, {}) on {} ({} threads), {} runs on {}\nload {:.1} ms, first inference {:.1} ms, total median {:.2} ms, peak RSS {}\n",
        r.model,
        r.precision,
        r.artifact,
        r.backend,
        r.threads,
        r.runs,
        r.image,
        r.load_ms,
        r.first_ms,
        r.total_median_ms,
        r.peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.1} MiB"))
    );
    out.push_str(&format!(
        "{:<12} {:>10} {:>10} {:>14}\n",
        "stage", "median ms", "p90 ms", "peak RSS MiB"
    ));
    for name in ["decode", "preprocess", "model", "postprocess"] {
        if let Some(s) = r.stages.get(name) {
            out.push_str(&format!(
                "{:<12} {:>10.3} {:>10.3} {:>14}\n",
                name,
                s.median_ms,
                s.p90_ms,
                s.peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.1}"))
            ));
        }
    }
    if let Some(p) = &r.profile {
        out.push_str(&format!(
            "\nmodel stage by operator (sum of node medians over {} runs; whole run {:.2} ms)\n{:<28} {:>6} {:>10} {:>7}\n",
            p.runs, p.total_ms, "operator", "nodes", "ms", "share"
        ));
        for op in &p.by_op {
            out.push_str(&format!(
                "{:<28} {:>6} {:>10.3} {:>6.1}%\n",
                op.op,
                op.nodes,
                op.ms,
                op.share * 100.0
            ));
        }
        out.push_str(&format!(
            "slowest nodes\n{:<48} {:<20} {:>10}\n",
            "node", "operator", "ms"
        ));
        for n in p.nodes.iter().take(PROFILE_TOP_NODES) {
            out.push_str(&format!("{:<48} {:<20} {:>10.3}\n", n.node, n.op, n.ms));
        }
    }
    out
}

/// Nodes listed by the text table under `--profile` (JSON has them all).
const PROFILE_TOP_NODES: usize = 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90() {
        let s: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(median(&s), 5.5);
        assert_eq!(quantile(&s, 0.9), 9.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }
}
