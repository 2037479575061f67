//! `prepare_folder` / `candle-face prepare` on real faces (LFW images from `shared/`, one pasted
//! off-centre into a larger scene beside a second, larger face), with an image without a face and
//! a broken file among them: crops land where the recipe says, bad files are reported and
//! skipped, a second run keeps what exists.

mod common;

use assert_cmd::Command;
use candle_core::Device;
use candle_face::data::{prepare_folder, PrepareOptions};
use candle_face::detect::{bundled_mtcnn, face_crop::LFW_TEMPLATE_250, FaceCrop, FacePick};
use candle_face::image::load_image;
use candle_face::infer::FaceFinder;
use image::{imageops, Rgb, RgbImage};
use std::path::Path;

fn first_image(person: &Path) -> std::path::PathBuf {
    common::sorted_files(person, 1).remove(0)
}

/// `src/Ann`: a 640×480 scene with Ann's face in the middle and a larger face of someone else
/// in the corner, a grey image, a broken JPEG; `src/Bob`: an LFW image as it is.
fn build(lfw: &Path, src: &Path) {
    let ann = image::open(first_image(&lfw.join("George_W_Bush")))
        .unwrap()
        .to_rgb8();
    let other = image::open(first_image(&lfw.join("Tony_Blair")))
        .unwrap()
        .to_rgb8();
    let mut scene = RgbImage::from_fn(640, 480, |x, y| {
        Rgb([(40 + x / 8) as u8, (60 + y / 6) as u8, 90])
    });
    imageops::overlay(&mut scene, &ann, 195, 115);
    // Only the face region of the other person, enlarged, in the top-left corner.
    let face = imageops::crop_imm(&other, 55, 50, 140, 150).to_image();
    let face = imageops::resize(&face, 200, 214, imageops::FilterType::Triangle);
    imageops::overlay(&mut scene, &face, 0, 0);
    std::fs::create_dir_all(src.join("Ann")).unwrap();
    std::fs::create_dir_all(src.join("Bob")).unwrap();
    scene.save(src.join("Ann/scene.png")).unwrap();
    RgbImage::from_pixel(120, 120, Rgb([128, 128, 128]))
        .save(src.join("Ann/empty.png"))
        .unwrap();
    std::fs::write(src.join("Ann/broken.jpg"), b"not a jpeg at all").unwrap();
    std::fs::copy(
        first_image(&lfw.join("Colin_Powell")),
        src.join("Bob/powell.jpg"),
    )
    .unwrap();
}

