//! Detection heads and the steps they share.
//!
//! A head turns raw outputs into [`Candidate`]s in model-input pixels; then every
//! head shares the same tail: map to 0..1 of the original image ([`Transform`]),
//! non-maximum suppression, and labelling. Heads so far: YOLOv8 (`[1, 4 + C, N]`)
//! and YOLOv5 (`[1, N, 5 + C]`, objectness × class score). An SSD-style head
//! (boxes and scores as two outputs) slots in as one more `*_candidates` function.

use crate::error::{Error, Result};
use crate::preprocess::Transform;
use crate::results::{Detection, OutputTensor};

/// A box before suppression, corners in whatever space the caller is in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Class index.
    pub class: usize,
    /// Score in 0..1.
    pub score: f32,
    /// Corners: x1, y1, x2, y2.
    pub rect: [f32; 4],
}

impl Candidate {
    /// A candidate from a centre-size box (`cx, cy, w, h`), as YOLO heads give it.
    pub fn from_center(class: usize, score: f32, [cx, cy, w, h]: [f32; 4]) -> Candidate {
        Candidate {
            class,
            score,
            rect: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
        }
    }
}

/// Candidates of an Ultralytics YOLOv8 head whose best class score is above
/// `threshold`. The output is `[1, 4 + C, N]` (the export default) or its
/// transpose `[1, N, 4 + C]`; rows are centre x, centre y, width, height, then
/// one score per class, already passed through a sigmoid.
pub fn yolov8_candidates(
    out: &OutputTensor,
    num_classes: usize,
    threshold: f32,
) -> Result<Vec<Candidate>> {
    let rows = 4 + num_classes;
    let (n, transposed) = match out.shape.as_slice() {
        [1, r, n] if *r == rows => (*n, false),
        [1, n, r] if *r == rows => (*n, true),
        other => {
            return Err(Error::ModelMismatch(format!(
                "YOLOv8 output should be [1, {rows}, N] for {num_classes} labels, got {other:?}"
            )))
        }
    };
    if out.data.len() != rows * n {
        return Err(Error::Inference(
            "output size disagrees with its shape".into(),
        ));
    }
    let at = |row: usize, i: usize| {
        if transposed {
            out.data[i * rows + row]
        } else {
            out.data[row * n + i]
        }
    };
    let mut cands = Vec::new();
    for i in 0..n {
        let (mut best, mut class) = (f32::NEG_INFINITY, 0);
        for c in 0..num_classes {
            let s = at(4 + c, i);
            if s > best {
                best = s;
                class = c;
            }
        }
        if best > threshold {
            let centre = [at(0, i), at(1, i), at(2, i), at(3, i)];
            cands.push(Candidate::from_center(class, best, centre));
        }
    }
    Ok(cands)
}

/// Candidates of a YOLOv5-style head: `[1, N, 5 + C]` rows of centre x, centre y,
/// width, height, objectness, then one score per class; the score of a box is
/// objectness × its best class score, kept when above `threshold`.
pub fn yolov5_candidates(
    out: &OutputTensor,
    num_classes: usize,
    threshold: f32,
) -> Result<Vec<Candidate>> {
    let cols = 5 + num_classes;
    let n = match out.shape.as_slice() {
        [1, n, c] if *c == cols => *n,
        other => {
            return Err(Error::ModelMismatch(format!(
                "YOLOv5 output should be [1, N, {cols}] for {num_classes} labels, got {other:?}"
            )))
        }
    };
    if out.data.len() != cols * n {
        return Err(Error::Inference(
            "output size disagrees with its shape".into(),
        ));
    }
    let mut cands = Vec::new();
    for row in out.data.chunks_exact(cols) {
        let objectness = row[4];
        if objectness <= threshold {
            continue;
        }
        let (class, best) =
            row[5..]
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (c, &s)| if s > acc.1 { (c, s) } else { acc },
                );
        let score = objectness * best;
        if score > threshold {
            cands.push(Candidate::from_center(
                class,
                score,
                [row[0], row[1], row[2], row[3]],
            ));
        }
    }
    Ok(cands)
}

/// Maps model-pixel corners to 0..1 of the original image, clamped.
pub fn to_unit(cands: &mut [Candidate], t: &Transform) {
    for c in cands {
        let (x1, y1) = t.to_unit(c.rect[0], c.rect[1]);
        let (x2, y2) = t.to_unit(c.rect[2], c.rect[3]);
        c.rect = [x1, y1, x2, y2];
    }
}

