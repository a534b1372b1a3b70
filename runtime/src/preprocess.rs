//! Image to input tensor: resize (stretch, letterbox, short side + centre crop),
//! colour order, mean/std, layout. Resizing uses `fast_image_resize`'s bilinear
//! convolution, which follows Pillow's filter so results match the reference
//! pipeline to within a grey level.

use std::borrow::Cow;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::package::manifest::{ColorOrder, Layout, Preprocess, Resize};

/// Maps a point in model-input pixels back to the original image:
/// `original = (model - offset) / scale`, per axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Model pixels per original pixel, x and y.
    pub scale: [f64; 2],
    /// Position of the original image's origin in model pixels, x and y.
    pub offset: [f64; 2],
    /// Original width and height in pixels.
    pub original: [u32; 2],
}

impl Transform {
    /// Maps a model-input point to 0..1 of the original image, clamped to the image.
    pub fn to_unit(&self, x: f32, y: f32) -> (f32, f32) {
        let [w, h] = self.original;
        let ox = ((f64::from(x) - self.offset[0]) / self.scale[0]).clamp(0.0, f64::from(w));
        let oy = ((f64::from(y) - self.offset[1]) / self.scale[1]).clamp(0.0, f64::from(h));
        ((ox / f64::from(w)) as f32, (oy / f64::from(h)) as f32)
    }
}

/// A preprocessed input: tensor data in the model's layout, and how to map back.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Tensor shape, e.g. `[1, 3, 224, 224]`.
    pub shape: [usize; 4],
    /// Tensor values, row-major.
    pub data: Vec<f32>,
    /// Model-input to original-image mapping.
    pub transform: Transform,
}

/// Per-channel lookup from a grey level to its normalised value, in model channel order.
#[derive(Debug, Clone)]
pub struct Normalizer {
    lut: [[f32; 256]; 3],
}

impl Normalizer {
    /// Precomputes `(v - mean) / std` for every 8-bit value and channel.
    pub fn new(mean: [f64; 3], std: [f64; 3]) -> Normalizer {
        let mut lut = [[0.0; 256]; 3];
        for c in 0..3 {
            for (v, slot) in lut[c].iter_mut().enumerate() {
                *slot = ((v as f64 - mean[c]) / std[c]) as f32;
            }
        }
        Normalizer { lut }
    }
}

/// Ties a [`Preprocess`] spec to its precomputed tables.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    spec: Preprocess,
    norm: Normalizer,
}

/// Python's `round()`, which the reference pipeline uses for sizes.
fn round_size(x: f64) -> u32 {
    (x.round_ties_even() as u32).max(1)
}

impl Preprocessor {
    /// Builds from a validated spec.
    pub fn new(spec: Preprocess) -> Preprocessor {
        let norm = Normalizer::new(spec.mean, spec.std);
        Preprocessor { spec, norm }
    }

    /// The spec in use.
    pub fn spec(&self) -> &Preprocess {
        &self.spec
    }

    /// Turns a decoded image into the model input.
    pub fn run(&self, img: &RgbImage) -> Result<Prepared> {
        let (out_w, out_h) = self.spec.resize.output_size();
        let (w, h) = (img.width, img.height);
        let shape = self.spec.tensor_shape();
        let mut data = vec![0.0f32; shape.iter().product()];
        let transform = match self.spec.resize {
            Resize::Stretch { .. } => {
                let resized = resize(img, out_w, out_h)?;
                self.write(&resized, out_w, 0, 0, out_w, out_h, 0, 0, &mut data);
                Transform {
                    scale: [
                        f64::from(out_w) / f64::from(w),
                        f64::from(out_h) / f64::from(h),
                    ],
                    offset: [0.0, 0.0],
                    original: [w, h],
                }
            }
            Resize::Letterbox { pad_value, .. } => {
                let r = (f64::from(out_w) / f64::from(w)).min(f64::from(out_h) / f64::from(h));
                let (nw, nh) = (
                    round_size(f64::from(w) * r).min(out_w),
                    round_size(f64::from(h) * r).min(out_h),
                );
                let (dx, dy) = ((out_w - nw) / 2, (out_h - nh) / 2);
                self.fill(pad_value, &mut data);
                let resized = resize(img, nw, nh)?;
                self.write(&resized, nw, 0, 0, nw, nh, dx, dy, &mut data);
                Transform {
                    scale: [r, r],
                    offset: [f64::from(dx), f64::from(dy)],
                    original: [w, h],
                }
            }
            Resize::ShortSideCenterCrop { short_side, .. } => {
                let s = f64::from(short_side) / f64::from(w.min(h));
                let (rw, rh) = (
                    round_size(f64::from(w) * s).max(out_w),
                    round_size(f64::from(h) * s).max(out_h),
                );
                let (left, top) = ((rw - out_w) / 2, (rh - out_h) / 2);
                let resized = resize(img, rw, rh)?;
                self.write(&resized, rw, left, top, out_w, out_h, 0, 0, &mut data);
                Transform {
                    scale: [f64::from(rw) / f64::from(w), f64::from(rh) / f64::from(h)],
                    offset: [-f64::from(left), -f64::from(top)],
                    original: [w, h],
                }
            }
        };
        Ok(Prepared {
            shape,
            data,
            transform,
        })
    }

