//! dlib's HOG frontal face detector, ported (`candle_face::detect::DlibFrontalDetector`), against
//! dlib 20 itself: the boxes of dlib's 12 reference photos (`shared/fixtures/dlib_parity.safetensors`)
//! and the boxes and scores `detector.run(img, 1, 0)` gives on 200 LFW photos
//! (`tests/support/dlib_hog_lfw200.jsonl`, written by `scripts/dlib_hog_ref.py`).

mod common;

use candle_core::Device;
use candle_face::detect::{bundled_hog_detector, HogDetection, Rect};
use image::RgbImage;

fn fixture_images_and_boxes() -> Option<(Vec<RgbImage>, Vec<[i64; 4]>)> {
    let p = common::shared_path("fixtures/dlib_parity.safetensors")?;
    let fx = candle_core::safetensors::load(p, &Device::Cpu).unwrap();
    let (n, h, w, _) = fx["images"].dims4().unwrap();
    let flat = fx["images"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let images = flat
        .chunks_exact(h * w * 3)
        .take(n)
        .map(|c| RgbImage::from_raw(w as u32, h as u32, c.to_vec()).unwrap())
        .collect();
    let boxes = fx["boxes"].to_vec2::<f32>().unwrap();
    let boxes = boxes
        .iter()
        .map(|b| [0, 1, 2, 3].map(|k| b[k] as i64))
        .collect();
    Some((images, boxes))
}

fn ltrb(r: Rect) -> [i64; 4] {
    [r.left, r.top, r.right, r.bottom]
}

fn area(r: Rect) -> i64 {
    (r.right - r.left + 1) * (r.bottom - r.top + 1)
}

/// dlib's reference script keeps the largest of `detector(img, 1)`'s boxes.
#[test]
fn boxes_of_dlibs_reference_photos_match_exactly() {
    let Some((images, want)) = fixture_images_and_boxes() else {
        return;
    };
    let det = bundled_hog_detector().unwrap();
    for (i, (img, want)) in images.iter().zip(&want).enumerate() {
        let dets = det.detect(img, 1);
        eprintln!("photo {i}: {dets:?}");
        let best = dets.iter().map(|d| d.rect).max_by_key(|&r| area(r));
        assert_eq!(best.map(ltrb), Some(*want), "photo {i}: {dets:?}");
    }
}

struct Reference {
    path: String,
    boxes: Vec<[i64; 4]>,
    scores: Vec<f64>,
    weights: Vec<usize>,
}

fn references() -> Vec<Reference> {
    let text = include_str!("support/dlib_hog_lfw200.jsonl");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let list = |k: &str| v[k].as_array().unwrap().clone();
            Reference {
                path: v["path"].as_str().unwrap().to_string(),
                boxes: list("boxes")
                    .iter()
                    .map(|b| [0, 1, 2, 3].map(|k| b[k].as_i64().unwrap()))
                    .collect(),
                scores: list("scores").iter().map(|s| s.as_f64().unwrap()).collect(),
                weights: list("weights")
                    .iter()
                    .map(|w| w.as_u64().unwrap() as usize)
                    .collect(),
            }
        })
        .collect()
}

/// Whether our detections equal dlib's: same boxes in the same order, same filters, scores
/// within `rel` relative error. Returns the largest relative score error.
fn compare(got: &[HogDetection], want: &Reference, rel: f64) -> Result<f64, String> {
    let boxes: Vec<[i64; 4]> = got.iter().map(|d| ltrb(d.rect)).collect();
    let filters: Vec<usize> = got.iter().map(|d| d.filter).collect();
    if boxes != want.boxes || filters != want.weights {
        return Err(format!(
            "{}: boxes {boxes:?} filters {filters:?}, dlib {:?} {:?}",
            want.path, want.boxes, want.weights
        ));
    }
    let mut worst = 0f64;
    for (d, s) in got.iter().zip(&want.scores) {
        let e = (d.score - s).abs() / s.abs().max(1e-3);
        worst = worst.max(e);
        if e > rel {
            return Err(format!("{}: score {} vs dlib {s}", want.path, d.score));
        }
    }
    Ok(worst)
}

fn lfw_parity(count: usize) {
    let Some(root) = common::shared_path("data/lfw/train") else {
        return;
    };
    let det = bundled_hog_detector().unwrap();
    let refs = references();
    let mut failures = Vec::new();
    let mut worst = 0f64;
    for r in refs.iter().take(count) {
        // libjpeg-turbo decoding: the pixels PIL gave dlib.
        let img = candle_face::image::load_image(&root.join(&r.path)).unwrap();
        match compare(&det.detect(&img, 1), r, 1e-4) {
            Ok(e) => worst = worst.max(e),
            Err(e) => failures.push(e),
        }
    }
    let n = count.min(refs.len());
    eprintln!(
        "{} of {n} LFW photos match dlib exactly; worst relative score error {worst:e}",
        n - failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The first 20 reference photos (fast enough for a debug build).
#[test]
fn boxes_and_scores_match_dlib_on_lfw_photos() {
    lfw_parity(20);
}

/// All 200 reference photos: `cargo test --release --test dlib_hog -- --ignored`.
#[test]
#[ignore = "slow in debug builds; run with --release -- --ignored"]
fn boxes_and_scores_match_dlib_on_200_lfw_photos() {
    lfw_parity(usize::MAX);
}
