//! Face crops for the embedding network, two recipes:
//! - facenet-pytorch's `extract_face`: a square-ish box plus a margin (given in output pixels),
//!   area-resampled to the output size (the reference's tensor path);
//! - 5-point alignment: the least-squares similarity transform ([`Similarity::estimate`]) from
//!   the MTCNN landmarks to the ArcFace/insightface 112×112 template, applied with bilinear
//!   sampling (as insightface's `norm_crop` does with `cv2.warpAffine`).

use image::RgbImage;

use crate::image::{warp_similarity, FloatImage, Similarity};
use crate::{Error, Result};

/// insightface's five-point template for 112×112 crops (`arcface_dst`): left eye, right eye,
/// nose tip, left and right mouth corner.
pub const ARCFACE_TEMPLATE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// facenet-pytorch's `extract_face` for a tensor image: the box grows by
/// `margin · (x2 − x1) / (size − margin)` horizontally (likewise vertically), half on each
/// side; its corners are truncated to integers and clamped to the image; the crop is
/// area-resampled to `size × size` and truncated to bytes.
pub fn extract_face(img: &RgbImage, bbox: [f32; 4], margin: u32, size: u32) -> Result<RgbImage> {
    if size == 0 || margin >= size {
        return Err(Error::InvalidArgument(format!(
            "crop size must be > margin ≥ 0, got size {size}, margin {margin}"
        )));
    }
    let m = margin as f32;
    let mx = m * (bbox[2] - bbox[0]) / (size as f32 - m);
    let my = m * (bbox[3] - bbox[1]) / (size as f32 - m);
    let (w, h) = (img.width() as f32, img.height() as f32);
    let x0 = (bbox[0] - mx / 2.0).max(0.0) as i64;
    let y0 = (bbox[1] - my / 2.0).max(0.0) as i64;
    let x1 = (bbox[2] + mx / 2.0).min(w) as i64;
    let y1 = (bbox[3] + my / 2.0).min(h) as i64;
    if x1 <= x0 || y1 <= y0 || !bbox.iter().all(|v| v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "face box {bbox:?} lies outside the {}×{} image",
            img.width(),
            img.height()
        )));
    }
    let f = FloatImage::from_rgb(img).resize_area(
        x0 as usize,
        y0 as usize,
        (x1 - x0) as usize,
        (y1 - y0) as usize,
        size as usize,
        size as usize,
    );
    let raw = f.data.iter().map(|&v| v.clamp(0.0, 255.0) as u8).collect();
    RgbImage::from_raw(size, size, raw).ok_or_else(|| Error::Msg("crop buffer size".into()))
}

/// The ArcFace template scaled from 112×112 to `size × size`.
pub fn template(size: u32) -> [[f32; 2]; 5] {
    let s = size as f32 / 112.0;
    ARCFACE_TEMPLATE_112.map(|[x, y]| [x * s, y * s])
}

/// Aligns a face to the ArcFace template scaled to `size × size`: estimates the similarity
/// from `landmarks` (as [`Face::landmarks`](crate::detect::Face::landmarks)) onto
/// [`template`]`(size)` and warps bilinearly. Fails when the landmarks are degenerate (all equal or not finite) or `size` is 0.
pub fn align_face(img: &RgbImage, landmarks: &[[f32; 2]; 5], size: u32) -> Result<RgbImage> {
    if size == 0 {
        return Err(Error::InvalidArgument("crop size must be > 0".into()));
    }
    let m = Similarity::estimate(landmarks, &template(size))?;
    warp_similarity(img, &m, size, size)
}

