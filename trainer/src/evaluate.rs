//! `evaluate`: accuracy of a model on a labelled image set, with the same
//! decoding, preprocessing and backend the device runs.

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressStyle};
use outpost_runtime::package::manifest::Task;
use outpost_runtime::{Config, ImageInput, Manifest, Predictor};
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

/// Where detection ground truth comes from.
pub enum Truth<'a> {
    /// Another model's detections (e.g. FP32 when evaluating INT8): agreement.
    Reference(&'a Predictor),
    /// Per-image label files, named after each image: YOLO txt (`class cx cy w h`,
    /// 0..1) beside it or in a sibling `labels/` folder, or Pascal VOC xml beside
    /// it or in a sibling `Annotations/` folder.
    LabelFiles,
    /// A COCO json file (`images`, `annotations` with pixel `bbox`, `categories`
    /// named as the model's labels).
    Coco(&'a CocoIndex),
}

/// Boxes of a COCO json file, by image file name, as class indices and 0..1 corners.
#[derive(Debug, Default)]
pub struct CocoIndex {
    by_file: std::collections::HashMap<String, Vec<crate::metrics::Labelled>>,
}

impl CocoIndex {
    /// Reads a COCO json file; category names must be labels of the model.
    pub fn load(path: &std::path::Path, labels: &[String]) -> Result<CocoIndex> {
        #[derive(serde::Deserialize)]
        struct Image {
            id: u64,
            file_name: String,
            width: f64,
            height: f64,
        }
        #[derive(serde::Deserialize)]
        struct Annotation {
            image_id: u64,
            category_id: u64,
            bbox: [f64; 4],
        }
        #[derive(serde::Deserialize)]
        struct Category {
            id: u64,
            name: String,
        }
        #[derive(serde::Deserialize)]
        struct Coco {
            images: Vec<Image>,
            annotations: Vec<Annotation>,
            categories: Vec<Category>,
        }
        let text = std::fs::read(path).map_err(crate::io_err(path))?;
        let coco: Coco = serde_json::from_slice(&text).map_err(|e| {
            TrainerError::Invalid(format!(
                "{}: not a COCO annotation file: {e}",
                path.display()
            ))
        })?;
        let mut class_of = std::collections::HashMap::new();
        for c in &coco.categories {
            let index = labels.iter().position(|l| *l == c.name).ok_or_else(|| {
                TrainerError::Invalid(format!(
                    "{}: category {:?} is not a label of the model",
                    path.display(),
                    c.name
                ))
            })?;
            class_of.insert(c.id, index);
        }
        let images: std::collections::HashMap<u64, &Image> =
            coco.images.iter().map(|i| (i.id, i)).collect();
        let mut index = CocoIndex::default();
        for im in &coco.images {
            index.by_file.entry(base_name(&im.file_name)).or_default();
        }
        for a in &coco.annotations {
            let (Some(im), Some(&class)) = (images.get(&a.image_id), class_of.get(&a.category_id))
            else {
                return Err(TrainerError::Invalid(format!(
                    "{}: annotation names an unknown image {} or category {}",
                    path.display(),
                    a.image_id,
                    a.category_id
                )));
            };
            let [x, y, w, h] = a.bbox;
            index
                .by_file
                .entry(base_name(&im.file_name))
                .or_default()
                .push(crate::metrics::Labelled {
                    class,
                    rect: [
                        (x / im.width) as f32,
                        (y / im.height) as f32,
                        ((x + w) / im.width) as f32,
                        ((y + h) / im.height) as f32,
                    ],
                });
        }
        Ok(index)
    }
}

fn base_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The Pascal VOC xml for an image: `stem.xml` beside it, or in `../Annotations/`.
fn voc_file(image: &std::path::Path) -> Option<std::path::PathBuf> {
    let xml = image.with_extension("xml");
    if xml.exists() {
        return Some(xml);
    }
    let annotations = image
        .parent()?
        .parent()?
        .join("Annotations")
        .join(xml.file_name()?);
    annotations.exists().then_some(annotations)
}

fn read_voc_xml(
    path: &std::path::Path,
    labels: &[String],
) -> Result<Vec<crate::metrics::Labelled>> {
    let text = std::fs::read_to_string(path).map_err(crate::io_err(path))?;
    let bad = |why: String| TrainerError::Invalid(format!("{}: {why}", path.display()));
    let doc = roxmltree::Document::parse(&text).map_err(|e| bad(e.to_string()))?;
    let root = doc.root_element();
    fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
        n.children().find(|c| c.has_tag_name(name))
    }
    let number = |n: roxmltree::Node<'_, '_>, name: &str| -> Result<f64> {
        child(n, name)
            .and_then(|c| c.text())
            .and_then(|t| t.trim().parse::<f64>().ok())
            .ok_or_else(|| bad(format!("missing or bad <{name}>")))
    };
    let size = child(root, "size").ok_or_else(|| bad("no <size>".into()))?;
    let (w, h) = (number(size, "width")?, number(size, "height")?);
    if w <= 0.0 || h <= 0.0 {
        return Err(bad("<size> must be positive".into()));
    }
    let mut out = Vec::new();
    for object in root.children().filter(|c| c.has_tag_name("object")) {
        let name = child(object, "name")
            .and_then(|c| c.text())
            .map(str::trim)
            .ok_or_else(|| bad("<object> without <name>".into()))?;
        let class = labels
            .iter()
            .position(|l| l == name)
            .ok_or_else(|| bad(format!("object {name:?} is not a label of the model")))?;
        let b = child(object, "bndbox").ok_or_else(|| bad("<object> without <bndbox>".into()))?;
        out.push(crate::metrics::Labelled {
            class,
            rect: [
                (number(b, "xmin")? / w) as f32,
                (number(b, "ymin")? / h) as f32,
                (number(b, "xmax")? / w) as f32,
                (number(b, "ymax")? / h) as f32,
            ],
        });
    }
    Ok(out)
}

