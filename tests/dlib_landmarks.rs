//! dlib's 5-point shape predictor and face chips against dlib's own outputs
//! (`shared/fixtures/dlib_parity.safetensors`, made by dlib 20 with
//! `shared/reference/dlib_ref.py`). Run with `--nocapture` to see the measured numbers.

mod common;

use candle_face::detect::{extract_image_chip, get_face_chip_details, Rect, ShapePredictor};
use image::RgbImage;
use safetensors::SafeTensors;
use std::sync::OnceLock;

const MODEL: &str = "pretrained/dlib/shape_predictor_5_face_landmarks.dat";

/// The predictor parsed from `shared/`, or `None` (with a message) when it is missing.
fn predictor() -> Option<&'static ShapePredictor> {
    static SP: OnceLock<Option<ShapePredictor>> = OnceLock::new();
    SP.get_or_init(|| {
        let bytes = std::fs::read(common::shared_path(MODEL)?).expect("model file");
        Some(ShapePredictor::from_dlib_bytes(&bytes).expect("parse model"))
    })
    .as_ref()
}

fn data<'a>(st: &'a SafeTensors, name: &str) -> (&'a [u8], Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    (t.data(), t.shape().to_vec())
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f64> {
    data(st, name)
        .0
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
        .collect()
}

/// Image `i` of a stacked N x H x W x 3 tensor (or a single H x W x 3 one with i = 0).
fn image(st: &SafeTensors, name: &str, i: usize) -> RgbImage {
    let (bytes, shape) = data(st, name);
    let s = &shape[shape.len() - 3..];
    let n = s[0] * s[1] * 3;
    RgbImage::from_raw(s[1] as u32, s[0] as u32, bytes[i * n..(i + 1) * n].to_vec()).unwrap()
}

fn rect(b: &[f64]) -> Rect {
    Rect {
        left: b[0].round() as i64,
        top: b[1].round() as i64,
        right: b[2].round() as i64,
        bottom: b[3].round() as i64,
    }
}

fn five(lm: &[f64]) -> [(f64, f64); 5] {
    std::array::from_fn(|k| (lm[2 * k], lm[2 * k + 1]))
}

/// (mean, max) absolute difference of two equally sized images.
fn diff(a: &RgbImage, b: &RgbImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    let d: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    (
        d.iter().map(|&v| f64::from(v)).sum::<f64>() / d.len() as f64,
        d.iter().copied().max().unwrap_or(0),
    )
}

fn max_err(a: &[(f64, f64)], b: &[f64]) -> f64 {
    a.iter()
        .enumerate()
        .map(|(k, p)| (p.0 - b[2 * k]).abs().max((p.1 - b[2 * k + 1]).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn fixture_landmarks_chip_details_and_chips() {
    let (Some(sp), Some(fixture)) = (
        predictor(),
        common::shared_path("fixtures/dlib_parity.safetensors"),
    ) else {
        return;
    };
    let bytes = std::fs::read(fixture).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (boxes, lms) = (f32s(&st, "boxes"), f32s(&st, "landmarks5"));
    let (rects, angles) = (f32s(&st, "chip_rects"), f32s(&st, "chip_angles"));
    let n = angles.len();
    let (mut lm_err, mut rect_err, mut ang_err, mut mean_sum, mut mean_max, mut px_max) =
        (0f64, 0f64, 0f64, 0f64, 0f64, 0u8);
    for i in 0..n {
        let img = image(&st, "images", i);
        let lm = &lms[10 * i..10 * i + 10];
        let pred = sp.predict(&img, rect(&boxes[4 * i..4 * i + 4]));
        lm_err = lm_err.max(max_err(&pred, lm));
        let cd = get_face_chip_details(&five(lm), 150, 0.25);
        let r = [cd.rect.left, cd.rect.top, cd.rect.right, cd.rect.bottom];
        rect_err = r
            .iter()
            .zip(&rects[4 * i..4 * i + 4])
            .map(|(a, b)| (a - b).abs())
            .fold(rect_err, f64::max);
        ang_err = ang_err.max((cd.angle - angles[i]).abs());
        let (mean, max) = diff(&extract_image_chip(&img, &cd), &image(&st, "chips", i));
        (mean_sum, mean_max, px_max) = (mean_sum + mean, mean_max.max(mean), px_max.max(max));
    }
    println!("fixture ({n} faces): landmark max err {lm_err} px; chip rect max err {rect_err:.2e}, angle {ang_err:.2e}");
    println!(
        "fixture chips: mean |d| avg {:.4}, worst {mean_max:.4}, max |d| {px_max}",
        mean_sum / n as f64
    );
    assert!(lm_err <= 1.0, "landmarks off by {lm_err}");
    assert!(rect_err < 1e-3 && ang_err < 1e-3);
    assert!(mean_max <= 1.0);
}

#[test]
fn odd_images_and_rectangles_do_not_panic() {
    let Some(sp) = predictor() else {
        return;
    };
    let tiny = RgbImage::new(0, 0);
    let r = Rect {
        left: -50,
        top: 10_000,
        right: -400,
        bottom: 3,
    };
    assert_eq!(sp.predict(&tiny, r).len(), 5);
    let huge = Rect {
        left: i64::MIN / 4,
        top: 0,
        right: i64::MAX / 4,
        bottom: 1,
    };
    assert_eq!(sp.predict(&RgbImage::new(3, 2), huge).len(), 5);
    let mut bad = sp.clone();
    bad.anchor_idx[0][0] = 99;
    assert!(bad.validate().is_err());
    assert_eq!(
        bad.predict(
            &RgbImage::new(30, 30),
            Rect {
                left: 0,
                top: 0,
                right: 29,
                bottom: 29
            }
        )
        .len(),
        5
    );
}

#[test]
fn truncated_and_foreign_files_give_errors() {
    let Some(path) = common::shared_path(MODEL) else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let n = bytes.len();
    for cut in [
        0,
        1,
        2,
        3,
        5,
        17,
        100,
        1000,
        4097,
        n / 3,
        n / 2,
        n - 1000,
        n - 7,
        n - 1,
    ] {
        let e = ShapePredictor::from_dlib_bytes(&bytes[..cut]).unwrap_err();
        assert!(e.offset <= cut, "{e}");
        if [100, n / 2, n - 1].contains(&cut) {
            println!("cut at {cut}: {e}");
        }
    }
    let mut extra = bytes.clone();
    extra.push(0);
    println!(
        "trailing byte: {}",
        ShapePredictor::from_dlib_bytes(&extra).unwrap_err()
    );
    // xorshift noise, and noise behind a valid version header
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for trial in 0..200 {
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut data = if trial % 2 == 0 {
            vec![0x01, 0x01]
        } else {
            vec![]
        };
        data.extend(noise);
        let e = ShapePredictor::from_dlib_bytes(&data).unwrap_err();
        if trial < 2 {
            println!("random bytes: {e}");
        }
    }
    let resnet = common::shared_path("pretrained/dlib/dlib_face_recognition_resnet_model_v1.dat");
    if let Some(resnet) = resnet.map(|p| std::fs::read(p).unwrap()) {
        println!(
            "resnet file as a shape predictor: {}",
            ShapePredictor::from_dlib_bytes(&resnet).unwrap_err()
        );
    }
}