/// Aligns a face onto an arbitrary five-point `template` (pixels of the `size × size` output):
/// the least-squares similarity from `landmarks` onto it, then a bilinear warp (black outside
/// the photo). Fails when either point set is degenerate or `size` is 0.
pub fn align_face_to(
    img: &RgbImage,
    landmarks: &[[f32; 2]; 5],
    template: &[[f32; 2]; 5],
    size: u32,
) -> Result<RgbImage> {
    if size == 0 {
        return Err(Error::InvalidArgument("crop size must be > 0".into()));
    }
    let m = Similarity::estimate(landmarks, template)?;
    warp_similarity(img, &m, size, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Renders Gaussian blobs at `points` on a black `w × h` image.
    fn blobs(points: &[[f32; 2]], w: u32, h: u32, sigma: f32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v: f32 = points
                .iter()
                .map(|p| {
                    let d2 = (x as f32 - p[0]).powi(2) + (y as f32 - p[1]).powi(2);
                    (-d2 / (2.0 * sigma * sigma)).exp()
                })
                .sum();
            let v = (255.0 * v).min(255.0) as u8;
            image::Rgb([v, v, v])
        })
    }

    #[test]
    fn aligned_landmarks_land_on_the_template() {
        // Landmarks = the template moved by a known similarity; after alignment each blob's
        // intensity centroid must sit on the template point.
        let size = 112;
        let truth = Similarity::new(1.6, 0.4, 40.0, 10.0);
        let lm = ARCFACE_TEMPLATE_112.map(|p| truth.apply(p));
        let img = blobs(&lm, 260, 260, 2.5);
        let out = align_face(&img, &lm, size).unwrap();
        assert_blobs_at(&out, &template(size));
    }

    /// Each blob's intensity centroid (11×11 window) in `out` lies within 0.3 px of its point.
    fn assert_blobs_at(out: &RgbImage, points: &[[f32; 2]; 5]) {
        for t in points {
            let (mut sw, mut sx, mut sy) = (0.0f64, 0.0f64, 0.0f64);
            let (cx, cy) = (t[0].round() as i64, t[1].round() as i64);
            for y in cy - 5..=cy + 5 {
                for x in cx - 5..=cx + 5 {
                    let v = f64::from(out.get_pixel(x as u32, y as u32)[0]);
                    sw += v;
                    sx += v * x as f64;
                    sy += v * y as f64;
                }
            }
            assert!(sw > 0.0);
            let (mx, my) = (sx / sw, sy / sw);
            assert!(
                close(mx, t[0].into(), 0.3) && close(my, t[1].into(), 0.3),
                "{t:?} vs ({mx}, {my})"
            );
        }
    }

    #[test]
    fn landmarks_land_on_a_custom_template() {
        // An arbitrary template (not a scaled ArcFace one) in a 90×90 output; the landmarks are
        // a rotated, scaled copy of it, so the fit is exact and each blob must land on its point.
        let tpl = [
            [30.0, 35.0],
            [60.0, 33.0],
            [46.0, 50.0],
            [34.0, 66.0],
            [58.0, 65.0],
        ];
        let truth = Similarity::new(2.1, -0.3, 25.0, 70.0);
        let lm = tpl.map(|p| truth.apply(p));
        let img = blobs(&lm, 300, 300, 3.0);
        let out = align_face_to(&img, &lm, &tpl, 90).unwrap();
        assert_eq!(out.dimensions(), (90, 90));
        assert_blobs_at(&out, &tpl);
        assert!(align_face_to(&img, &lm, &[[5.0, 5.0]; 5], 90).is_err());
        assert!(align_face_to(&img, &[[5.0, 5.0]; 5], &tpl, 90).is_err());
        assert!(align_face_to(&img, &lm, &tpl, 0).is_err());
    }

    #[test]
    fn extract_face_crops_the_box_with_margin() {
        // A 100×100 image whose pixel value encodes its column; box 20..60 with margin 32 at
        // size 96 grows by 32·40/64 = 20 px → crop 10..70, so output column j averages the
        // source columns of its area window.
        let img = RgbImage::from_fn(100, 100, |x, _| image::Rgb([x as u8, 0, 255]));
        let out = extract_face(&img, [20.0, 20.0, 60.0, 60.0], 32, 96).unwrap();
        assert_eq!(out.dimensions(), (96, 96));
        // 60 source columns onto 96: column 0 covers source 10 only; the last covers 69.
        assert_eq!(out.get_pixel(0, 0)[0], 10);
        assert_eq!(out.get_pixel(95, 50)[0], 69);
        assert_eq!(out.get_pixel(50, 50)[2], 255);
        assert!(extract_face(&img, [200.0, 0.0, 300.0, 50.0], 0, 160).is_err());
        assert!(extract_face(&img, [0.0, 0.0, 50.0, 50.0], 160, 160).is_err());
    }
}
