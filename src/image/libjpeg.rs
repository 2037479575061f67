//! JPEG decoding with libjpeg-turbo (feature `libjpeg`, on by default), for pixels identical
//! to those PIL, OpenCV and therefore facenet-pytorch see.
//!
//! The `image` crate's pure-Rust JPEG decoder (zune-jpeg) uses a different inverse DCT and
//! chroma upsampling than libjpeg-turbo: on LFW's photos its pixels differ by up to ±5 levels
//! (mean 0.2), enough to move an MTCNN box by 2–3 px. libjpeg-turbo's default path (accurate
//! integer IDCT, "fancy" upsampling) is what PIL uses, so decoding with it makes our pipeline
//! see exactly the reference's pixels.
//!
//! Policy: [`decode_rgb`] returns `None` on anything libjpeg does not decode *cleanly* (a fatal
//! error, or any warning such as a truncated file or corrupt entropy data, which libjpeg would
//! otherwise paper over with grey rows) and on colour spaces it cannot turn into RGB (CMYK,
//! YCCK); the caller then decodes with the `image` crate, whose errors name the problem.

use image::RgbImage;
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr};
use std::os::raw::c_int;

/// What unwinds out of libjpeg's callbacks (caught in [`decode_rgb`]).
struct LibjpegFailure;

extern "C-unwind" fn error_exit(_cinfo: &mut jpeg_common_struct) {
    // `resume_unwind` skips the panic hook: nothing is printed.
    std::panic::resume_unwind(Box::new(LibjpegFailure));
}

extern "C-unwind" fn emit_message(_cinfo: &mut jpeg_common_struct, level: c_int) {
    // Level −1 is a warning (corrupt data that libjpeg would patch over); ≥ 0 are traces.
    if level < 0 {
        std::panic::resume_unwind(Box::new(LibjpegFailure));
    }
}

fn error_manager() -> jpeg_error_mgr {
    // SAFETY: `jpeg_error_mgr` is a C struct of integers, pointers and nullable function
    // pointers, for which all-zero is valid; `jpeg_std_error` then fills in every field.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err
}

/// Decodes a baseline or progressive JPEG (YCbCr, greyscale or RGB) to 8-bit RGB exactly as
/// libjpeg-turbo does by default; `None` when libjpeg reports any error or warning or cannot
/// produce RGB. `expect` is the size the caller read from the header (a mismatch is `None`).
pub(crate) fn decode_rgb(bytes: &[u8], expect: (u32, u32)) -> Option<RgbImage> {
    let run = || -> std::io::Result<Option<RgbImage>> {
        let d = mozjpeg::Decompress::with_err(error_manager()).from_mem(bytes)?;
        let (w, h) = (d.width() as u32, d.height() as u32);
        if (w, h) != expect {
            return Ok(None);
        }
        let mut started = d.rgb()?;
        let px: Vec<u8> = started.read_scanlines()?;
        started.finish()?;
        Ok(RgbImage::from_raw(w, h, px))
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(img)) => img,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: &RgbImage, quality: u8) -> Vec<u8> {
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality)
            .encode_image(img)
            .unwrap();
        buf
    }

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        })
    }

    #[test]
    fn decodes_close_to_the_source_and_to_the_image_crate() {
        let src = pattern(37, 29);
        let bytes = encode(&src, 95);
        let ours = decode_rgb(&bytes, (37, 29)).expect("clean JPEG decodes");
        let theirs = image::load_from_memory(&bytes).unwrap().to_rgb8();
        let max_diff = |a: &RgbImage, b: &RgbImage| {
            a.as_raw()
                .iter()
                .zip(b.as_raw())
                .map(|(&x, &y)| (x as i32 - y as i32).abs())
                .max()
                .unwrap()
        };
        // Two decoders of one file: a few levels apart at most.
        assert!(
            max_diff(&ours, &theirs) <= 8,
            "{}",
            max_diff(&ours, &theirs)
        );
        // And near the source (quality 95 on a busy pattern).
        let mean: f64 = ours
            .as_raw()
            .iter()
            .zip(src.as_raw())
            .map(|(&x, &y)| (x as f64 - y as f64).abs())
            .sum::<f64>()
            / (37.0 * 29.0 * 3.0);
        assert!(mean < 6.0, "mean abs error {mean}");
    }

    #[test]
    fn greyscale_becomes_rgb() {
        let grey = image::GrayImage::from_fn(16, 8, |x, _| image::Luma([(x * 15) as u8]));
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
            .encode_image(&grey)
            .unwrap();
        let img = decode_rgb(&buf, (16, 8)).unwrap();
        assert!(img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    }

    #[test]
    fn damaged_files_are_refused_not_patched() {
        let bytes = encode(&pattern(64, 64), 90);
        // Truncated: libjpeg would fill the missing rows with grey and warn.
        assert!(decode_rgb(&bytes[..bytes.len() / 2], (64, 64)).is_none());
        // Header only, garbage, empty.
        assert!(decode_rgb(&bytes[..200], (64, 64)).is_none());
        assert!(decode_rgb(b"not a jpeg at all", (64, 64)).is_none());
        assert!(decode_rgb(&[], (64, 64)).is_none());
        // Wrong expected size.
        assert!(decode_rgb(&bytes, (63, 64)).is_none());
        // Corrupt entropy-coded data in the middle.
        let mut bad = bytes.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 40] {
            *b = 0xA5;
        }
        assert!(decode_rgb(&bad, (64, 64)).is_none());
        // Still fine afterwards (no state left behind by the unwinds).
        assert!(decode_rgb(&bytes, (64, 64)).is_some());
    }
}
