//! How a detected face is cut out of a photo before the embedding model's own preprocessing, as a
//! named recipe stored in the model's `config.json` (`face_crop`), so detection at inference
//! produces crops that look like the ones the model was trained on; and [`FacePick`], which of
//! several faces in a photo is the one to cut.

use super::align::{align_face, align_face_to, extract_face};
use super::dlib_chip::{extract_image_chip, get_face_chip_details};
use super::mtcnn::Face;
use super::shape_predictor::Rect;
use crate::image::warp::prefilter_region;
use crate::{Error, Result};
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// A face-crop recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum FaceCrop {
    /// facenet-pytorch's `extract_face`: the detection box (not squared) widened by `margin`
    /// output pixels, resampled to `size × size`. facenet-pytorch's pretrained
    /// InceptionResnetV1 expects `margin: 0, size: 160`.
    FacenetMargin {
        /// Margin in output pixels (facenet-pytorch's `MTCNN(margin=...)`).
        margin: u32,
        /// Output side in pixels.
        size: u32,
    },
    /// A square centred on the detection box: side `box_scale · max(w, h)`, centre moved down
    /// by `y_shift · h`, parts outside the photo filled with black, resized to `size × size`.
    /// [`FaceCrop::lfw_deep_funneled`] reproduces the framing of LFW's deep-funneled images.
    Square {
        /// Crop side over the detection box's longer side.
        box_scale: f32,
        /// Vertical shift of the crop centre, in box heights (positive: down).
        y_shift: f32,
        /// Output side in pixels.
        size: u32,
    },
    /// A similarity transform of the five landmarks onto the ArcFace template, `size × size`.
    Aligned {
        /// Output side in pixels.
        size: u32,
    },
    /// dlib's face chip, as dlib's face-recognition models expect: dlib's 5-point landmark model
    /// (bundled) runs on the box dlib's own HOG face detector (bundled,
    /// [`crate::detect::DlibFrontalDetector`], upsampled once as face_recognition does) gives
    /// for the face ([`hog_boxes`], [`landmark_box`]), or, where HOG misses a face MTCNN found
    /// (profiles, poor light), on a dlib-style box derived from the detection box
    /// ([`dlib_box`]); then `get_face_chip_details(landmarks, size, padding)` and
    /// `extract_image_chip` cut an upright `size × size` chip (dlib's recognition ResNet: 150,
    /// padding 0.25). On dlib's own test photos this reproduces dlib's descriptors within 0.1.
    DlibChip {
        /// Output side in pixels.
        size: u32,
        /// Padding around the landmark template, as a fraction of the face width.
        padding: f32,
    },
    /// A similarity transform of the five landmarks onto `landmarks` (left eye, right eye, nose
    /// tip, left and right mouth corner, in pixels of the `size × size` output), bilinear,
    /// black outside the photo. [`FaceCrop::lfw_aligned`] is LFW's average framing.
    Template {
        /// Output side in pixels.
        size: u32,
        /// Where the five landmarks land in the output.
        landmarks: [[f32; 2]; 5],
    },
}

impl FaceCrop {
    /// The framing of LFW's deep-funneled 250×250 images, which candle-face's LFW-trained models
    /// are trained on: a 250×250 square of side [`LFW_BOX_SCALE`] times the face box's longer
    /// side, its centre [`LFW_Y_SHIFT`] box heights below the box centre (i.e. 0.017 above). In
    /// those images the bundled MTCNN's box has a median longer side of 123.5 px (250/123.5 ≈
    /// 2.02) and its centre a median 0.017 box heights below the image centre; the
    /// `lfw_framing` example measures both.
    pub fn lfw_deep_funneled() -> Self {
        FaceCrop::Square {
            box_scale: LFW_BOX_SCALE,
            y_shift: LFW_Y_SHIFT,
            size: 250,
        }
    }

    /// LFW's deep-funneled framing with the face aligned: the five landmarks are moved onto
    /// their median positions over LFW's training images ([`LFW_TEMPLATE_250`]), so eyes, nose
    /// and mouth sit at the same pixels in every crop, where the deep-funneled images leave a
    /// few pixels of spread, some roll and scale. A photo cut this way looks like an LFW image
    /// (250×250, same framing), so models trained on either kind of image can read it.
    pub fn lfw_aligned() -> Self {
        FaceCrop::Template {
            size: 250,
            landmarks: LFW_TEMPLATE_250,
        }
    }

