//! Prometheus metrics, rendered as text on `GET /metrics`.
//!
//! - `outpost_activations_total{code}`: activation attempts by outcome (0 = licence
//!   issued, else the error code).
//! - `outpost_http_requests_total{route,status}`: requests by route template (never
//!   the raw path, which may hold a serial) and HTTP status.
//! - `outpost_http_request_duration_seconds{route}`: latency histogram.
//! - `outpost_rate_limited_total{scope}`: requests refused by a rate limit.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    activations: BTreeMap<u32, u64>,
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    rate_limited: BTreeMap<&'static str, u64>,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Counts one activation attempt with its outcome code (0 = success).
    pub fn activation(&self, code: u32) {
        self.with(|m| *m.activations.entry(code).or_default() += 1);
    }

    /// Counts one request refused by a rate limit (`ip` or `serial`).
    pub fn rate_limited(&self, scope: &'static str) {
        self.with(|m| *m.rate_limited.entry(scope).or_default() += 1);
    }

    /// Counts one finished request.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        self.with(|m| {
            *m.requests.entry((route.to_string(), status)).or_default() += 1;
            let h = m.latency.entry(route.to_string()).or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        });
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.with(|m| {
            let _ = writeln!(
                out,
                "# HELP outpost_activations_total Activation attempts by outcome code (0 = licence issued)."
            );
            let _ = writeln!(out, "# TYPE outpost_activations_total counter");
            for (code, n) in &m.activations {
                let _ = writeln!(out, "outpost_activations_total{{code=\"{code}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "# HELP outpost_http_requests_total HTTP requests by route and status."
            );
            let _ = writeln!(out, "# TYPE outpost_http_requests_total counter");
            for ((route, status), n) in &m.requests {
                let _ = writeln!(
                    out,
                    "outpost_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP outpost_http_request_duration_seconds HTTP request latency."
            );
            let _ = writeln!(out, "# TYPE outpost_http_request_duration_seconds histogram");
            for (route, h) in &m.latency {
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "outpost_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "outpost_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "outpost_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "outpost_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
            let _ = writeln!(
                out,
                "# HELP outpost_rate_limited_total Requests refused by a rate limit."
            );
            let _ = writeln!(out, "# TYPE outpost_rate_limited_total counter");
            for (scope, n) in &m.rate_limited {
                let _ = writeln!(out, "outpost_rate_limited_total{{scope=\"{scope}\"}} {n}");
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.activation(0);
        m.activation(2002);
        m.activation(0);
        m.request("/v1/activate", 200, Duration::from_millis(3));
        m.rate_limited("ip");
        let text = m.render();
        assert!(text.contains("outpost_activations_total{code=\"0\"} 2"));
        assert!(text.contains("outpost_activations_total{code=\"2002\"} 1"));
        assert!(text.contains(
            "outpost_http_request_duration_seconds_bucket{route=\"/v1/activate\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "outpost_http_request_duration_seconds_bucket{route=\"/v1/activate\",le=\"0.0025\"} 0"
        ));
        assert!(text.contains("outpost_rate_limited_total{scope=\"ip\"} 1"));
    }
}
