//! `outpost_predictor_t`: a verified, loaded package, and inference on it.

use std::ffi::c_char;

use outpost_runtime::{Error, ImageInput, PixelFormat, Predictor, RawImage};
use serde_json::json;

use crate::boundary::{bytes, guard, out, text};
use crate::config::{config_of, OutpostConfig};
use crate::handles::Registry;
use crate::results::{OutpostResults, RESULTS};
use crate::strings::answer_json;

/// A loaded model: a verified package, its backend and its decoder.
pub struct OutpostPredictor {
    _opaque: [u8; 0],
}

/// Pixel format of `outpost_predictor_infer_pixels`: red, green, blue, 3 bytes.
pub const OUTPOST_PIXEL_FORMAT_RGB8: i32 = 0;
/// Blue, green, red, 3 bytes (OpenCV's `cv::Mat` default).
pub const OUTPOST_PIXEL_FORMAT_BGR8: i32 = 1;
/// Red, green, blue, alpha, 4 bytes.
pub const OUTPOST_PIXEL_FORMAT_RGBA8: i32 = 2;
/// Blue, green, red, alpha, 4 bytes (Android's `ARGB_8888` on little-endian).
pub const OUTPOST_PIXEL_FORMAT_BGRA8: i32 = 3;

fn pixel_format(value: i32) -> Result<PixelFormat, Error> {
    Ok(match value {
        OUTPOST_PIXEL_FORMAT_RGB8 => PixelFormat::Rgb8,
        OUTPOST_PIXEL_FORMAT_BGR8 => PixelFormat::Bgr8,
        OUTPOST_PIXEL_FORMAT_RGBA8 => PixelFormat::Rgba8,
        OUTPOST_PIXEL_FORMAT_BGRA8 => PixelFormat::Bgra8,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "pixel format {value} is not one of OUTPOST_PIXEL_FORMAT_*"
            )))
        }
    })
}

pub(crate) static PREDICTORS: Registry<Predictor> = Registry::new(2, "predictor");

/// Opens, verifies and loads a package (`.opk` file or unpacked directory).
///
/// `config` may be NULL (environment and defaults). A package is only opened if
/// a trusted key (`trusted_keys`) verifies its signature, and, for a licensed
/// model, a valid licence is installed (or the configured serial activates).
///
/// Ownership: the caller owns `*out_predictor` and frees it with
/// `outpost_predictor_free`.
///
/// # Safety
/// `package_path` is NULL (refused) or a NUL-terminated string; `out_predictor`
/// is NULL (refused) or points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn outpost_predictor_open(
    package_path: *const c_char,
    config: *const OutpostConfig,
    out_predictor: *mut *mut OutpostPredictor,
) -> i32 {
    guard(|| {
        let slot = out(out_predictor, "out_predictor", std::ptr::null_mut())?;
        let path = text(package_path, "package_path")?;
        let config = config_of(config)?;
        let predictor = Predictor::open(path, &config)?;
        *slot = PREDICTORS.insert(predictor) as *mut OutpostPredictor;
        Ok(())
    })
}

fn infer(
    predictor: *const OutpostPredictor,
    input: ImageInput<'_>,
    slot: &mut *mut OutpostResults,
) -> Result<(), Error> {
    let predictor = PREDICTORS.get(predictor as usize)?;
    let prediction = predictor.infer(input)?;
    *slot = RESULTS.insert(prediction.into()) as *mut OutpostResults;
    Ok(())
}

/// Runs the model on an encoded image (JPEG, PNG or BMP bytes).
///
/// Thread safety: one predictor may infer from several threads at once.
/// Ownership: the caller owns `*out_results` and frees it with
/// `outpost_results_free`; `data` is only read during the call.
///
/// # Safety
/// `data` is NULL (refused) or points to `len` readable bytes; `out_results` is
/// NULL (refused) or points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn outpost_predictor_infer_image(
    predictor: *const OutpostPredictor,
    data: *const u8,
    len: usize,
    out_results: *mut *mut OutpostResults,
) -> i32 {
    guard(|| {
        let slot = out(out_results, "out_results", std::ptr::null_mut())?;
        let data = bytes(data, len, "data")?;
        infer(predictor, ImageInput::Encoded(data), slot)
    })
}

/// Runs the model on raw pixels: `height` rows of `width` pixels, rows `stride`
/// bytes apart, in `format` (an `outpost_pixel_format_t` value). `len` is the size
/// of the buffer, at least `stride * (height - 1) + width * bytes_per_pixel`; a
/// buffer that is too short is 1103, not a read past its end.
///
/// Thread safety and ownership as `outpost_predictor_infer_image`.
///
/// # Safety
/// `data` is NULL (refused) or points to `len` readable bytes; `out_results` is
/// NULL (refused) or points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn outpost_predictor_infer_pixels(
    predictor: *const OutpostPredictor,
    data: *const u8,
    len: usize,
    width: u32,
    height: u32,
    stride: usize,
    format: i32,
    out_results: *mut *mut OutpostResults,
) -> i32 {
    guard(|| {
        let slot = out(out_results, "out_results", std::ptr::null_mut())?;
        let data = bytes(data, len, "data")?;
        let raw = RawImage {
            data,
            width,
            height,
            stride,
            format: pixel_format(format)?,
        };
        infer(predictor, ImageInput::Raw(raw), slot)
    })
}

/// Describes an open predictor as JSON: model name and version, task, labels,
/// input shape, precision, artifact, backend, threads, threshold, signing key id.
///
/// Ownership: the caller frees `*out_json` with `outpost_string_free`.
///
/// # Safety
/// `out_json` is NULL (refused) or points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn outpost_predictor_info(
    predictor: *const OutpostPredictor,
    out_json: *mut *mut c_char,
) -> i32 {
    answer_json(out_json, false, || {
        let p = PREDICTORS.get(predictor as usize)?;
        Ok(info_json(&p))
    })
}

/// What `outpost_predictor_info` (and Java's `Predictor.info`) says of a predictor.
pub(crate) fn info_json(p: &Predictor) -> String {
    let m = p.manifest();
    json!({
        "model": m.model.name,
        "version": m.model.version,
        "task": m.task.as_str(),
        "labels": m.labels,
        "input_shape": m.input().shape,
        "precision": p.precision().as_str(),
        "artifact": p.artifact(),
        "backend": p.backend_name(),
        "threads": p.settings().threads,
        "threshold": p.threshold(),
        "key_id": p.key_id(),
    })
    .to_string()
}

/// Frees a predictor. Inferences running on other threads finish first, on their
/// own reference. Freeing NULL does nothing; freeing twice is 1007.
#[no_mangle]
pub extern "C" fn outpost_predictor_free(predictor: *mut OutpostPredictor) -> i32 {
    guard(|| PREDICTORS.remove(predictor as usize))
}
