//! Automatic mixed precision: keep the most sensitive layers in FP32 until the
//! INT8 model loses no more than an accuracy budget.
//!
//! Sensitivity is the per-layer analysis of the fully quantised model (lowest
//! cosine similarity to FP32 first). The search keeps the 1, 2, 4, ... worst
//! layers in FP32 until the budget holds, then bisects back to the fewest that
//! still hold it, so a model stays as INT8 as it can. Each trial re-uses the one
//! calibration and costs one evaluation of the dataset.

use serde::{Deserialize, Serialize};

use crate::Result;

/// One model tried by the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Layers kept in FP32 (the most sensitive first).
    pub kept_fp32: usize,
    /// The metric (fraction) on the dataset.
    pub metric: f64,
    /// FP32 minus this model, in points (hundredths).
    pub loss_points: f64,
}

/// The outcome of a search over models of type `M`.
pub struct Outcome<M> {
    /// The chosen model.
    pub model: M,
    /// Its metric (fraction).
    pub metric: f64,
    /// Nodes kept in FP32, most sensitive first.
    pub kept_fp32: Vec<String>,
    /// Every model tried, in order, starting with the fully quantised one.
    pub trials: Vec<Trial>,
    /// Whether the chosen model is within the budget. When none is, the one that
    /// lost least is returned.
    pub met: bool,
}

/// Finds the fewest layers of `ranking` (most sensitive first) to keep in FP32 so
/// that `fp32 - metric` stays within `budget_points`. `first` is the fully
/// quantised model and its metric; `build` makes and measures the model that
/// keeps the given nodes in FP32.
pub fn search<M>(
    ranking: &[String],
    budget_points: f64,
    fp32: f64,
    first: (M, f64),
    mut build: impl FnMut(&[String]) -> Result<(M, f64)>,
) -> Result<Outcome<M>> {
    let within = |metric: f64| loss_points(fp32, metric) <= budget_points + 1e-9;
    let mut trials = vec![trial(fp32, 0, first.1)];
    let mut best = (0, first.0, first.1);
    if within(best.2) || ranking.is_empty() {
        let met = within(best.2);
        return Ok(finish(best, ranking, trials, met));
    }
    let mut try_k = |k: usize, trials: &mut Vec<Trial>| -> Result<(usize, M, f64)> {
        let (m, metric) = build(&ranking[..k])?;
        trials.push(trial(fp32, k, metric));
        Ok((k, m, metric))
    };
    // Keeping every layer would leave nothing in INT8: at most all but one.
    let cap = ranking.len().saturating_sub(1).max(1);
    // Grow geometrically until the budget holds.
    let mut failing = 0usize;
    let mut passing = None;
    let mut k = 1;
    loop {
        let t = try_k(k, &mut trials)?;
        if within(t.2) {
            passing = Some(t);
            break;
        }
        failing = k;
        if t.2 > best.2 {
            best = t;
        }
        if k >= cap {
            break;
        }
        k = (k * 2).min(cap);
    }
    let Some(mut pass) = passing else {
        return Ok(finish(best, ranking, trials, false));
    };
    // Bisect between the last failing and the first passing count.
    while pass.0 - failing > 1 {
        let t = try_k(failing + (pass.0 - failing) / 2, &mut trials)?;
        if within(t.2) {
            pass = t;
        } else {
            failing = t.0;
        }
    }
    Ok(finish(pass, ranking, trials, true))
}

/// FP32 minus INT8, in points.
pub fn loss_points(fp32: f64, metric: f64) -> f64 {
    (fp32 - metric) * 100.0
}

fn trial(fp32: f64, kept_fp32: usize, metric: f64) -> Trial {
    Trial {
        kept_fp32,
        metric,
        loss_points: loss_points(fp32, metric),
    }
}

fn finish<M>(
    (k, model, metric): (usize, M, f64),
    ranking: &[String],
    trials: Vec<Trial>,
    met: bool,
) -> Outcome<M> {
    Outcome {
        model,
        metric,
        kept_fp32: ranking[..k].to_vec(),
        trials,
        met,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranking(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("conv{i}")).collect()
    }

    /// Runs the search where keeping `k` layers gives `metric(k)`; returns the
    /// outcome (its model is `k`) and the counts tried.
    fn run(
        n: usize,
        budget: f64,
        fp32: f64,
        metric: impl Fn(usize) -> f64,
    ) -> (Outcome<usize>, Vec<usize>) {
        let r = ranking(n);
        let out = search(&r, budget, fp32, (0, metric(0)), |kept| {
            Ok((kept.len(), metric(kept.len())))
        })
        .unwrap();
        let tried = out.trials.iter().map(|t| t.kept_fp32).collect();
        (out, tried)
    }

    #[test]
    fn within_budget_keeps_nothing_and_tries_nothing_more() {
        let (out, tried) = run(10, 1.0, 0.80, |_| 0.795);
        assert!(out.met);
        assert_eq!(out.model, 0);
        assert!(out.kept_fp32.is_empty());
        assert_eq!(tried, [0]);
    }

    #[test]
    fn finds_the_fewest_layers_that_meet_the_budget() {
        // Each kept layer wins back 0.4 points of a 3.0-point loss: 5 layers reach 1.0.
        let (out, tried) = run(64, 1.0, 0.90, |k| 0.90 - 0.03 + 0.004 * k.min(8) as f64);
        assert!(out.met);
        assert_eq!(out.model, 5);
        assert_eq!(out.kept_fp32, ranking(5));
        // 1, 2, 4 fail, 8 passes, then 6 and 5 pass.
        assert_eq!(tried, [0, 1, 2, 4, 8, 6, 5]);
        assert!((out.trials[3].loss_points - 1.4).abs() < 1e-9);
    }

    #[test]
    fn an_unreachable_budget_returns_the_best_model_and_says_so() {
        let (out, tried) = run(6, 0.5, 0.90, |k| if k == 2 { 0.88 } else { 0.85 });
        assert!(!out.met);
        assert_eq!(out.model, 2);
        assert_eq!(out.kept_fp32, ranking(2));
        // Never all six: that would be FP32.
        assert_eq!(tried, [0, 1, 2, 4, 5]);
    }
}
