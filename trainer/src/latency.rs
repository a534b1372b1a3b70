//! Model latency on this machine: the median of repeated runs of the CPU backend,
//! the same engine the device runs.

use std::time::Instant;

use outpost_runtime::backend::cpu::CpuBackend;
use outpost_runtime::backend::Backend;

use crate::Result;

/// Runs before timing starts (page faults, caches, thread start-up).
const WARMUP_RUNS: usize = 2;

/// Median milliseconds of `runs` inferences of `onnx` on `input` (after a warm-up).
pub fn median_ms(
    onnx: &[u8],
    input_name: &str,
    shape: &[usize],
    input: &[f32],
    threads: usize,
    runs: usize,
) -> Result<f64> {
    let backend = CpuBackend::load(onnx, input_name, shape, threads)?;
    let mut times = Vec::with_capacity(runs);
    for i in 0..WARMUP_RUNS + runs.max(1) {
        let data = input.to_vec();
        let start = Instant::now();
        backend.run(shape, data)?;
        if i >= WARMUP_RUNS {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The CPU model and core count, for reports ("AMD EPYC 7B13, 2 cores, x86_64").
pub fn machine_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {cores} cores, {}", std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    #[test]
    fn machine_description_names_the_architecture() {
        let d = super::machine_description();
        assert!(d.ends_with(std::env::consts::ARCH), "{d}");
        assert!(d.contains(" cores, "), "{d}");
    }
}
