//! `report.html`: one self-contained page (inline CSS and SVG, no script, no
//! network), written as well-formed XHTML so tests can parse it.

use std::fmt::Write;

use super::{metric_label, Report};
use crate::evaluate::Evaluation;

/// Escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222;padding:0 1em}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}\
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.verdict{padding:1em;border-radius:.4em;font-size:1.1em;font-weight:600}\
.good{background:#e3f4e1;border:1px solid #5a5}.bad{background:#fbe3e1;border:1px solid #c55}\
.note{color:#666;font-size:.9em}code{font-size:.95em}";

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

fn row(out: &mut String, cells: &[String]) {
    out.push_str("<tr>");
    for (i, c) in cells.iter().enumerate() {
        if i == 0 {
            let _ = write!(out, "<th>{c}</th>");
        } else {
            let _ = write!(out, "<td class=\"n\">{c}</td>");
        }
    }
    out.push_str("</tr>\n");
}

/// The metric rows shared by FP32 and INT8.
fn metric_rows(out: &mut String, fp32: &Evaluation, int8: &Evaluation) {
    let rows: Vec<(&str, f64, f64)> = match (fp32, int8) {
        (Evaluation::Classification(a), Evaluation::Classification(b)) => {
            vec![("top1", a.top1, b.top1), ("top5", a.top5, b.top5)]
        }
        (Evaluation::Detection(a), Evaluation::Detection(b)) => vec![
            ("map50", a.map50, b.map50),
            ("map50_95", a.map50_95, b.map50_95),
        ],
        _ => Vec::new(),
    };
    for (name, a, b) in rows {
        row(
            out,
            &[
                metric_label(name).to_string(),
                pct(a),
                pct(b),
                format!("{:+.2}", (b - a) * 100.0),
            ],
        );
    }
}

/// A horizontal bar per layer: relative error against FP32, worst first; layers
/// kept in FP32 in a second colour.
fn sensitivity_chart(out: &mut String, r: &Report) {
    const ROW: usize = 18;
    const LABEL: usize = 330;
    const BAR: f64 = 380.0;
    let max = r
        .layers
        .iter()
        .map(|l| l.relative_error)
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let height = ROW * r.layers.len() + 24;
    let _ = writeln!(
        out,
        "<svg width=\"{w}\" height=\"{height}\" role=\"img\" aria-label=\"per-layer relative error\" font-size=\"11\" font-family=\"monospace\">",
        w = LABEL + BAR as usize + 170
    );
    let _ = writeln!(
        out,
        "<text x=\"{LABEL}\" y=\"12\" fill=\"#666\">relative error against FP32 (longer is worse; orange: kept in FP32)</text>"
    );
    for (i, l) in r.layers.iter().enumerate() {
        let y = 20 + i * ROW;
        let width = (l.relative_error / max * BAR).max(1.0);
        let kept = l.precision == "fp32";
        let name = if l.node.chars().count() > 44 {
            let tail: String = l.node.chars().rev().take(43).collect();
            format!("…{}", tail.chars().rev().collect::<String>())
        } else {
            l.node.clone()
        };
        let _ = writeln!(
            out,
            "<g><title>{node} ({op}): cosine {cos:.5}, relative error {err:.4}{k}</title>\
<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{name}</text>\
<rect x=\"{LABEL}\" y=\"{y}\" width=\"{width:.1}\" height=\"{h}\" fill=\"{fill}\"/>\
<text x=\"{vx:.1}\" y=\"{ty}\" fill=\"#444\">{err:.4}{k}</text></g>",
            node = escape(&l.node),
            op = escape(&l.op),
            cos = l.cosine,
            err = l.relative_error,
            k = if kept { " (kept FP32)" } else { "" },
            lx = LABEL - 6,
            ty = y + 12,
            name = escape(&name),
            h = ROW - 4,
            fill = if kept { "#d98c2b" } else { "#4a7fc1" },
            vx = LABEL as f64 + width + 4.0,
        );
    }
    out.push_str("</svg>\n");
}

/// Renders the report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let title = format!(
        "INT8 report: {} {}",
        escape(&r.model.name),
        escape(&r.model.version)
    );
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\
<meta name=\"viewport\" content=\"width=device-width\"/><title>{title}</title>\
<style>{STYLE}</style></head><body>\n<h1>{title}</h1>"
    );
    let v = &r.verdict;
    let _ = writeln!(
        out,
        "<p id=\"verdict\" class=\"verdict {}\">{}</p>",
        if v.good_enough { "good" } else { "bad" },
        escape(&v.summary)
    );
    let _ = writeln!(
        out,
        "<p id=\"cost-summary\">INT8 is {:.1} MB, {:.0}% of FP32, and runs at {:.2}× the speed of FP32 on this machine ({:.2} ms against {:.2} ms). {} of {} quantisable layers stay in FP32.</p>",
        r.size.int8_bytes as f64 / 1e6,
        r.size.ratio * 100.0,
        r.latency.int8_speedup,
        r.latency.int8_ms,
        r.latency.fp32_ms,
        r.kept_fp32.len(),
        r.layers.len() + r.kept_fp32.iter().filter(|k| !r.layers.iter().any(|l| l.node == k.node)).count()
    );
    let _ = writeln!(
        out,
        "<p class=\"note\">{} task, measured on {} images of <code>{}</code> ({}). Trainer {}.</p>",
        escape(&r.model.task),
        r.dataset.images,
        escape(&r.dataset.source),
        escape(&r.dataset.truth),
        escape(&r.trainer_version)
    );

    out.push_str("<h2>Accuracy</h2>\n<table id=\"metrics\"><tr><th></th><th class=\"n\">FP32</th><th class=\"n\">INT8</th><th class=\"n\">change (points)</th></tr>\n");
    metric_rows(&mut out, &r.fp32, &r.int8);
    out.push_str("</table>\n");

    out.push_str("<h2>Size and speed</h2>\n<table id=\"cost\"><tr><th></th><th class=\"n\">FP32</th><th class=\"n\">INT8</th><th class=\"n\">INT8 / FP32</th></tr>\n");
    row(
        &mut out,
        &[
            "size".into(),
            format!("{:.2} MB", r.size.fp32_bytes as f64 / 1e6),
            format!("{:.2} MB", r.size.int8_bytes as f64 / 1e6),
            pct(r.size.ratio),
        ],
    );
    let l = &r.latency;
    row(
        &mut out,
        &[
            "latency (median)".into(),
            format!("{:.2} ms", l.fp32_ms),
            format!("{:.2} ms", l.int8_ms),
            format!("{:.2}× speed", l.int8_speedup),
        ],
    );
    let _ = writeln!(
        out,
        "</table>\n<p class=\"note\">Model alone, median of {} runs with {} thread(s) on {}. \
Devices differ: measure there with <code>outpost bench</code>.</p>",
        l.runs,
        l.threads,
        escape(&l.machine)
    );

    out.push_str("<h2>Layers kept in FP32</h2>\n");
    if r.kept_fp32.is_empty() {
        out.push_str("<p id=\"kept\">None: every quantisable layer runs in INT8.</p>\n");
    } else {
        out.push_str("<table id=\"kept\"><tr><th>layer</th><th>why</th></tr>\n");
        for k in &r.kept_fp32 {
            let _ = writeln!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                escape(&k.node),
                escape(&k.reason)
            );
        }
        out.push_str("</table>\n");
    }
    if let Some(m) = &r.mixed_precision {
        let _ = writeln!(
            out,
            "<p>Accuracy budget {:.2} points: {}.</p>\n<table id=\"trials\"><tr><th>layers in FP32</th><th class=\"n\">{}</th><th class=\"n\">loss (points)</th></tr>",
            m.budget_points,
            if m.met {
                "met"
            } else {
                "not met by any model tried"
            },
            metric_label(&r.verdict.metric)
        );
        for t in &m.trials {
            row(
                &mut out,
                &[
                    t.kept_fp32.to_string(),
                    pct(t.metric),
                    format!("{:.2}", t.loss_points),
                ],
            );
        }
        out.push_str("</table>\n");
    }

    out.push_str("<h2>Per-layer sensitivity</h2>\n<p class=\"note\">Each quantisable layer's output with every layer in INT8, against FP32, over the calibration images. Errors add up along the network, so later layers tend to look worse; a sharp step points at the layer that causes it.</p>\n");
    sensitivity_chart(&mut out, r);

    let c = &r.calibration;
    out.push_str("<h2>Calibration</h2>\n<table id=\"calibration\">\n");
    let method = serde_json::to_value(c.method).unwrap_or_default();
    let mut settings = vec![
        (
            "method",
            method["method"].as_str().unwrap_or_default().to_string(),
        ),
        ("images", format!("{} from {}", c.images, c.source)),
        ("weights", c.weights.clone()),
        ("activations", c.activations.clone()),
        ("folded BatchNorm", c.folded_batch_norms.to_string()),
    ];
    if let Some(p) = method.get("percentile") {
        settings.insert(1, ("percentile", p.to_string()));
    }
    if !c.skip_nodes.is_empty() {
        settings.push(("--skip-node", c.skip_nodes.join(", ")));
    }
    if !c.skip_ops.is_empty() {
        settings.push(("--skip-op", c.skip_ops.join(", ")));
    }
    if !c.skipped_images.is_empty() {
        settings.push(("unreadable images", c.skipped_images.join(", ")));
    }
    for (k, v) in settings {
        let _ = writeln!(out, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(super::escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
    }
}
