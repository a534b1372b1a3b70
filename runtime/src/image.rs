//! Images as callers hand them in, and their decoding to packed RGB.

use std::io::Cursor;

use crate::error::{Error, Result};

/// Largest image side accepted, in pixels; larger inputs are refused before decoding.
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// Byte order of one pixel in a raw buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Red, green, blue; 3 bytes.
    Rgb8,
    /// Blue, green, red; 3 bytes (OpenCV's default).
    Bgr8,
    /// Red, green, blue, alpha; 4 bytes.
    Rgba8,
    /// Blue, green, red, alpha; 4 bytes (Android `ARGB_8888` ints on little-endian).
    Bgra8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb8 | PixelFormat::Bgr8 => 3,
            PixelFormat::Rgba8 | PixelFormat::Bgra8 => 4,
        }
    }
}

/// A borrowed raw pixel buffer, rows top to bottom, `stride` bytes apart.
#[derive(Debug, Clone, Copy)]
pub struct RawImage<'a> {
    /// Pixel bytes; at least `stride * (height - 1) + width * bytes_per_pixel`.
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from one row to the next (at least `width * bytes_per_pixel`).
    pub stride: usize,
    /// Pixel byte order.
    pub format: PixelFormat,
}

impl<'a> RawImage<'a> {
    /// A tightly packed buffer (stride = width × bytes per pixel).
    pub fn packed(data: &'a [u8], width: u32, height: u32, format: PixelFormat) -> Self {
        RawImage {
            data,
            width,
            height,
            stride: width as usize * format.bytes_per_pixel(),
            format,
        }
    }
}

/// An image to infer on.
#[derive(Debug, Clone, Copy)]
pub enum ImageInput<'a> {
    /// Encoded JPEG, PNG or BMP bytes.
    Encoded(&'a [u8]),
    /// Raw pixels.
    Raw(RawImage<'a>),
}

/// A decoded image: packed 8-bit RGB, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl ImageInput<'_> {
    /// Decodes or converts to packed RGB, checking every size.
    pub fn to_rgb(&self) -> Result<RgbImage> {
        match self {
            ImageInput::Encoded(bytes) => decode(bytes),
            ImageInput::Raw(raw) => convert(raw),
        }
    }
}

fn check_size(width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::EmptyImage(format!("{width}x{height} pixels")));
    }
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(Error::ImageTooLarge {
            width,
            height,
            max: MAX_IMAGE_SIDE,
        });
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::EmptyImage("no bytes".into()));
    }
    #[cfg(feature = "libjpeg-turbo")]
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_jpeg(bytes);
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::ImageDecode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(Error::ImageDecode(
            "unknown format (expected JPEG, PNG or BMP)".into(),
        ));
    }
    // Read the header alone first, so an oversized image is refused before any
    // pixel memory is allocated.
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| Error::ImageDecode(e.to_string()))?;
    check_size(width, height)?;
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::ImageDecode(e.to_string()))?;
    let img = reader
        .decode()
        .map_err(|e| Error::ImageDecode(e.to_string()))?
        .into_rgb8();
    Ok(RgbImage {
        width,
        height,
        data: img.into_raw(),
    })
}

/// JPEG through libjpeg-turbo, so pixels equal those of the Pillow/OpenCV
/// pipelines a model was trained with (other decoders differ by a few grey levels).
#[cfg(feature = "libjpeg-turbo")]
fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage> {
    // libjpeg reports errors by unwinding (`resume_unwind`, no panic message).
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<Result<RgbImage>> {
        let header = mozjpeg::Decompress::new_mem(bytes)?;
        let (w, h) = header.size();
        let (width, height) = (
            u32::try_from(w).unwrap_or(u32::MAX),
            u32::try_from(h).unwrap_or(u32::MAX),
        );
        if let Err(e) = check_size(width, height) {
            return Ok(Err(e));
        }
        let mut started = header.rgb()?;
        let data: Vec<u8> = started.read_scanlines()?;
        started.finish()?;
        Ok(Ok(RgbImage {
            width,
            height,
            data,
        }))
    });
    match decoded {
        Ok(Ok(result)) => {
            let img = result?;
            if img.data.len() != img.width as usize * img.height as usize * 3 {
                return Err(Error::ImageDecode("JPEG data ends early".into()));
            }
            Ok(img)
        }
        Ok(Err(e)) => Err(Error::ImageDecode(format!("JPEG: {e}"))),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "corrupt data".into());
            Err(Error::ImageDecode(format!("JPEG: {msg}")))
        }
    }
}

