//! Classification: softmax (or already-probabilities), then top-k above a threshold.

use crate::results::Classification;

/// Softmax in place, numerically stable.
pub fn softmax(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        values.iter_mut().for_each(|v| *v /= sum);
    }
}

/// The `top_k` best classes whose probability is at least `threshold`, best first.
/// Equal scores keep index order.
pub fn top_k(
    scores: &[f32],
    labels: &[String],
    top_k: usize,
    threshold: f32,
) -> Vec<Classification> {
    let mut order: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i] >= threshold && !scores[i].is_nan())
        .collect();
    let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if order.len() > top_k {
        order.select_nth_unstable_by(top_k - 1, by_score);
        order.truncate(top_k);
    }
    order.sort_by(by_score);
    order
        .into_iter()
        .map(|i| Classification {
            index: i,
            label: labels.get(i).cloned().unwrap_or_else(|| i.to_string()),
            confidence: scores[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut v = vec![1.0, 2.0, 3.0, 1000.0];
        softmax(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(v[3] > 0.99);
        let mut v = vec![0.0, (2.0f32).ln()];
        softmax(&mut v);
        assert!((v[0] - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn top_k_orders_filters_and_breaks_ties_by_index() {
        let scores = [0.1, 0.4, 0.05, 0.4, 0.05];
        let got = top_k(&scores, &labels(5), 3, 0.0);
        let idx: Vec<_> = got.iter().map(|c| c.index).collect();
        assert_eq!(idx, vec![1, 3, 0]);
        assert_eq!(got[0].label, "c1");
        let got = top_k(&scores, &labels(5), 10, 0.3);
        assert_eq!(got.len(), 2);
        assert!(top_k(&[f32::NAN, 0.5], &labels(2), 2, 0.0).len() == 1);
    }
}