    /// dlib's face chip for its recognition ResNet: 150×150, padding 0.25.
    pub fn dlib() -> Self {
        FaceCrop::DlibChip {
            size: 150,
            padding: 0.25,
        }
    }

    /// facenet-pytorch's default crop for its pretrained models: `margin 0`, 160×160.
    pub fn facenet() -> Self {
        FaceCrop::FacenetMargin {
            margin: 0,
            size: 160,
        }
    }

    /// Checks the recipe's numbers.
    pub fn validate(&self) -> Result<()> {
        let ok = match *self {
            FaceCrop::FacenetMargin { margin, size } => size > 0 && margin < size && size <= 4096,
            FaceCrop::Square {
                box_scale,
                y_shift,
                size,
            } => {
                box_scale.is_finite()
                    && box_scale > 0.0
                    && box_scale <= 20.0
                    && y_shift.is_finite()
                    && y_shift.abs() <= 2.0
                    && size > 0
                    && size <= 4096
            }
            FaceCrop::Aligned { size } => size > 0 && size <= 4096,
            FaceCrop::DlibChip { size, padding } => {
                size > 0 && size <= 4096 && padding.is_finite() && (0.0..=4.0).contains(&padding)
            }
            FaceCrop::Template { size, landmarks } => {
                size > 0
                    && size <= 4096
                    && landmarks.iter().flatten().all(|v| v.is_finite())
                    // Two distinct points at least, or the similarity is undefined.
                    && landmarks.iter().any(|p| p != &landmarks[0])
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "invalid face crop recipe {self:?}"
            )))
        }
    }

    /// Cuts `face` out of `img` with this recipe.
    pub fn apply(&self, img: &RgbImage, face: &Face) -> Result<RgbImage> {
        let mut crops = self.apply_all(img, std::slice::from_ref(face))?;
        crops
            .pop()
            .ok_or_else(|| Error::Msg("no crop for the face".into()))
    }

    /// Cuts every face of `faces` out of `img`; [`FaceCrop::DlibChip`] runs the HOG detector on
    /// `img` once for all of them.
    pub fn apply_all(&self, img: &RgbImage, faces: &[Face]) -> Result<Vec<RgbImage>> {
        self.validate()?;
        let hog = match self {
            FaceCrop::DlibChip { .. } if !faces.is_empty() => hog_boxes(img)?,
            _ => Vec::new(),
        };
        faces.iter().map(|f| self.apply_one(img, f, &hog)).collect()
    }

    /// [`apply`](Self::apply) given the HOG boxes of `img` (used by `DlibChip` only).
    fn apply_one(&self, img: &RgbImage, face: &Face, hog: &[Rect]) -> Result<RgbImage> {
        match *self {
            FaceCrop::FacenetMargin { margin, size } => extract_face(img, face.bbox, margin, size),
            FaceCrop::Aligned { size } => align_face(img, &face.landmarks, size),
            FaceCrop::DlibChip { size, padding } => {
                dlib_chip(img, landmark_box(face, hog), size, padding)
            }
            FaceCrop::Template { size, landmarks } => {
                align_face_to(img, &face.landmarks, &landmarks, size)
            }
            FaceCrop::Square {
                box_scale,
                y_shift,
                size,
            } => square_crop(img, face.bbox, box_scale, y_shift, size),
        }
    }
}

/// Photos of at most this many pixels are enlarged once before the HOG scan ([`hog_boxes`]).
pub const HOG_UPSAMPLE_MAX_PIXELS: u64 = 1024 * 1024;