/// The result of a detection evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionReport {
    /// Images evaluated.
    pub images: usize,
    /// mAP at IoU 0.5.
    pub map50: f64,
    /// mAP averaged over IoU 0.5:0.95.
    pub map50_95: f64,
    /// AP at IoU 0.5 per class (`null` without ground truth).
    pub ap50_per_class: Vec<Option<f64>>,
    /// Ground-truth boxes.
    pub truth_boxes: usize,
    /// Predicted boxes.
    pub predicted_boxes: usize,
    /// What the ground truth was: `reference-model`, `label-files` or `coco-json`.
    pub truth: String,
    /// Unreadable or corrupt images, reported by name.
    pub skipped: Vec<Skipped>,
}

fn boxes(p: &outpost_runtime::Prediction) -> Vec<crate::metrics::Scored> {
    p.detections()
        .unwrap_or_default()
        .iter()
        .map(|d| crate::metrics::Scored {
            b: crate::metrics::Labelled {
                class: d.index,
                rect: [d.x1, d.y1, d.x2, d.y2],
            },
            score: d.confidence,
        })
        .collect()
}

/// The YOLO txt file for an image: `stem.txt` beside it, or in `../labels/`.
fn yolo_label_file(image: &std::path::Path) -> Option<std::path::PathBuf> {
    let txt = image.with_extension("txt");
    if txt.exists() {
        return Some(txt);
    }
    let dir = image.parent()?;
    let labels = dir.parent()?.join("labels").join(txt.file_name()?);
    labels.exists().then_some(labels)
}

