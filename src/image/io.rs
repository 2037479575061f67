//! Robust image decoding for datasets assembled by hand: every failure is an
//! [`crate::Error::Image`] naming the file and saying why in plain words.
//!
//! What [`load_image`] does, in order:
//! - reads the file (an empty file, or one over [`MAX_FILE_BYTES`], is refused);
//! - guesses the format from the content (magic bytes), falling back to the extension, so a
//!   PNG named `.jpg` decodes and a text file named `.jpg` is reported as text;
//! - refuses a JPEG that ends inside its image data (no end-of-image marker after the first
//!   scan: a download or copy cut short), which decoders would otherwise pad with grey rows;
//! - applies decoder limits ([`MAX_SIDE`] × [`MAX_SIDE`] pixels, [`MAX_ALLOC`] bytes): a header
//!   that claims 100000×100000 is an error before anything is allocated;
//! - decodes JPEGs with libjpeg-turbo when the `libjpeg` feature is on (the default), so the
//!   pixels equal PIL's and OpenCV's; anything libjpeg does not decode cleanly (and every other
//!   format) is decoded by the `image` crate (CMYK/YCCK JPEGs are converted by zune-jpeg, an
//!   animated GIF gives its first frame); then the EXIF orientation is applied (JPEG, PNG
//!   `eXIf`, WebP);
//! - converts to 8-bit RGB: greyscale is replicated, 16-bit samples are scaled by 1/257, and
//!   an alpha channel is **composited onto black** (`c·α/255`), so fully transparent pixels are
//!   black whatever colour the file stores under them;
//! - catches a panic inside a decoder (a last resort) and turns it into an error.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

use crate::{Error, Result};