/// The faces dlib's HOG detector (bundled) finds in `img`, as [`FaceCrop::DlibChip`] uses them:
/// upsampled once, as face_recognition and dlib's examples run it (dlib's exact boxes; faces
/// down to about 40 pixels), when the photo has at most [`HOG_UPSAMPLE_MAX_PIXELS`] pixels;
/// larger photos are scanned as they are (faces from 80 pixels; a 4-megapixel photo would cost
/// seconds upsampled), and a smaller face there falls back to [`dlib_box`].
pub fn hog_boxes(img: &RgbImage) -> Result<Vec<Rect>> {
    let pixels = u64::from(img.width()) * u64::from(img.height());
    let upsample = u32::from(pixels <= HOG_UPSAMPLE_MAX_PIXELS);
    let det = super::bundled_weights::bundled_hog_detector()?;
    Ok(det
        .detect(img, upsample)
        .into_iter()
        .map(|d| d.rect)
        .collect())
}

/// The box dlib's landmark model starts from for `face`: of the HOG boxes `hog` whose centre
/// lies inside the MTCNN box, the one overlapping [`dlib_box`]`(face)` most (intersection over
/// union at least 0.3); [`dlib_box`]`(face)` itself when there is none.
pub fn landmark_box(face: &Face, hog: &[Rect]) -> Rect {
    let guess = dlib_box(face);
    let [x1, y1, x2, y2] = face.bbox.map(f64::from);
    let inside = |r: &&Rect| {
        let (cx, cy) = (
            (r.left + r.right) as f64 / 2.0,
            (r.top + r.bottom) as f64 / 2.0,
        );
        (x1..=x2).contains(&cx) && (y1..=y2).contains(&cy)
    };
    hog.iter()
        .filter(inside)
        .map(|r| (iou(r, &guess), r))
        .filter(|(o, _)| *o >= 0.3)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(guess, |(_, r)| *r)
}

/// Intersection over union of two inclusive-corner rectangles.
fn iou(a: &Rect, b: &Rect) -> f64 {
    let inter = a.intersect(b).area();
    let union = a.area() + b.area() - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// dlib's face chip of the face in `rect` (see [`FaceCrop::DlibChip`]).
fn dlib_chip(img: &RgbImage, rect: Rect, size: u32, padding: f32) -> Result<RgbImage> {
    let landmarks = super::bundled_weights::bundled_landmarks()?.predict(img, rect);
    let five: [(f64, f64); 5] = landmarks
        .get(..5)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::Msg("the landmark model did not give five points".into()))?;
    let details = get_face_chip_details(&five, size as usize, padding as f64);
    Ok(extract_image_chip(img, &details))
}

/// The box dlib's frontal face detector (HOG, upsampled once) would give for an MTCNN
/// detection, which dlib's landmark model was trained on (the fallback of [`landmark_box`] for
/// faces the HOG detector misses): its centre 0.0296 box widths left and
/// 0.0434 box heights below the MTCNN box centre, its side 0.6848·w + 0.3281·h. Fitted on the
/// faces of 1 496 LFW images that both detectors find (median error 5 px on boxes ~100 px wide);
/// landmarks from it are within 1 px of those from dlib's own box in 9 cases of 10.
pub fn dlib_box(face: &Face) -> Rect {
    let [x1, y1, x2, y2] = face.bbox.map(f64::from);
    let (w, h) = (x2 - x1, y2 - y1);
    let cx = (x1 + x2) / 2.0 - 0.0296 * w;
    let cy = (y1 + y2) / 2.0 + 0.0434 * h;
    let side = 0.6848 * w + 0.3281 * h;
    let r = |v: f64| v.round().clamp(-1e9, 1e9) as i64;
    Rect {
        left: r(cx - side / 2.0),
        top: r(cy - side / 2.0),
        right: r(cx + side / 2.0),
        bottom: r(cy + side / 2.0),
    }
}

/// Median MTCNN landmarks (left eye, right eye, nose tip, left and right mouth corner) over
/// LFW's 9525 deep-funneled training images (250×250; the face nearest the image centre,
/// bundled MTCNN). Their spread there: standard deviation 2.4–3.9 px for the eyes,
/// 4–6 px for nose and mouth; eye distance 38–46 px (10th–90th percentile, median 42); roll
/// −3.7° to +1.2°. [`FaceCrop::lfw_aligned`] removes that spread.
pub const LFW_TEMPLATE_250: [[f32; 2]; 5] = [
    [104.86, 113.44],
    [146.96, 112.48],
    [126.13, 137.58],
    [108.49, 159.06],
    [145.14, 158.39],
];