fn read_yolo_txt(path: &std::path::Path, classes: usize) -> Result<Vec<crate::metrics::Labelled>> {
    let text = std::fs::read_to_string(path).map_err(crate::io_err(path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || {
            TrainerError::Invalid(format!(
                "{} line {}: expected `class cx cy w h`",
                path.display(),
                i + 1
            ))
        };
        let v: Vec<&str> = line.split_whitespace().collect();
        if v.len() != 5 {
            return Err(bad());
        }
        let class: usize = v[0].parse().map_err(|_| bad())?;
        if class >= classes {
            return Err(TrainerError::Invalid(format!(
                "{} line {}: class {class} is outside the {classes} labels",
                path.display(),
                i + 1
            )));
        }
        let n: Vec<f32> = v[1..]
            .iter()
            .map(|s| s.parse::<f32>().map_err(|_| bad()))
            .collect::<Result<_>>()?;
        out.push(crate::metrics::Labelled {
            class,
            rect: [
                n[0] - n[2] / 2.0,
                n[1] - n[3] / 2.0,
                n[0] + n[2] / 2.0,
                n[1] + n[3] / 2.0,
            ],
        });
    }
    Ok(out)
}

/// mAP of a detection `predictor` (run at a low threshold) on `images`.
pub fn evaluate_detection(
    predictor: &Predictor,
    images: &[std::path::PathBuf],
    truth: Truth<'_>,
    progress: bool,
) -> Result<DetectionReport> {
    let classes = predictor.manifest().labels.len();
    let bar = crate::quantize::progress_bar(progress, images.len() as u64, "evaluating");
    let mut per_image = Vec::new();
    let mut skipped = Vec::new();
    for path in images {
        bar.inc(1);
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                bar.suspend(|| eprintln!("skipping {}: error 1005: {e}", path.display()));
                skipped.push(Skipped {
                    file: path.display().to_string(),
                    error_code: 1005,
                    message: e.to_string(),
                });
                continue;
            }
        };
        let predicted = match predictor.infer(ImageInput::Encoded(&bytes)) {
            Ok(p) => boxes(&p),
            Err(e) => {
                bar.suspend(|| eprintln!("skipping {}: error {}: {e}", path.display(), e.code()));
                skipped.push(Skipped {
                    file: path.display().to_string(),
                    error_code: e.code(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let truth_boxes = match &truth {
            Truth::Reference(reference) => reference
                .infer(ImageInput::Encoded(&bytes))
                .map(|p| boxes(&p).into_iter().map(|s| s.b).collect())
                .map_err(TrainerError::from)?,
            Truth::LabelFiles => match (yolo_label_file(path), voc_file(path)) {
                (Some(f), _) => read_yolo_txt(&f, classes)?,
                (None, Some(f)) => read_voc_xml(&f, &predictor.manifest().labels)?,
                (None, None) => Vec::new(),
            },
            Truth::Coco(index) => {
                let name = base_name(&path.to_string_lossy());
                index.by_file.get(&name).cloned().ok_or_else(|| {
                    TrainerError::Invalid(format!("{name} is not in the COCO annotation file"))
                })?
            }
        };
        per_image.push(crate::metrics::ImageBoxes {
            predicted,
            truth: truth_boxes,
        });
    }
    bar.finish_and_clear();
    if per_image.is_empty() {
        return Err(TrainerError::Invalid(
            "no image of the dataset could be read".into(),
        ));
    }
    let m = crate::metrics::detection_metrics(&per_image, classes);
    Ok(DetectionReport {
        images: per_image.len(),
        map50: m.map50,
        map50_95: m.map50_95,
        ap50_per_class: m.ap50_per_class,
        truth_boxes: m.truth_boxes,
        predicted_boxes: m.predicted_boxes,
        truth: match truth {
            Truth::Reference(_) => "reference-model".into(),
            Truth::LabelFiles => "label-files".into(),
            Truth::Coco(_) => "coco-json".into(),
        },
        skipped,
    })
}

/// A short readable summary of a detection evaluation.
pub fn render_detection(r: &DetectionReport) -> String {
    format!(
        "images {}  mAP@0.5 {:.4}  mAP@0.5:0.95 {:.4}  ({} ground-truth boxes from {}, {} predicted){}\n",
        r.images,
        r.map50,
        r.map50_95,
        r.truth_boxes,
        r.truth,
        r.predicted_boxes,
        if r.skipped.is_empty() {
            String::new()
        } else {
            format!(", skipped {} unreadable images", r.skipped.len())
        }
    )
}

/// Most boxes per image counted by mAP (as the YOLOv8 decoder's default).
pub const MAP_MAX_DETECTIONS: usize = 300;

/// The settings a model is evaluated with: every class down to score 0 for top-5,
/// every box down to 0.001 for mAP.
pub fn evaluation_config(task: Task, base: &Config) -> Config {
    match task {
        Task::Detection => Config {
            threshold: Some(0.001),
            top_k: Some(MAP_MAX_DETECTIONS),
            ..base.clone()
        },
        _ => Config {
            threshold: Some(0.0),
            top_k: Some(5),
            ..base.clone()
        },
    }
}

/// The settings of a reference model whose boxes serve as ground truth: its own
/// recommended threshold, so that only boxes a user would see count.
pub fn reference_config(base: &Config) -> Config {
    Config {
        threshold: None,
        top_k: Some(MAP_MAX_DETECTIONS),
        ..base.clone()
    }
}

/// Where detection ground truth comes from, before any model is loaded.
pub enum DetectionTruth {
    /// YOLO txt or Pascal VOC xml files beside the images.
    LabelFiles,
    /// A COCO json file.
    Coco(CocoIndex),
    /// No labels: the FP32 model's boxes are the truth, so INT8 is measured as
    /// agreement with FP32.
    Fp32,
}

/// A labelled image set a model is measured on.
pub enum EvalData {
    /// Classification images with their class.
    Classification(Vec<Sample>),
    /// Detection images and where their ground truth comes from.
    Detection {
        /// The images.
        images: Vec<std::path::PathBuf>,
        /// Their ground truth.
        truth: DetectionTruth,
    },
}

impl EvalData {
    /// Images in the set.
    pub fn len(&self) -> usize {
        match self {
            EvalData::Classification(s) => s.len(),
            EvalData::Detection { images, .. } => images.len(),
        }
    }

    /// Whether the set has no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The accuracy of one model on an [`EvalData`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evaluation {
    /// Top-1, top-5 and the rest.
    Classification(ClassificationReport),
    /// mAP and the rest.
    Detection(DetectionReport),
}

impl Evaluation {
    /// The metric an accuracy budget is counted in: `top1` or `map50`.
    pub fn metric_name(&self) -> &'static str {
        match self {
            Evaluation::Classification(_) => "top1",
            Evaluation::Detection(_) => "map50",
        }
    }

    /// That metric, as a fraction.
    pub fn headline(&self) -> f64 {
        match self {
            Evaluation::Classification(r) => r.top1,
            Evaluation::Detection(r) => r.map50,
        }
    }
}

/// Evaluates a model given as its manifest and ONNX bytes. `fp32` is the FP32
/// model's manifest and bytes, needed as the reference when the truth is
/// [`DetectionTruth::Fp32`].
pub fn evaluate_model(
    manifest: &Manifest,
    onnx: &[u8],
    data: &EvalData,
    fp32: Option<&[u8]>,
    base: &Config,
    progress: bool,
) -> Result<Evaluation> {
    let predictor = |config: &Config, bytes: &[u8]| -> Result<Predictor> {
        Ok(Predictor::from_parts(
            manifest.clone(),
            bytes,
            config.resolve()?,
        )?)
    };
    let model = predictor(&evaluation_config(manifest.task, base), onnx)?;
    match data {
        EvalData::Classification(samples) => Ok(Evaluation::Classification(
            evaluate_classification(&model, samples, progress)?,
        )),
        EvalData::Detection { images, truth } => {
            let reference;
            let truth = match truth {
                DetectionTruth::LabelFiles => Truth::LabelFiles,
                DetectionTruth::Coco(index) => Truth::Coco(index),
                DetectionTruth::Fp32 => {
                    let bytes = fp32.ok_or_else(|| {
                        TrainerError::Invalid("agreement with FP32 needs the FP32 model".into())
                    })?;
                    reference = predictor(&reference_config(base), bytes)?;
                    Truth::Reference(&reference)
                }
            };
            Ok(Evaluation::Detection(evaluate_detection(
                &model, images, truth, progress,
            )?))
        }
    }
}

/// Reads the dataset a `task` model is measured on. Classification: an
/// ImageFolder tree or a labels.tsv list. Detection: the images of a folder, with
/// ground truth from `annotations` (COCO json), else from label files beside the
/// images, else (no labels at all) agreement with the FP32 model.
pub fn load_eval_data(
    task: Task,
    dataset: &std::path::Path,
    annotations: Option<&std::path::Path>,
    labels: &[String],
) -> Result<EvalData> {
    match task {
        Task::Classification => Ok(EvalData::Classification(
            crate::dataset::load_classification(dataset, labels)?,
        )),
        Task::Detection => {
            let images = crate::quantize::calibration_images(dataset)?;
            let truth = match annotations {
                Some(a) => DetectionTruth::Coco(CocoIndex::load(a, labels)?),
                None if images
                    .iter()
                    .any(|i| yolo_label_file(i).is_some() || voc_file(i).is_some()) =>
                {
                    DetectionTruth::LabelFiles
                }
                None => DetectionTruth::Fp32,
            };
            Ok(EvalData::Detection { images, truth })
        }
        Task::Raw => Err(TrainerError::Invalid(
            "accuracy needs a classification or detection model".into(),
        )),
    }
}