fn convert(raw: &RawImage<'_>) -> Result<RgbImage> {
    check_size(raw.width, raw.height)?;
    let bpp = raw.format.bytes_per_pixel();
    let row = raw.width as usize * bpp;
    if raw.stride < row {
        return Err(Error::InvalidBuffer(format!(
            "stride {} is smaller than a row of {row} bytes",
            raw.stride
        )));
    }
    let needed = raw
        .stride
        .checked_mul(raw.height as usize - 1)
        .and_then(|n| n.checked_add(row))
        .ok_or_else(|| Error::InvalidBuffer("size overflows".into()))?;
    if raw.data.len() < needed {
        return Err(Error::InvalidBuffer(format!(
            "{} bytes given, {needed} needed for {}x{} with stride {}",
            raw.data.len(),
            raw.width,
            raw.height,
            raw.stride
        )));
    }
    let mut data = Vec::with_capacity(raw.width as usize * raw.height as usize * 3);
    for y in 0..raw.height as usize {
        let line = &raw.data[y * raw.stride..y * raw.stride + row];
        match raw.format {
            PixelFormat::Rgb8 => data.extend_from_slice(line),
            PixelFormat::Bgr8 => line
                .chunks_exact(3)
                .for_each(|p| data.extend_from_slice(&[p[2], p[1], p[0]])),
            PixelFormat::Rgba8 => line
                .chunks_exact(4)
                .for_each(|p| data.extend_from_slice(&p[..3])),
            PixelFormat::Bgra8 => line
                .chunks_exact(4)
                .for_each(|p| data.extend_from_slice(&[p[2], p[1], p[0]])),
        }
    }
    Ok(RgbImage {
        width: raw.width,
        height: raw.height,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_formats_with_padding_convert_to_rgb() {
        // 2x2 image, stride 10 (2 bytes of padding per row for RGBA's 8).
        let rgba = [
            1, 2, 3, 255, 4, 5, 6, 255, 0, 0, //
            7, 8, 9, 255, 10, 11, 12, 255, 0, 0,
        ];
        let expected = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let img = ImageInput::Raw(RawImage {
            data: &rgba,
            width: 2,
            height: 2,
            stride: 10,
            format: PixelFormat::Rgba8,
        })
        .to_rgb()
        .unwrap();
        assert_eq!(img.data, expected);
        let bgr = [3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10];
        let img = ImageInput::Raw(RawImage::packed(&bgr, 2, 2, PixelFormat::Bgr8))
            .to_rgb()
            .unwrap();
        assert_eq!(img.data, expected);
        let bgra = [3, 2, 1, 0, 6, 5, 4, 0, 9, 8, 7, 0, 12, 11, 10, 0];
        let img = ImageInput::Raw(RawImage::packed(&bgra, 2, 2, PixelFormat::Bgra8))
            .to_rgb()
            .unwrap();
        assert_eq!(img.data, expected);
    }

    #[test]
    fn bad_buffers_are_errors_not_panics() {
        let data = [0u8; 12];
        let cases = [
            (RawImage::packed(&data, 0, 2, PixelFormat::Rgb8), 1102),
            (RawImage::packed(&data, 3, 2, PixelFormat::Rgb8), 1103),
            (
                RawImage {
                    stride: 2,
                    ..RawImage::packed(&data, 2, 2, PixelFormat::Rgb8)
                },
                1103,
            ),
            (
                RawImage::packed(&data, MAX_IMAGE_SIDE + 1, 1, PixelFormat::Rgb8),
                1104,
            ),
            (
                RawImage {
                    stride: usize::MAX,
                    ..RawImage::packed(&data, 1, 3, PixelFormat::Rgb8)
                },
                1103,
            ),
        ];
        for (raw, code) in cases {
            assert_eq!(ImageInput::Raw(raw).to_rgb().unwrap_err().code(), code);
        }
    }

    #[test]
    fn corrupt_and_empty_encoded_images_are_errors() {
        assert_eq!(ImageInput::Encoded(&[]).to_rgb().unwrap_err().code(), 1102);
        assert_eq!(
            ImageInput::Encoded(b"definitely not an image")
                .to_rgb()
                .unwrap_err()
                .code(),
            1101
        );
        // A PNG signature followed by garbage.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&[0xff; 64]);
        assert_eq!(ImageInput::Encoded(&png).to_rgb().unwrap_err().code(), 1101);
    }

    #[test]
    fn oversized_encoded_images_are_refused_by_size() {
        let tall = image::GrayImage::new(1, MAX_IMAGE_SIDE + 1);
        let mut png = Cursor::new(Vec::new());
        tall.write_to(&mut png, image::ImageFormat::Png).unwrap();
        let err = ImageInput::Encoded(png.get_ref()).to_rgb().unwrap_err();
        assert_eq!(err.code(), 1104, "{err}");
    }
}
