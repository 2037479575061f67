//! `verify --detect` on uncropped photos gives the same verdict as `verify` on the face crops
//! they were made from. The "photos" are LFW images (deep-funneled crops, the framing the default
//! model expects) enlarged and pasted at an off-centre position into a larger 640×480 scene;
//! detection must find the face and re-frame it like the original crop.

mod common;

use assert_cmd::Command;
use image::{imageops, Rgb, RgbImage};
use std::path::{Path, PathBuf};

fn scene(face: &Path, out: &Path, scale: f32, at: (i64, i64)) {
    let img = image::open(face).unwrap().to_rgb8();
    let side = (img.width() as f32 * scale) as u32;
    let big = imageops::resize(&img, side, side, imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_fn(640, 480, |x, y| {
        Rgb([(40 + x / 8) as u8, (60 + y / 6) as u8, 90])
    });
    imageops::overlay(&mut canvas, &big, at.0, at.1);
    canvas.save(out).unwrap();
}

fn verdict(model_args: &[&str], a: &Path, b: &Path, detect: bool) -> (bool, f32) {
    let mut cmd = Command::cargo_bin("candle-face").unwrap();
    cmd.arg("verify").arg("--json").args(model_args);
    if detect {
        cmd.arg("--detect");
    }
    let out = cmd.arg(a).arg(b).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["same"].as_bool().unwrap(),
        v["distance"].as_f64().unwrap() as f32,
    )
}

fn first_images(person: &Path, n: usize) -> Vec<PathBuf> {
    common::sorted_files(person, n)
}

#[test]
fn detect_on_photos_agrees_with_crops() {
    let Some(lfw) = common::lfw_with_bundled_model() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let same = first_images(&lfw.join("George_W_Bush"), 2);
    let other = first_images(&lfw.join("Colin_Powell"), 1);
    let (a, b, c) = (&same[0], &same[1], &other[0]);
    let pa = tmp.path().join("a.png");
    let pb = tmp.path().join("b.png");
    let pc = tmp.path().join("c.png");
    scene(a, &pa, 1.2, (40, 60));
    scene(b, &pb, 1.0, (350, 150));
    scene(c, &pc, 1.4, (200, 20));
    for (x, y, px, py) in [(a, b, &pa, &pb), (a, c, &pa, &pc)] {
        let (crop_same, crop_d) = verdict(&[], x, y, false);
        let (photo_same, photo_d) = verdict(&[], px, py, true);
        eprintln!(
            "{} vs {}: crops {crop_d:.3} ({crop_same}), photos {photo_d:.3} ({photo_same})",
            x.display(),
            y.display()
        );
        assert_eq!(crop_same, photo_same);
    }
}