    /// Fills the whole tensor with the normalised value of one grey level.
    fn fill(&self, grey: u8, data: &mut [f32]) {
        let (out_w, out_h) = self.spec.resize.output_size();
        let plane = out_w as usize * out_h as usize;
        let vals = self.channel_values([grey; 3]);
        match self.spec.layout {
            Layout::NCHW => {
                for (c, v) in vals.iter().enumerate() {
                    data[c * plane..(c + 1) * plane].fill(*v);
                }
            }
            Layout::NHWC => {
                for px in data.chunks_exact_mut(3) {
                    px.copy_from_slice(&vals);
                }
            }
        }
    }

    fn channel_values(&self, rgb: [u8; 3]) -> [f32; 3] {
        let ordered = match self.spec.color {
            ColorOrder::RGB => rgb,
            ColorOrder::BGR => [rgb[2], rgb[1], rgb[0]],
        };
        [
            self.norm.lut[0][ordered[0] as usize],
            self.norm.lut[1][ordered[1] as usize],
            self.norm.lut[2][ordered[2] as usize],
        ]
    }

    /// Normalises a `cw`×`ch` window at (`sx`, `sy`) of a packed RGB buffer `src`
    /// (`src_w` wide) into the tensor at (`dx`, `dy`).
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        src: &[u8],
        src_w: u32,
        sx: u32,
        sy: u32,
        cw: u32,
        ch: u32,
        dx: u32,
        dy: u32,
        data: &mut [f32],
    ) {
        let (out_w, out_h) = self.spec.resize.output_size();
        let (out_w, plane) = (out_w as usize, out_w as usize * out_h as usize);
        // Which source byte feeds model channel c.
        let pick: [usize; 3] = match self.spec.color {
            ColorOrder::RGB => [0, 1, 2],
            ColorOrder::BGR => [2, 1, 0],
        };
        let lut = &self.norm.lut;
        for y in 0..ch as usize {
            let row_start = ((sy as usize + y) * src_w as usize + sx as usize) * 3;
            let row = &src[row_start..row_start + cw as usize * 3];
            let out_row = (dy as usize + y) * out_w + dx as usize;
            match self.spec.layout {
                Layout::NCHW => {
                    for c in 0..3 {
                        let dst = &mut data[c * plane + out_row..c * plane + out_row + cw as usize];
                        let t = &lut[c];
                        for (d, px) in dst.iter_mut().zip(row.chunks_exact(3)) {
                            *d = t[px[pick[c]] as usize];
                        }
                    }
                }
                Layout::NHWC => {
                    let dst = &mut data[out_row * 3..(out_row + cw as usize) * 3];
                    for (d, px) in dst.chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                        for c in 0..3 {
                            d[c] = lut[c][px[pick[c]] as usize];
                        }
                    }
                }
            }
        }
    }
}

