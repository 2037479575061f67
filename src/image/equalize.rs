//! Histogram equalization of an RGB image's brightness.

use image::RgbImage;

/// Histogram equalization of the brightness: every channel goes through the mapping that makes
/// the grey levels' distribution uniform, so a face in deep shadow gets contrast the detector
/// can see.
pub fn equalize(img: &RgbImage) -> RgbImage {
    let mut hist = [0u64; 256];
    for p in img.pixels() {
        let [r, g, b] = p.0;
        hist[((r as u32 * 299 + g as u32 * 587 + b as u32 * 114) / 1000) as usize] += 1;
    }
    let total = (img.width() as u64 * img.height() as u64).max(1);
    let mut map = [0u8; 256];
    let mut cum = 0u64;
    for (v, &h) in hist.iter().enumerate() {
        cum += h;
        map[v] = ((cum * 255) / total) as u8;
    }
    let mut out = img.clone();
    for p in out.pixels_mut() {
        p.0 = p.0.map(|c| map[c as usize]);
    }
    out
}