/// Intersection over union of two corner boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter + 1e-9)
}

/// Greedy non-maximum suppression, best score first. With `class_aware`, a box
/// only suppresses boxes of its own class.
pub fn nms(
    mut cands: Vec<Candidate>,
    iou_threshold: f32,
    class_aware: bool,
    max: usize,
) -> Vec<Candidate> {
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in cands {
        if kept.len() >= max {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| (!class_aware || k.class == c.class) && iou(&k.rect, &c.rect) > iou_threshold);
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

/// Names the kept boxes.
pub fn label(cands: Vec<Candidate>, labels: &[String]) -> Vec<Detection> {
    cands
        .into_iter()
        .map(|c| Detection {
            index: c.class,
            label: labels
                .get(c.class)
                .cloned()
                .unwrap_or_else(|| c.class.to_string()),
            confidence: c.score,
            x1: c.rect[0],
            y1: c.rect[1],
            x2: c.rect[2],
            y2: c.rect[3],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[1, 6, N]` YOLOv8 output from (cx, cy, w, h, s0, s1) rows.
    fn head(boxes: &[[f32; 6]]) -> OutputTensor {
        let n = boxes.len();
        let mut data = vec![0.0; 6 * n];
        for (i, b) in boxes.iter().enumerate() {
            for r in 0..6 {
                data[r * n + i] = b[r];
            }
        }
        OutputTensor {
            name: "output0".into(),
            shape: vec![1, 6, n],
            data,
        }
    }

    #[test]
    fn yolov8_picks_best_class_and_filters_strictly_above_threshold() {
        let out = head(&[
            [50.0, 50.0, 20.0, 10.0, 0.1, 0.9],
            [10.0, 10.0, 4.0, 4.0, 0.25, 0.0],
            [10.0, 10.0, 4.0, 4.0, 0.3, 0.2],
        ]);
        let c = yolov8_candidates(&out, 2, 0.25).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].class, 1);
        assert_eq!(c[0].rect, [40.0, 45.0, 60.0, 55.0]);
        assert_eq!(c[1].class, 0);
        // Transposed layout gives the same.
        let t = OutputTensor {
            shape: vec![1, 3, 6],
            data: (0..3)
                .flat_map(|i| (0..6).map(move |r| (i, r)))
                .map(|(i, r)| out.data[r * 3 + i])
                .collect(),
            ..out.clone()
        };
        assert_eq!(yolov8_candidates(&t, 2, 0.25).unwrap(), c);
        // Wrong class count is a mismatch, not a panic.
        assert_eq!(yolov8_candidates(&out, 3, 0.25).unwrap_err().code(), 3012);
    }

    #[test]
    fn yolov5_multiplies_objectness_and_class_score() {
        let out = OutputTensor {
            name: "output".into(),
            shape: vec![1, 3, 7],
            data: vec![
                50.0, 50.0, 20.0, 10.0, 0.9, 0.2, 0.8, // 0.72, class 1
                10.0, 10.0, 4.0, 4.0, 0.2, 1.0, 0.0, // objectness too low
                10.0, 10.0, 4.0, 4.0, 0.5, 0.4, 0.3, // 0.2 < 0.25
            ],
        };
        let c = yolov5_candidates(&out, 2, 0.25).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].class, 1);
        assert!((c[0].score - 0.72).abs() < 1e-6);
        assert_eq!(c[0].rect, [40.0, 45.0, 60.0, 55.0]);
        assert_eq!(yolov5_candidates(&out, 3, 0.25).unwrap_err().code(), 3012);
    }

    #[test]
    fn nms_is_class_aware_and_keeps_the_best() {
        let b = |class, score, x: f32| Candidate {
            class,
            score,
            rect: [x, 0.0, x + 10.0, 10.0],
        };
        let cands = vec![
            b(0, 0.5, 1.0),
            b(0, 0.9, 0.0),
            b(1, 0.8, 0.0),
            b(0, 0.7, 50.0),
        ];
        let kept = nms(cands.clone(), 0.45, true, 100);
        let scores: Vec<f32> = kept.iter().map(|c| c.score).collect();
        assert_eq!(scores, vec![0.9, 0.8, 0.7]);
        let kept = nms(cands.clone(), 0.45, false, 100);
        assert_eq!(kept.len(), 2);
        assert_eq!(nms(cands, 0.45, true, 1).len(), 1);
        assert!((iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]) - 1.0 / 3.0).abs() < 1e-6);
    }
}