/// Bilinear (Pillow-style, antialiased) resize of packed RGB; borrows when the
/// size already fits.
fn resize(img: &RgbImage, w: u32, h: u32) -> Result<Cow<'_, [u8]>> {
    if img.width == w && img.height == h {
        return Ok(Cow::Borrowed(&img.data));
    }
    let src = ImageRef::new(img.width, img.height, &img.data, PixelType::U8x3)
        .map_err(|e| Error::InvalidBuffer(e.to_string()))?;
    let mut dst = Image::new(w, h, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| Error::InvalidBuffer(e.to_string()))?;
    Ok(Cow::Owned(dst.into_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
        RgbImage {
            width: w,
            height: h,
            data: rgb
                .iter()
                .copied()
                .cycle()
                .take((w * h * 3) as usize)
                .collect(),
        }
    }

    fn spec(resize: Resize, color: ColorOrder, layout: Layout) -> Preprocess {
        Preprocess {
            color,
            layout,
            resize,
            mean: [10.0, 20.0, 30.0],
            std: [2.0, 4.0, 5.0],
        }
    }

    #[test]
    fn stretch_normalises_per_channel_in_model_order() {
        let img = solid(5, 3, [110, 60, 80]);
        let p = Preprocessor::new(spec(
            Resize::Stretch {
                width: 4,
                height: 2,
            },
            ColorOrder::RGB,
            Layout::NCHW,
        ))
        .run(&img)
        .unwrap();
        assert_eq!(p.shape, [1, 3, 2, 4]);
        assert!(p.data[..8].iter().all(|&v| v == 50.0));
        assert!(p.data[8..16].iter().all(|&v| v == 10.0));
        assert!(p.data[16..].iter().all(|&v| v == 10.0));
        // BGR + NHWC: channel 0 is blue, normalised with mean[0]/std[0].
        let p = Preprocessor::new(spec(
            Resize::Stretch {
                width: 4,
                height: 2,
            },
            ColorOrder::BGR,
            Layout::NHWC,
        ))
        .run(&img)
        .unwrap();
        assert_eq!(p.shape, [1, 2, 4, 3]);
        assert_eq!(&p.data[..3], &[(80.0 - 10.0) / 2.0, 10.0, 16.0]);
    }

    #[test]
    fn letterbox_centres_and_pads() {
        // 20x10 into 8x8: scale 0.4 -> 8x4 placed at dy = 2.
        let img = solid(20, 10, [200, 200, 200]);
        let mut s = spec(
            Resize::Letterbox {
                width: 8,
                height: 8,
                pad_value: 114,
            },
            ColorOrder::RGB,
            Layout::NCHW,
        );
        s.mean = [0.0; 3];
        s.std = [1.0; 3];
        let p = Preprocessor::new(s).run(&img).unwrap();
        let row = |y: usize| &p.data[y * 8..y * 8 + 8];
        assert!(row(0).iter().all(|&v| v == 114.0));
        assert!(row(1).iter().all(|&v| v == 114.0));
        assert!(row(2).iter().all(|&v| v == 200.0));
        assert!(row(5).iter().all(|&v| v == 200.0));
        assert!(row(6).iter().all(|&v| v == 114.0));
        assert_eq!(p.transform.offset, [0.0, 2.0]);
        // The image's own corners map to 0 and 1.
        assert_eq!(p.transform.to_unit(0.0, 2.0), (0.0, 0.0));
        assert_eq!(p.transform.to_unit(8.0, 6.0), (1.0, 1.0));
        // Padding maps outside and is clamped.
        assert_eq!(p.transform.to_unit(0.0, 0.0), (0.0, 0.0));
    }

    #[test]
    fn short_side_crop_takes_the_centre() {
        // 40x20, left half black, right half white; short side 10 -> 20x10, crop 10x10.
        let mut img = solid(40, 20, [0, 0, 0]);
        for y in 0..20 {
            for x in 20..40 {
                let i = (y * 40 + x) * 3;
                img.data[i..i + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let mut s = spec(
            Resize::ShortSideCenterCrop {
                short_side: 10,
                width: 10,
                height: 10,
            },
            ColorOrder::RGB,
            Layout::NCHW,
        );
        s.mean = [0.0; 3];
        s.std = [1.0; 3];
        let p = Preprocessor::new(s).run(&img).unwrap();
        assert_eq!(p.transform.offset, [-5.0, 0.0]);
        assert_eq!(p.data[0], 0.0);
        assert_eq!(p.data[9], 255.0);
        assert_eq!(p.transform.to_unit(5.0, 5.0), (0.5, 0.5));
    }
}