/// Largest accepted width or height, in pixels.
pub const MAX_SIDE: u32 = 20_000;
/// Largest allocation a decoder may make, in bytes (512 MiB).
pub const MAX_ALLOC: u64 = 512 * 1024 * 1024;
/// Largest accepted file size, in bytes (256 MiB).
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Decodes the image at `path` into 8-bit RGB (see the module documentation for the rules).
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Image`] with a human reason otherwise
/// ("empty file", "not an image (looks like text)", "image too large: …", "truncated JPEG: …",
/// "truncated or corrupt JPEG: …").
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::image(
            path,
            format!(
                "file too large: {} bytes exceeds the {} byte limit",
                meta.len(),
                MAX_FILE_BYTES
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image_bytes(&bytes, ImageFormat::from_path(path).ok())
        .map_err(|reason| Error::image(path, reason))
}

/// Decodes an in-memory image (same rules as [`load_image`]); `hint` is the format to try when
/// the content is not recognised (usually the one implied by the file extension).
///
/// # Errors
/// The human-readable reason the bytes could not be decoded.
pub fn decode_image_bytes(
    bytes: &[u8],
    hint: Option<ImageFormat>,
) -> std::result::Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("empty file".to_string());
    }
    let guessed = image::guess_format(bytes).ok();
    let format = match guessed.or(hint) {
        Some(f) if guessed.is_some() || !looks_like_text(bytes) => f,
        _ => {
            return Err(if looks_like_text(bytes) {
                "not an image (looks like text)".to_string()
            } else {
                format!(
                    "not an image: unrecognised format (first bytes: {})",
                    hex_prefix(bytes)
                )
            })
        }
    };
    let name = format_name(format);
    if format == ImageFormat::Jpeg && jpeg_is_truncated(bytes) {
        // Decoders fill the missing rows with grey and return a plausible-looking image.
        return Err(
            "truncated JPEG: the file ends inside the image data (no end-of-image marker)"
                .to_string(),
        );
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_with(bytes, format))) {
        Ok(Ok(img)) => Ok(img),
        Ok(Err(e)) => Err(describe(e, &name)),
        Err(_) => Err(format!("corrupt {name}: the decoder panicked")),
    }
}

/// Whether a JPEG stream stops before its end-of-image marker (a download or copy cut short):
/// the segments are walked from the start-of-image marker to the first scan (so an EXIF
/// thumbnail's own end marker does not count), then an end-of-image marker (`FF D9`) must
/// follow; entropy-coded data never holds that byte pair. `false` when the headers cannot be
/// walked to a scan (the decoder reports those files).
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    loop {
        // Skip fill bytes before a marker.
        while i < bytes.len() && bytes[i] == 0xFF && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(i), bytes.get(i + 1)) else {
            // The headers themselves are cut short or malformed: the decoder says so.
            return false;
        };
        if marker == 0xD9 {
            return false;
        }
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            i += 2;
            continue;
        }
        let Some(len) = bytes
            .get(i + 2..i + 4)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        else {
            return false;
        };
        if marker == 0xDA {
            let scan = bytes.get(i + 2 + len..).unwrap_or(&[]);
            return !scan.windows(2).any(|w| w == [0xFF, 0xD9]);
        }
        i += 2 + len;
    }
}

fn decode_with(bytes: &[u8], format: ImageFormat) -> std::result::Result<RgbImage, ImageError> {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);

    // Read the header without the dimension limit so the error can quote the dimensions.
    let mut header_limits = Limits::default();
    header_limits.max_alloc = Some(MAX_ALLOC);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(header_limits);
    let mut decoder = reader.into_decoder()?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(too_large_or_empty(format!("image has zero size: {w}×{h}")));
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(too_large_or_empty(format!(
            "image too large: {w}×{h} exceeds the {MAX_SIDE}×{MAX_SIDE} limit"
        )));
    }
    let total = decoder.total_bytes();
    if total > MAX_ALLOC {
        return Err(too_large_or_empty(format!(
            "image too large: {w}×{h} needs {total} bytes, over the {MAX_ALLOC} byte limit"
        )));
    }
    decoder.set_limits(limits)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    #[cfg(feature = "libjpeg")]
    if format == ImageFormat::Jpeg {
        if let Some(rgb) = super::libjpeg::decode_rgb(bytes, (w, h)) {
            let mut img = DynamicImage::ImageRgb8(rgb);
            img.apply_orientation(orientation);
            return Ok(to_rgb8_on_black(img));
        }
    }
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    Ok(to_rgb8_on_black(img))
}

/// A limit error carrying our own message (the `image` crate's `LimitError` has no message).
fn too_large_or_empty(msg: String) -> ImageError {
    ImageError::IoError(std::io::Error::other(TooLarge(msg)))
}

#[derive(Debug)]
struct TooLarge(String);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TooLarge {}

/// Converts to 8-bit RGB; an alpha channel is composited onto black.
fn to_rgb8_on_black(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p.0[3] as u32;
        for c in 0..3 {
            // Rounded c·α/255.
            o.0[c] = ((p.0[c] as u32 * a + 127) / 255) as u8;
        }
    }
    out
}

fn describe(e: ImageError, name: &str) -> String {
    match e {
        ImageError::IoError(io) => {
            if let Some(msg) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<TooLarge>())
            {
                msg.0.clone()
            } else if io.kind() == std::io::ErrorKind::UnexpectedEof {
                format!("truncated or corrupt {name}: unexpected end of file")
            } else {
                format!("truncated or corrupt {name}: {io}")
            }
        }
        ImageError::Limits(l) => format!("image too large: {l}"),
        ImageError::Decoding(d) => format!("truncated or corrupt {name}: {d}"),
        ImageError::Unsupported(u) => format!("unsupported {name}: {u}"),
        ImageError::Parameter(p) => format!("corrupt {name}: {p}"),
        ImageError::Encoding(x) => format!("corrupt {name}: {x}"),
    }
}

fn format_name(f: ImageFormat) -> String {
    match f {
        ImageFormat::Jpeg => "JPEG".into(),
        ImageFormat::Png => "PNG".into(),
        ImageFormat::Gif => "GIF".into(),
        ImageFormat::Bmp => "BMP".into(),
        ImageFormat::WebP => "WebP".into(),
        ImageFormat::Pnm => "PNM".into(),
        other => format!("{other:?}"),
    }
}

/// True when the first bytes are printable text (ASCII or UTF-8, with ordinary whitespace).
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    // Cut at a char boundary: a multi-byte character may straddle the 512-byte mark.
    let s = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !s.is_empty()
        && s.chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb, Rgba};

    /// CRC-32 (IEEE), bit by bit: the PNG chunk checksum.
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
        out
    }

    fn jpeg_bytes(img: &RgbImage) -> Vec<u8> {
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 95)
            .encode_image(img)
            .unwrap();
        buf
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn crc_matches_known_value() {
        // The IEND chunk's CRC is the well-known AE 42 60 82.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn oversized_png_header_is_an_error_not_an_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
        png.extend(png_chunk(b"IHDR", &ihdr));
        png.extend(png_chunk(
            b"IDAT",
            &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        png.extend(png_chunk(b"IEND", &[]));
        let p = write(dir.path(), "huge.png", &png);
        let e = load_image(&p).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Image { .. }), "{msg}");
        assert!(msg.contains("huge.png"), "{msg}");
        assert!(msg.contains("image too large: 100000×100000"), "{msg}");
    }

    #[test]
    fn human_reasons_for_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let reason = |name: &str, bytes: &[u8]| match load_image(&write(dir.path(), name, bytes)) {
            Err(Error::Image { reason, .. }) => reason,
            other => panic!("{name}: expected an image error, got {other:?}"),
        };
        assert_eq!(reason("empty.jpg", b""), "empty file");
        assert_eq!(
            reason("notes.jpg", "name: Zoë\nage: 3\n".as_bytes()),
            "not an image (looks like text)"
        );
        assert!(reason("junk.png", &[0u8, 1, 2, 3, 250, 251]).contains("corrupt PNG"));
        let img = RgbImage::from_fn(64, 64, |x, y| Rgb([x as u8 * 4, y as u8 * 4, 77]));
        let jpg = jpeg_bytes(&img);
        // Cut inside the headers (before the scan): never decodable.
        let r = reason("cut.jpg", &jpg[..jpg.len().min(200)]);
        assert!(r.starts_with("truncated or corrupt JPEG"), "{r}");
        // Cut inside the scan: a decoder would fill the rest with grey.
        let r = reason("half.jpg", &jpg[..jpg.len() - 40]);
        assert!(r.starts_with("truncated JPEG"), "{r}");
        // Complete, with trailing bytes after the end marker (some cameras add them): fine.
        let mut trailing = jpg.clone();
        trailing.extend_from_slice(b"trailer");
        assert!(load_image(&write(dir.path(), "trailing.jpg", &trailing)).is_ok());
        // An APP1 segment holding an end marker (as an EXIF thumbnail does) before the scan
        // does not hide a truncated scan.
        // (Marker, length 8 = itself and six payload bytes holding FF D8 FF D9.)
        let app1 = [0xFF, 0xE1, 0x00, 0x08, 0xFF, 0xD8, 0xFF, 0xD9, 0x00, 0x00];
        let with_app1: Vec<u8> = [&jpg[..2], &app1[..], &jpg[2..]].concat();
        assert!(load_image(&write(dir.path(), "app1.jpg", &with_app1)).is_ok());
        let r = reason("app1-half.jpg", &with_app1[..with_app1.len() - 40]);
        assert!(r.starts_with("truncated JPEG"), "{r}");
        // A missing file is an I/O error that names it.
        let e = load_image(&dir.path().join("nope.png"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.png"), "{e}");
    }

    #[test]
    fn format_comes_from_content_not_extension() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_fn(5, 3, |x, y| Rgb([x as u8 * 50, y as u8 * 100, 9]));
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let p = write(dir.path(), "really_a_png.jpg", &png);
        assert_eq!(load_image(&p).unwrap(), img);
    }

    #[test]
    fn sixteen_bit_grey_and_alpha_pngs() {
        let dir = tempfile::tempdir().unwrap();
        // 16-bit RGB: 65535 → 255, 32896 (= 128·257) → 128, 0 → 0.
        let img16: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgb([65535, 32896, 0])
            } else {
                Rgb([257, 0, 65535])
            }
        });
        let p = dir.path().join("deep.png");
        img16.save(&p).unwrap();
        let got = load_image(&p).unwrap();
        assert_eq!(got.get_pixel(0, 0).0, [255, 128, 0]);
        assert_eq!(got.get_pixel(1, 0).0, [1, 0, 255]);

        // RGBA: composited onto black, c·α/255 rounded.
        let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> = ImageBuffer::from_fn(3, 1, |x, _| match x {
            0 => Rgba([200, 100, 50, 255]),
            1 => Rgba([200, 100, 50, 128]),
            _ => Rgba([255, 255, 255, 0]),
        });
        let p = dir.path().join("alpha.png");
        rgba.save(&p).unwrap();
        let got = load_image(&p).unwrap();
        assert_eq!(got.get_pixel(0, 0).0, [200, 100, 50]);
        assert_eq!(got.get_pixel(1, 0).0, [100, 50, 25]); // 200·128/255 = 100.4 → 100
        assert_eq!(got.get_pixel(2, 0).0, [0, 0, 0]);

        // Greyscale (8-bit, PGM too) is replicated to three channels; 1×1 is fine.
        let grey = image::GrayImage::from_fn(1, 1, |_, _| image::Luma([77]));
        for name in ["g.png", "g.pgm"] {
            let p = dir.path().join(name);
            grey.save(&p).unwrap();
            assert_eq!(
                load_image(&p).unwrap().get_pixel(0, 0).0,
                [77, 77, 77],
                "{name}"
            );
        }
    }

    #[test]
    fn animated_gif_gives_first_frame() {
        use image::codecs::gif::GifEncoder;
        use image::{Delay, Frame};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("anim.gif");
        {
            let f = std::fs::File::create(&p).unwrap();
            let mut enc = GifEncoder::new(f);
            for v in [0u8, 255] {
                let frame = image::RgbaImage::from_pixel(4, 4, Rgba([v, v, v, 255]));
                enc.encode_frame(Frame::from_parts(
                    frame,
                    0,
                    0,
                    Delay::from_numer_denom_ms(100, 1),
                ))
                .unwrap();
            }
        }
        let got = load_image(&p).unwrap();
        assert_eq!(got.dimensions(), (4, 4));
        assert!(got.pixels().all(|q| q.0 == [0, 0, 0]));
    }

    /// Inserts an EXIF APP1 segment with the given orientation right after SOI.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"MM\x00\x2A\x00\x00\x00\x08".to_vec(); // big-endian, IFD at 8
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]); // value padding
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut payload = b"Exif\x00\x00".to_vec();
        payload.extend(tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend(payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        // 32 wide × 16 high: left half red, right half blue.
        let img = RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                Rgb([220, 20, 20])
            } else {
                Rgb([20, 20, 220])
            }
        });
        let jpg = jpeg_bytes(&img);
        let plain = load_image(&write(dir.path(), "plain.jpg", &jpg)).unwrap();
        assert_eq!(plain.dimensions(), (32, 16));
        // Orientation 6: the stored image must be rotated 90° clockwise for display, so
        // the left (red) half ends up on top.
        let rotated = load_image(&write(
            dir.path(),
            "rot.jpg",
            &with_exif_orientation(&jpg, 6),
        ))
        .unwrap();
        assert_eq!(rotated.dimensions(), (16, 32));
        let top = rotated.get_pixel(8, 4).0;
        let bottom = rotated.get_pixel(8, 27).0;
        assert!(top[0] > 150 && top[2] < 100, "top {top:?}");
        assert!(bottom[2] > 150 && bottom[0] < 100, "bottom {bottom:?}");
        // Orientation 1 changes nothing.
        let same = load_image(&write(
            dir.path(),
            "one.jpg",
            &with_exif_orientation(&jpg, 1),
        ))
        .unwrap();
        assert_eq!(same, plain);
    }
}