/// Distances between the landmarks MTCNN finds in `img` (central face) and the template.
fn landmark_errors(img: &RgbImage) -> Vec<f32> {
    let m = bundled_mtcnn(&Device::Cpu).unwrap();
    let faces = m.detect(img).unwrap();
    let f = FacePick::Central
        .choose(&faces, img.width(), img.height())
        .expect("a face");
    f.landmarks
        .iter()
        .zip(LFW_TEMPLATE_250)
        .map(|(p, t)| ((p[0] - t[0]).powi(2) + (p[1] - t[1]).powi(2)).sqrt())
        .collect()
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn prepare_crops_aligns_reports_and_resumes() {
    let Some(lfw) = common::shared_path("data/lfw/train") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    build(&lfw, &src);
    let largest = FaceFinder::bundled(FaceCrop::lfw_aligned(), &Device::Cpu).unwrap();
    let finder = largest.clone().with_pick(FacePick::Central);
    let opts = PrepareOptions::default();
    let r = prepare_folder(&src, &out, &finder, &opts).unwrap();
    assert_eq!(
        (r.people, r.images, r.written, r.kept),
        (2, 4, 2, 0),
        "{r:?}"
    );
    assert_eq!(r.no_face, vec![src.join("Ann/empty.png")]);
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert_eq!(r.failed[0].0, src.join("Ann/broken.jpg"));

    // The crops are LFW-sized, their landmarks sit on the template, and Ann's is Ann's face
    // (the central one), not the larger face in the corner: her crop matches the crop of her
    // original image.
    let ann = load_image(&out.join("Ann/scene.png")).unwrap();
    let bob = load_image(&out.join("Bob/powell.png")).unwrap();
    assert_eq!(ann.dimensions(), (250, 250));
    assert_eq!(bob.dimensions(), (250, 250));
    // A similarity cannot move five points onto five others exactly (expression, pose), so the
    // landmarks found again in the crop are compared with those of the unaligned LFW image: the
    // crop's must be nearer the template, its eyes within a few pixels.
    for (crop, person) in [(&ann, "George_W_Bush"), (&bob, "Colin_Powell")] {
        let before = landmark_errors(&load_image(&first_image(&lfw.join(person))).unwrap());
        let after = landmark_errors(crop);
        eprintln!("{person}: before {before:.2?}, after {after:.2?}");
        assert!(mean(&after) < mean(&before), "{before:?} → {after:?}");
        assert!(after[0] < 3.0 && after[1] < 3.0, "eyes {after:?}");
    }
    let original = load_image(&first_image(&lfw.join("George_W_Bush"))).unwrap();
    let direct = finder.find(&original, Path::new("original")).unwrap();
    let diff = ann
        .pixels()
        .zip(direct.pixels())
        .map(|(a, b)| {
            (0..3)
                .map(|c| (a[c] as f32 - b[c] as f32).abs())
                .sum::<f32>()
        })
        .sum::<f32>()
        / (250.0 * 250.0 * 3.0);
    assert!(diff < 12.0, "mean absolute difference {diff}");

    // With the largest face picked instead, Ann's crop is the other person's face.
    let out_big = tmp.path().join("out-largest");
    prepare_folder(&src, &out_big, &largest, &opts).unwrap();
    let big = load_image(&out_big.join("Ann/scene.png")).unwrap();
    assert_ne!(big, ann);

    // A second run keeps the crops; --overwrite writes them again.
    let r = prepare_folder(&src, &out, &finder, &opts).unwrap();
    assert_eq!((r.written, r.kept), (0, 2));
    let again = PrepareOptions {
        overwrite: true,
        ..opts.clone()
    };
    assert_eq!(
        prepare_folder(&src, &out, &finder, &again).unwrap().written,
        2
    );

    // An output folder inside the source is refused before anything is written.
    let inside = src.join("crops");
    let e = prepare_folder(&src, &inside, &finder, &opts);
    assert!(e.is_err());
    std::fs::create_dir_all(&inside).unwrap();
    let e = prepare_folder(&src, &inside, &finder, &opts).unwrap_err();
    assert!(e.to_string().contains("inside the source folder"), "{e}");
}

#[test]
fn prepare_command_summarizes_and_names_skipped_files() {
    let Some(lfw) = common::shared_path("data/lfw/train") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    build(&lfw, &src);
    let o = Command::cargo_bin("candle-face")
        .unwrap()
        .args([
            "prepare",
            "--crop",
            "lfw-aligned",
            "--pick",
            "central",
            "--data",
        ])
        .arg(&src)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    assert!(
        stdout.contains(
            "2 people, 4 images: 2 crops written, 0 kept, 1 without a face, 1 unreadable"
        ),
        "{stdout}"
    );
    assert!(stderr.contains("empty.png: no face found"), "{stderr}");
    assert!(stderr.contains("broken.jpg"), "{stderr}");
    assert!(out.join("Bob/powell.png").is_file());
}

#[test]
fn verify_detect_picks_the_central_face_when_asked() {
    let Some(lfw) = common::lfw_with_bundled_model() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build(&lfw, &src);
    let original = first_image(&lfw.join("George_W_Bush"));
    let distance = |pick: &str| -> (f64, bool) {
        let o = Command::cargo_bin("candle-face")
            .unwrap()
            .args(["verify", "--json", "--detect", "--pick", pick])
            .arg(src.join("Ann/scene.png"))
            .arg(&original)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            v["distance"].as_f64().unwrap(),
            v["same"].as_bool().unwrap(),
        )
    };
    // The scene's central face is the original image's person; the larger one is not.
    let (central, same) = distance("central");
    let (largest, _) = distance("largest");
    assert!(same, "central face: distance {central}");
    assert!(central < largest, "central {central}, largest {largest}");
    // --pick with --no-detect is refused.
    let o = Command::cargo_bin("candle-face")
        .unwrap()
        .args(["verify", "--no-detect", "--pick", "central"])
        .arg(&original)
        .arg(&original)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--no-detect"));
}
