//! Raw pixel buffers, batches and concurrent use give the same results as the
//! encoded-image path.

mod common;

use std::sync::Arc;

use common::*;
use outpost_runtime::{ImageInput, PixelFormat, Prediction, RawImage};

fn photos() -> Vec<Vec<u8>> {
    ["chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg"]
        .iter()
        .map(|n| std::fs::read(shared().join("images").join(n)).unwrap())
        .collect()
}

#[test]
fn raw_buffers_with_stride_match_encoded_input() {
    let p = efficientnet_package().open();
    let bytes = std::fs::read(shared().join("images/coffee.jpg")).unwrap();
    let expected = p.infer(ImageInput::Encoded(&bytes)).unwrap();
    let rgb = ImageInput::Encoded(&bytes).to_rgb().unwrap();
    let (w, h) = (rgb.width, rgb.height);
    for format in [
        PixelFormat::Rgb8,
        PixelFormat::Bgr8,
        PixelFormat::Rgba8,
        PixelFormat::Bgra8,
    ] {
        let bpp = format.bytes_per_pixel();
        let stride = w as usize * bpp + 13;
        let mut buf = vec![0u8; stride * h as usize];
        for y in 0..h as usize {
            for x in 0..w as usize {
                let s = &rgb.data[(y * w as usize + x) * 3..][..3];
                let d = &mut buf[y * stride + x * bpp..][..bpp];
                match format {
                    PixelFormat::Rgb8 => d.copy_from_slice(s),
                    PixelFormat::Bgr8 => d.copy_from_slice(&[s[2], s[1], s[0]]),
                    PixelFormat::Rgba8 => d.copy_from_slice(&[s[0], s[1], s[2], 255]),
                    PixelFormat::Bgra8 => d.copy_from_slice(&[s[2], s[1], s[0], 255]),
                }
            }
        }
        let raw = RawImage {
            data: &buf,
            width: w,
            height: h,
            stride,
            format,
        };
        assert_eq!(
            p.infer(ImageInput::Raw(raw)).unwrap(),
            expected,
            "{format:?}"
        );
    }
}

#[test]
fn batch_equals_single_calls_and_threshold_top_k_apply() {
    let pkg = efficientnet_package();
    let p = pkg.open();
    let photos = photos();
    let inputs: Vec<ImageInput> = photos.iter().map(|b| ImageInput::Encoded(b)).collect();
    let batch = p.infer_batch(&inputs).unwrap();
    for (img, got) in inputs.iter().zip(&batch) {
        assert_eq!(&p.infer(*img).unwrap(), got);
    }
    let strict = outpost_runtime::Predictor::open(
        &pkg.path,
        &outpost_runtime::Config {
            threshold: Some(0.1),
            top_k: Some(2),
            ..pkg.config()
        },
    )
    .unwrap();
    let got = strict.infer(inputs[0]).unwrap();
    let got = got.classifications().unwrap();
    // chelsea: tiger cat 0.38, Egyptian cat 0.36, tabby 0.17 -> top-2 above 0.1.
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|c| c.confidence >= 0.1));
    let bad = vec![];
    let err = p
        .infer_batch(&[inputs[0], ImageInput::Encoded(&bad)])
        .unwrap_err();
    assert_eq!(err.code(), 1102);
}

#[test]
fn four_threads_times_fifty_inferences_equal_serial_results() {
    let pkg = efficientnet_package();
    let predictor = Arc::new(pkg.open());
    let photos = Arc::new(photos());
    let serial: Vec<Prediction> = photos
        .iter()
        .map(|b| predictor.infer(ImageInput::Encoded(b)).unwrap())
        .collect();
    let serial = Arc::new(serial);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (predictor, photos, serial) = (predictor.clone(), photos.clone(), serial.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    let k = (t + i) % photos.len();
                    let got = predictor.infer(ImageInput::Encoded(&photos[k])).unwrap();
                    assert_eq!(got, serial[k], "thread {t} run {i}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread");
    }
}

#[test]
fn multithreaded_executor_gives_the_same_answer() {
    let pkg = efficientnet_package();
    let one = pkg.open();
    let two = outpost_runtime::Predictor::open(
        &pkg.path,
        &outpost_runtime::Config {
            threads: Some(2),
            ..pkg.config()
        },
    )
    .unwrap();
    assert_eq!(two.settings().threads, 2);
    let bytes = std::fs::read(shared().join("images/rocket.jpg")).unwrap();
    let a = one.infer(ImageInput::Encoded(&bytes)).unwrap();
    let b = two.infer(ImageInput::Encoded(&bytes)).unwrap();
    let (a, b) = (a.classifications().unwrap(), b.classifications().unwrap());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.index, y.index);
        assert!((x.confidence - y.confidence).abs() < 1e-4);
    }
}
