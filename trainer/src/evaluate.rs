//! `evaluate`: accuracy of a model on a labelled image set, with the same
//! decoding, preprocessing and backend the device runs.

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressStyle};
use outpost_runtime::{ImageInput, Predictor};
use serde::Serialize;

use crate::dataset::Sample;
use crate::{Result, TrainerError};

/// Accuracy on one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassAccuracy {
    /// Class index.
    pub index: usize,
    /// Class name.
    pub label: String,
    /// Images of this class that were evaluated.
    pub images: usize,
    /// Fraction whose top-1 was this class.
    pub top1: f64,
}

/// How often one class was taken for another.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Confusion {
    /// True class.
    pub truth: String,
    /// Predicted top-1 class.
    pub predicted: String,
    /// Number of images.
    pub count: usize,
}

/// An image left out of the metrics, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// Image file.
    pub file: String,
    /// Runtime error code.
    pub error_code: u32,
    /// Error message.
    pub message: String,
}

/// The result of a classification evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationReport {
    /// Images evaluated (the dataset less the skipped ones).
    pub images: usize,
    /// Top-1 accuracy, 0..1.
    pub top1: f64,
    /// Top-5 accuracy, 0..1.
    pub top5: f64,
    /// Per-class top-1, by class index.
    pub per_class: Vec<ClassAccuracy>,
    /// The most frequent confusions, most first (at most 20).
    pub confusions: Vec<Confusion>,
    /// Unreadable or corrupt images, reported by name.
    pub skipped: Vec<Skipped>,
}

/// Most confusions listed in a report.
const MAX_CONFUSIONS: usize = 20;

/// Runs `predictor` (a classification model returning at least 5 classes, threshold 0)
/// over `samples`. Corrupt images are skipped and listed; the rest still count.
pub fn evaluate_classification(
    predictor: &Predictor,
    samples: &[Sample],
    progress: bool,
) -> Result<ClassificationReport> {
    let labels = &predictor.manifest().labels;
    let bar = if progress {
        ProgressBar::new(samples.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("evaluating {bar:30} {pos}/{len} images, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut top1, mut top5) = (0usize, 0usize);
    let mut per_class: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    let mut confusions: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut skipped = Vec::new();
    for sample in samples {
        bar.inc(1);
        let result = std::fs::read(&sample.path)
            .map_err(|e| (1005, e.to_string()))
            .and_then(|bytes| {
                predictor
                    .infer(ImageInput::Encoded(&bytes))
                    .map_err(|e| (e.code(), e.to_string()))
            });
        let prediction = match result {
            Ok(p) => p,
            Err((error_code, message)) => {
                bar.suspend(|| {
                    eprintln!(
                        "skipping {}: error {error_code}: {message}",
                        sample.path.display()
                    )
                });
                skipped.push(Skipped {
                    file: sample.path.display().to_string(),
                    error_code,
                    message,
                });
                continue;
            }
        };
        let classes = prediction.classifications().ok_or_else(|| {
            TrainerError::Invalid("evaluate needs a classification model here".into())
        })?;
        let best = classes.first().map(|c| c.index);
        let entry = per_class.entry(sample.class).or_default();
        entry.0 += 1;
        if best == Some(sample.class) {
            top1 += 1;
            entry.1 += 1;
        } else if let Some(b) = best {
            *confusions.entry((sample.class, b)).or_default() += 1;
        }
        if classes.iter().take(5).any(|c| c.index == sample.class) {
            top5 += 1;
        }
    }
    bar.finish_and_clear();
    let images = samples.len() - skipped.len();
    if images == 0 {
        return Err(TrainerError::Invalid(
            "no image of the dataset could be read".into(),
        ));
    }
    let name = |i: usize| labels.get(i).cloned().unwrap_or_else(|| i.to_string());
    let mut confusions: Vec<Confusion> = confusions
        .into_iter()
        .map(|((t, p), count)| Confusion {
            truth: name(t),
            predicted: name(p),
            count,
        })
        .collect();
    confusions.sort_by_key(|c| std::cmp::Reverse(c.count));
    confusions.truncate(MAX_CONFUSIONS);
    Ok(ClassificationReport {
        images,
        top1: top1 as f64 / images as f64,
        top5: top5 as f64 / images as f64,
        per_class: per_class
            .into_iter()
            .map(|(index, (n, ok))| ClassAccuracy {
                index,
                label: name(index),
                images: n,
                top1: ok as f64 / n as f64,
            })
            .collect(),
        confusions,
        skipped,
    })
}

/// A short readable summary.
pub fn render_text(r: &ClassificationReport) -> String {
    let mut out = format!(
        "images {}  top-1 {:.2}%  top-5 {:.2}%\n",
        r.images,
        r.top1 * 100.0,
        r.top5 * 100.0
    );
    let mut worst: Vec<&ClassAccuracy> = r.per_class.iter().collect();
    worst.sort_by(|a, b| a.top1.total_cmp(&b.top1).then(b.images.cmp(&a.images)));
    if worst.iter().any(|c| c.top1 < 1.0) {
        out.push_str("weakest classes:\n");
        for c in worst.iter().take(5) {
            out.push_str(&format!(
                "  {:>5}  {:<30} {:>6.1}% of {}\n",
                c.index,
                c.label,
                c.top1 * 100.0,
                c.images
            ));
        }
    }
    if !r.confusions.is_empty() {
        out.push_str("most frequent confusions (truth -> predicted):\n");
        for c in r.confusions.iter().take(5) {
            out.push_str(&format!("  {} -> {}: {}\n", c.truth, c.predicted, c.count));
        }
    }
    if !r.skipped.is_empty() {
        out.push_str(&format!("skipped {} unreadable images\n", r.skipped.len()));
    }
    out
}