/// Which face of a photo with several is the main one ([`crate::infer::FaceFinder::with_pick`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FacePick {
    /// The largest detection, a face cut by the photo's edge counting less (its visible area
    /// times its visible fraction), as detection does at inference by default.
    #[default]
    Largest,
    /// The detection whose box centre is nearest the image centre: right for sets whose
    /// photos are centred on the labelled person, like LFW, where 1422 of the 9525 training
    /// images hold more than one face and in 220 the centred one is not the largest.
    Central,
}

impl FacePick {
    /// The chosen face of `faces` (as [`crate::detect::Mtcnn::detect`] returns them) in a
    /// `width × height` image.
    pub fn choose(self, faces: &[Face], width: u32, height: u32) -> Option<&Face> {
        match self {
            // The first of equal areas, like `detect`'s own largest-first order.
            FacePick::Largest => {
                let size = |f: &Face| visible_size(f, width, height);
                faces
                    .iter()
                    .reduce(|a, b| if size(b) > size(a) { b } else { a })
            }
            FacePick::Central => {
                let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
                let d = |f: &Face| {
                    let (x, y) = ((f.bbox[0] + f.bbox[2]) / 2.0, (f.bbox[1] + f.bbox[3]) / 2.0);
                    (x - cx).powi(2) + (y - cy).powi(2)
                };
                faces.iter().min_by(|a, b| d(a).total_cmp(&d(b)))
            }
        }
    }
}

/// How large `face` counts for [`FacePick::Largest`] in a `width × height` image: its box's
/// area inside the image times the fraction of the box that is inside. A face wholly in the
/// photo counts its area; a neighbour cut by the photo's edge counts much less, as people
/// framing a photo keep its subject inside it (and dlib's detector, which the default model's
/// pipeline follows, does not find cut faces at all).
fn visible_size(face: &Face, width: u32, height: u32) -> f32 {
    let [x1, y1, x2, y2] = face.bbox;
    let w = x2.min(width as f32) - x1.max(0.0);
    let h = y2.min(height as f32) - y1.max(0.0);
    let visible = w.max(0.0) * h.max(0.0);
    let area = face.area();
    if area > 0.0 {
        visible * (visible / area).min(1.0)
    } else {
        0.0
    }
}

/// See [`FaceCrop::lfw_deep_funneled`].
pub const LFW_BOX_SCALE: f32 = 2.02;
/// See [`FaceCrop::lfw_deep_funneled`].
pub const LFW_Y_SHIFT: f32 = -0.017;

/// The square crop of [`FaceCrop::Square`], bilinear resampling, black outside the photo; a
/// crop that shrinks the face by more than [`crate::image::warp::PREFILTER_STEP`] is taken from a
/// low-passed copy ([`prefilter_region`]) so it does not alias.
pub fn square_crop(
    img: &RgbImage,
    bbox: [f32; 4],
    box_scale: f32,
    y_shift: f32,
    size: u32,
) -> Result<RgbImage> {
    let [x1, y1, x2, y2] = bbox;
    let (w, h) = (x2 - x1, y2 - y1);
    if !bbox.iter().all(|v| v.is_finite()) || w <= 0.0 || h <= 0.0 || size == 0 {
        return Err(Error::InvalidArgument(format!(
            "cannot crop face box {bbox:?} to {size}×{size}"
        )));
    }
    let (x0, y0, side, step) = crop_window(bbox, box_scale, y_shift, size);
    // A large face: cut from a low-passed copy at about one pixel per output pixel instead.
    let roi = [x0, y0, x0 + side, y0 + side].map(f64::from);
    if let Some((small, map)) = prefilter_region(img, roi, f64::from(step)) {
        // The box in the copy; box scale and shift are relative to it, so the framing holds.
        let [x1, y1] = map.apply([f64::from(x1), f64::from(y1)]);
        let [x2, y2] = map.apply([f64::from(x2), f64::from(y2)]);
        let bbox = [x1, y1, x2, y2].map(|v| v as f32);
        let window = crop_window(bbox, box_scale, y_shift, size);
        return Ok(square_crop_plain(&small, window, size));
    }
    Ok(square_crop_plain(img, (x0, y0, side, step), size))
}

