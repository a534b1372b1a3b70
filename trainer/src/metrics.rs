//! Detection metrics: COCO-style average precision (101-point interpolation),
//! mAP@0.5 and mAP@0.5:0.95. Pure functions over boxes in 0..1 of each image.

use serde::Serialize;

/// A box with a class, corners in 0..1 of its image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Labelled {
    /// Class index.
    pub class: usize,
    /// x1, y1, x2, y2.
    pub rect: [f32; 4],
}

/// A predicted box with its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The box.
    pub b: Labelled,
    /// Confidence.
    pub score: f32,
}

/// Per-image predictions and ground truth.
#[derive(Debug, Clone, Default)]
pub struct ImageBoxes {
    /// What the model found.
    pub predicted: Vec<Scored>,
    /// What is there.
    pub truth: Vec<Labelled>,
}

/// mAP summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionMetrics {
    /// Mean AP over classes with ground truth, at IoU 0.5.
    pub map50: f64,
    /// Mean AP averaged over IoU 0.5, 0.55, ..., 0.95.
    pub map50_95: f64,
    /// AP at IoU 0.5 per class index (`None` when the class has no ground truth).
    pub ap50_per_class: Vec<Option<f64>>,
    /// Ground-truth boxes.
    pub truth_boxes: usize,
    /// Predicted boxes.
    pub predicted_boxes: usize,
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    outpost_runtime::decoder::detection::iou(a, b)
}

/// Average precision of one class at one IoU threshold (COCO's 101 recall points).
/// `None` when the class has no ground truth.
pub fn average_precision(images: &[ImageBoxes], class: usize, iou_threshold: f32) -> Option<f64> {
    let total: usize = images
        .iter()
        .map(|im| im.truth.iter().filter(|t| t.class == class).count())
        .sum();
    if total == 0 {
        return None;
    }
    // Every prediction of the class, best first, matched greedily to unmatched truth.
    let mut preds: Vec<(f32, usize, usize)> = images
        .iter()
        .enumerate()
        .flat_map(|(i, im)| {
            im.predicted
                .iter()
                .enumerate()
                .filter(|(_, p)| p.b.class == class)
                .map(move |(j, p)| (p.score, i, j))
        })
        .collect();
    preds.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut used: Vec<Vec<bool>> = images
        .iter()
        .map(|im| vec![false; im.truth.len()])
        .collect();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut curve = Vec::with_capacity(preds.len());
    for (_, i, j) in preds {
        let p = images[i].predicted[j].b.rect;
        let best = images[i]
            .truth
            .iter()
            .enumerate()
            .filter(|(k, t)| t.class == class && !used[i][*k])
            .map(|(k, t)| (k, iou(&p, &t.rect)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((k, o)) if o >= iou_threshold => {
                used[i][k] = true;
                tp += 1;
            }
            _ => fp += 1,
        }
        curve.push((tp as f64 / total as f64, tp as f64 / (tp + fp) as f64));
    }
    // Precision envelope, then sampled at recall 0, 0.01, ..., 1.
    for k in (0..curve.len().saturating_sub(1)).rev() {
        curve[k].1 = curve[k].1.max(curve[k + 1].1);
    }
    let mut sum = 0.0;
    for r in 0..=100 {
        let recall = r as f64 / 100.0;
        sum += curve
            .iter()
            .find(|(rc, _)| *rc >= recall - 1e-12)
            .map_or(0.0, |(_, p)| *p);
    }
    Some(sum / 101.0)
}

/// mAP@0.5 and mAP@0.5:0.95 over `classes` classes.
pub fn detection_metrics(images: &[ImageBoxes], classes: usize) -> DetectionMetrics {
    let mean = |thr: f32| {
        let aps: Vec<f64> = (0..classes)
            .filter_map(|c| average_precision(images, c, thr))
            .collect();
        if aps.is_empty() {
            0.0
        } else {
            aps.iter().sum::<f64>() / aps.len() as f64
        }
    };
    let thresholds: Vec<f32> = (0..10).map(|i| 0.5 + 0.05 * i as f32).collect();
    DetectionMetrics {
        map50: mean(0.5),
        map50_95: thresholds.iter().map(|&t| mean(t)).sum::<f64>() / thresholds.len() as f64,
        ap50_per_class: (0..classes)
            .map(|c| average_precision(images, c, 0.5))
            .collect(),
        truth_boxes: images.iter().map(|i| i.truth.len()).sum(),
        predicted_boxes: images.iter().map(|i| i.predicted.len()).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(class: usize, x: f32) -> Labelled {
        Labelled {
            class,
            rect: [x, 0.0, x + 0.2, 0.2],
        }
    }

    fn p(class: usize, x: f32, score: f32) -> Scored {
        Scored {
            b: b(class, x),
            score,
        }
    }

    #[test]
    fn perfect_predictions_score_one() {
        let images = vec![ImageBoxes {
            predicted: vec![p(0, 0.0, 0.9), p(1, 0.5, 0.8)],
            truth: vec![b(0, 0.0), b(1, 0.5)],
        }];
        let m = detection_metrics(&images, 2);
        assert!((m.map50 - 1.0).abs() < 1e-9);
        assert!((m.map50_95 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn misses_false_positives_and_shifted_boxes_cost() {
        // One of two truths found, with a higher-scored false positive first.
        let images = vec![ImageBoxes {
            predicted: vec![p(0, 0.7, 0.9), p(0, 0.0, 0.8)],
            truth: vec![b(0, 0.0), b(0, 0.3)],
        }];
        let ap = average_precision(&images, 0, 0.5).unwrap();
        // Recall reaches 0.5 at precision 0.5: 51 of 101 points at 0.5.
        assert!((ap - 51.0 * 0.5 / 101.0).abs() < 1e-9, "{ap}");
        // A box shifted by a quarter of its width: IoU 0.6, found at 0.5, not at 0.75.
        let images = vec![ImageBoxes {
            predicted: vec![p(0, 0.05, 0.9)],
            truth: vec![b(0, 0.0)],
        }];
        assert_eq!(average_precision(&images, 0, 0.5), Some(1.0));
        assert_eq!(average_precision(&images, 0, 0.75), Some(0.0));
        // Wrong class never matches; a class without truth is left out.
        let images = vec![ImageBoxes {
            predicted: vec![p(1, 0.0, 0.9)],
            truth: vec![b(0, 0.0)],
        }];
        assert_eq!(average_precision(&images, 0, 0.5), Some(0.0));
        assert_eq!(average_precision(&images, 1, 0.5), None);
    }
}
