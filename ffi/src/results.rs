//! `outpost_results_t`: the typed results of one inference.

use std::ffi::{c_char, CString};

use outpost_runtime::{Error, Prediction};

use crate::boundary::{guard, out};
use crate::handles::Registry;
use crate::strings::answer_json;

/// The results of one inference.
pub struct OutpostResults {
    _opaque: [u8; 0],
}

/// Task of classification results: read them with `outpost_results_classification`.
pub const OUTPOST_TASK_CLASSIFICATION: i32 = 1;
/// Task of detection results: read them with `outpost_results_detection`.
pub const OUTPOST_TASK_DETECTION: i32 = 2;
/// Task of a model without a decoder: raw output tensors, read as JSON.
pub const OUTPOST_TASK_RAW: i32 = 3;

/// One class of a classification result.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OutpostClassification {
    /// Class index in the model output.
    pub index: u32,
    /// Class name, NUL-terminated UTF-8; owned by the results, valid until they are freed.
    pub label: *const c_char,
    /// Probability in 0..1.
    pub confidence: f32,
}

/// One detected object; the box is in 0..1 of the original image.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OutpostDetection {
    /// Class index.
    pub index: u32,
    /// Class name, NUL-terminated UTF-8; owned by the results, valid until they are freed.
    pub label: *const c_char,
    /// Score in 0..1.
    pub confidence: f32,
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

/// A prediction with its labels as C strings, made once so accessors hand out
/// pointers that live as long as the results.
pub(crate) struct Results {
    prediction: Prediction,
    labels: Vec<CString>,
}

impl From<Prediction> for Results {
    fn from(prediction: Prediction) -> Results {
        let label = |l: &str| CString::new(l.replace('\0', "")).unwrap_or_default();
        let labels = match &prediction {
            Prediction::Classification(c) => c.iter().map(|r| label(&r.label)).collect(),
            Prediction::Detection(d) => d.iter().map(|r| label(&r.label)).collect(),
            Prediction::Raw(_) => Vec::new(),
        };
        Results { prediction, labels }
    }
}

pub(crate) static RESULTS: Registry<Results> = Registry::new(3, "results");

fn out_of_range(index: usize, count: usize) -> Error {
    Error::InvalidArgument(format!(
        "result index {index} is out of range (count {count})"
    ))
}

/// The task of these results (an `OUTPOST_TASK_*` value).
///
/// # Safety
/// `out_task` is NULL (refused) or points to writable memory for one `int32_t`.
#[no_mangle]
pub unsafe extern "C" fn outpost_results_task(
    results: *const OutpostResults,
    out_task: *mut i32,
) -> i32 {
    guard(|| {
        let slot = out(out_task, "out_task", 0)?;
        let r = RESULTS.get(results as usize)?;
        *slot = match r.prediction {
            Prediction::Classification(_) => OUTPOST_TASK_CLASSIFICATION,
            Prediction::Detection(_) => OUTPOST_TASK_DETECTION,
            Prediction::Raw(_) => OUTPOST_TASK_RAW,
        };
        Ok(())
    })
}

/// How many classes, boxes or raw outputs these results hold.
///
/// # Safety
/// `out_count` is NULL (refused) or points to writable memory for one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn outpost_results_count(
    results: *const OutpostResults,
    out_count: *mut usize,
) -> i32 {
    guard(|| {
        let slot = out(out_count, "out_count", 0)?;
        let r = RESULTS.get(results as usize)?;
        *slot = match &r.prediction {
            Prediction::Classification(c) => c.len(),
            Prediction::Detection(d) => d.len(),
            Prediction::Raw(t) => t.len(),
        };
        Ok(())
    })
}

/// Class `index` (0 is the best) of classification results. Results of another
/// task are 1006, as is an index at or past the count.
///
/// # Safety
/// `out_class` is NULL (refused) or points to writable memory for one
/// `outpost_classification_t`.
#[no_mangle]
pub unsafe extern "C" fn outpost_results_classification(
    results: *const OutpostResults,
    index: usize,
    out_class: *mut OutpostClassification,
) -> i32 {
    guard(|| {
        let empty = OutpostClassification {
            index: 0,
            label: std::ptr::null(),
            confidence: 0.0,
        };
        let slot = out(out_class, "out_class", empty)?;
        let r = RESULTS.get(results as usize)?;
        let Prediction::Classification(c) = &r.prediction else {
            return Err(Error::InvalidArgument(
                "these results are not a classification".into(),
            ));
        };
        let one = c.get(index).ok_or_else(|| out_of_range(index, c.len()))?;
        *slot = OutpostClassification {
            index: one.index as u32,
            label: r.labels[index].as_ptr(),
            confidence: one.confidence,
        };
        Ok(())
    })
}

/// Box `index` (0 is the best) of detection results. Results of another task are
/// 1006, as is an index at or past the count.
///
/// # Safety
/// `out_box` is NULL (refused) or points to writable memory for one
/// `outpost_detection_t`.
#[no_mangle]
pub unsafe extern "C" fn outpost_results_detection(
    results: *const OutpostResults,
    index: usize,
    out_box: *mut OutpostDetection,
) -> i32 {
    guard(|| {
        let empty = OutpostDetection {
            index: 0,
            label: std::ptr::null(),
            confidence: 0.0,
            x1: 0.0,
            y1: 0.0,
            x2: 0.0,
            y2: 0.0,
        };
        let slot = out(out_box, "out_box", empty)?;
        let r = RESULTS.get(results as usize)?;
        let Prediction::Detection(d) = &r.prediction else {
            return Err(Error::InvalidArgument(
                "these results are not a detection".into(),
            ));
        };
        let one = d.get(index).ok_or_else(|| out_of_range(index, d.len()))?;
        *slot = OutpostDetection {
            index: one.index as u32,
            label: r.labels[index].as_ptr(),
            confidence: one.confidence,
            x1: one.x1,
            y1: one.y1,
            x2: one.x2,
            y2: one.y2,
        };
        Ok(())
    })
}

/// The results as JSON, the same text in every binding:
/// `{"task":"classification","results":[{"index":..,"label":..,"confidence":..}]}`,
/// detections add `x1, y1, x2, y2`; raw outputs give `name`, `shape` and `data`.
///
/// Ownership: the caller frees `*out_json` with `outpost_string_free`.
///
/// # Safety
/// `out_json` is NULL (refused) or points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn outpost_results_json(
    results: *const OutpostResults,
    out_json: *mut *mut c_char,
) -> i32 {
    answer_json(out_json, false, || {
        let r = RESULTS.get(results as usize)?;
        serde_json::to_string(&r.prediction)
            .map_err(|e| Error::Internal(format!("results to JSON: {e}")))
    })
}

/// Frees results; their label pointers die with them. Freeing NULL does nothing;
/// freeing twice is 1007.
#[no_mangle]
pub extern "C" fn outpost_results_free(results: *mut OutpostResults) -> i32 {
    guard(|| RESULTS.remove(results as usize))
}