/// The crop square of [`square_crop`] in photo pixels: top-left corner, side, and source pixels
/// per output pixel.
fn crop_window(bbox: [f32; 4], box_scale: f32, y_shift: f32, size: u32) -> (f32, f32, f32, f32) {
    let [x1, y1, x2, y2] = bbox;
    let (w, h) = (x2 - x1, y2 - y1);
    let side = box_scale * w.max(h);
    let cx = (x1 + x2) / 2.0;
    let cy = (y1 + y2) / 2.0 + y_shift * h;
    (cx - side / 2.0, cy - side / 2.0, side, side / size as f32)
}

/// [`square_crop`] without the prefilter: the `size × size` bilinear samples of the crop
/// `window` ([`crop_window`]'s top-left corner, side and step), black outside the photo.
fn square_crop_plain(img: &RgbImage, window: (f32, f32, f32, f32), size: u32) -> RgbImage {
    let (x0, y0, _, step) = window;
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let px = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= iw || y >= ih {
            [0.0; 3]
        } else {
            let p = img.get_pixel(x as u32, y as u32).0;
            [p[0] as f32, p[1] as f32, p[2] as f32]
        }
    };
    let mut out = RgbImage::new(size, size);
    for (ox, oy, p) in out.enumerate_pixels_mut() {
        // Sample at the centre of the output pixel (pixel centres at +0.5, as PIL/OpenCV).
        let sx = x0 + (ox as f32 + 0.5) * step - 0.5;
        let sy = y0 + (oy as f32 + 0.5) * step - 0.5;
        let (fx, fy) = (sx.floor(), sy.floor());
        let (ax, ay) = (sx - fx, sy - fy);
        let (xi, yi) = (fx as i64, fy as i64);
        let (a, b, c, d) = (
            px(xi, yi),
            px(xi + 1, yi),
            px(xi, yi + 1),
            px(xi + 1, yi + 1),
        );
        for k in 0..3 {
            let top = a[k] * (1.0 - ax) + b[k] * ax;
            let bottom = c[k] * (1.0 - ax) + d[k] * ax;
            p.0[k] = (top * (1.0 - ay) + bottom * ay).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(bbox: [f32; 4]) -> Face {
        Face {
            bbox,
            score: 0.99,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn largest_prefers_a_whole_face_to_a_bigger_one_cut_by_the_edge() {
        // 110×130 box with 30 px outside the left edge (visible 80×130, 73%): counts
        // 80·130·0.727 = 7564 against the whole 90×100 = 9000.
        let cut = face([-30.0, 20.0, 80.0, 150.0]);
        let whole = face([120.0, 40.0, 210.0, 140.0]);
        let faces = [cut, whole];
        let got = FacePick::Largest.choose(&faces, 250, 250).unwrap();
        assert_eq!(got.bbox, whole.bbox);
        // Wholly inside, the bigger face wins as before.
        let big = face([0.0, 20.0, 110.0, 150.0]);
        let faces = [whole, big];
        assert_eq!(
            FacePick::Largest.choose(&faces, 250, 250).unwrap().bbox,
            big.bbox
        );
        // A face entirely outside counts nothing.
        assert_eq!(
            visible_size(&face([-50.0, 0.0, -10.0, 40.0]), 100, 100),
            0.0
        );
    }

    #[test]
    fn dlib_box_follows_the_fitted_offsets() {
        // A 100×120 MTCNN box at (50, 40): centre (100, 100) → (97.04, 105.208), side
        // 68.48 + 39.372 = 107.852.
        let r = dlib_box(&face([50.0, 40.0, 150.0, 160.0]));
        assert_eq!((r.left, r.top, r.right, r.bottom), (43, 51, 151, 159));
    }

    #[test]
    fn landmark_box_prefers_the_matching_hog_box() {
        let f = face([50.0, 40.0, 150.0, 160.0]);
        let guess = dlib_box(&f); // (43, 51, 151, 159)
        let near = Rect {
            left: 45,
            top: 55,
            right: 153,
            bottom: 162,
        };
        // Another face's box, centre outside the MTCNN box.
        let other = Rect {
            left: 200,
            top: 50,
            right: 300,
            bottom: 150,
        };
        // Centre inside but far too small to be this face.
        let tiny = Rect {
            left: 95,
            top: 95,
            right: 105,
            bottom: 105,
        };
        assert_eq!(landmark_box(&f, &[other, tiny, near]), near);
        assert_eq!(landmark_box(&f, &[other, tiny]), guess);
        assert_eq!(landmark_box(&f, &[]), guess);
    }

    #[test]
    fn picks_the_largest_or_the_central_face() {
        // A large face off to the side and a smaller one in the middle of a 100×100 image.
        let faces = [face([0.0, 0.0, 40.0, 40.0]), face([40.0, 40.0, 60.0, 62.0])];
        let big = FacePick::Largest.choose(&faces, 100, 100).unwrap();
        assert_eq!(big.bbox, faces[0].bbox);
        let mid = FacePick::Central.choose(&faces, 100, 100).unwrap();
        assert_eq!(mid.bbox, faces[1].bbox);
        assert!(FacePick::Central.choose(&[], 100, 100).is_none());
    }

    #[test]
    fn square_crop_identity_box_reproduces_image() {
        // A box covering the whole 8×8 image with scale 1 and no shift samples every pixel
        // centre exactly: the crop equals the image.
        let img = RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 7]));
        let out = square_crop(&img, [0.0, 0.0, 8.0, 8.0], 1.0, 0.0, 8).unwrap();
        assert_eq!(out, img);
    }

    #[test]
    fn square_crop_pads_with_black_and_shifts() {
        let img = RgbImage::from_pixel(10, 10, image::Rgb([200, 100, 50]));
        // Box of the whole image, doubled: the outer ring of the 20×20 crop lies outside.
        let out = square_crop(&img, [0.0, 0.0, 10.0, 10.0], 2.0, 0.0, 20).unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(10, 10).0, [200, 100, 50]);
        // Shifting the centre down by half a box height moves the photo up in the crop.
        let out = square_crop(&img, [0.0, 0.0, 10.0, 10.0], 1.0, 0.5, 10).unwrap();
        assert_eq!(out.get_pixel(5, 2).0, [200, 100, 50]);
        assert_eq!(out.get_pixel(5, 7).0, [0, 0, 0]);
    }

    #[test]
    fn large_faces_are_prefiltered_and_keep_their_framing() {
        use crate::image::warp::tests::{channel_stats, is_grey, ramps_and_checkerboard};
        // A 700-pixel box cut to 250 pixels at box scale 1.3: about 3.6 source pixels per
        // output pixel, all inside the 2000-pixel image.
        let img = ramps_and_checkerboard();
        let bbox = [650.0, 640.0, 1350.0, 1340.0];
        let plain = square_crop_plain(&img, crop_window(bbox, 1.3, LFW_Y_SHIFT, 250), 250);
        let filtered = square_crop(&img, bbox, 1.3, LFW_Y_SHIFT, 250).unwrap();
        for c in 0..2 {
            let (mean, max, _, _) = channel_stats(&filtered, &plain, c);
            assert!(mean < 0.8 && max <= 3.0, "ramp {c}: mean {mean}, max {max}");
        }
        assert!(!is_grey(&plain, 2), "the unfiltered crop aliases");
        assert!(
            is_grey(&filtered, 2),
            "{:?}",
            channel_stats(&filtered, &filtered, 2)
        );
    }

    #[test]
    fn bad_boxes_and_recipes_are_errors() {
        let img = RgbImage::new(4, 4);
        assert!(square_crop(&img, [1.0, 1.0, 1.0, 3.0], 1.0, 0.0, 4).is_err());
        assert!(square_crop(&img, [f32::NAN, 1.0, 2.0, 3.0], 1.0, 0.0, 4).is_err());
        let bad = FaceCrop::Square {
            box_scale: -1.0,
            y_shift: 0.0,
            size: 10,
        };
        assert!(bad.validate().is_err());
        let json = serde_json::to_string(&FaceCrop::facenet()).unwrap();
        assert_eq!(json, r#"{"mode":"facenet_margin","margin":0,"size":160}"#);
        let back: FaceCrop = serde_json::from_str(&json).unwrap();
        assert_eq!(back, FaceCrop::facenet());
    }
}
