//! dlib's face-recognition ResNet, converted from dlib's own `.dat` file, against the outputs of
//! dlib itself (`shared/fixtures/dlib_parity.safetensors`, made by dlib 20 with
//! `shared/reference/dlib_ref.py`).

mod common;

use candle_core::{Device, Tensor};
use candle_face::convert::convert_dlib_resnet;
use candle_face::infer::Embedder;
use image::RgbImage;
use std::collections::HashMap;
use std::path::PathBuf;

const RESNET: &str = "pretrained/dlib/dlib_face_recognition_resnet_model_v1.dat";

fn fixture() -> Option<HashMap<String, Tensor>> {
    let p = common::shared_path("fixtures/dlib_parity.safetensors")?;
    Some(candle_core::safetensors::load(p, &Device::Cpu).unwrap())
}

/// The (N, S, S, 3) u8 tensor as N RGB images.
fn images(t: &Tensor) -> Vec<RgbImage> {
    let (n, h, w, _) = t.dims4().unwrap();
    let flat = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    flat.chunks_exact(h * w * 3)
        .take(n)
        .map(|c| RgbImage::from_raw(w as u32, h as u32, c.to_vec()).unwrap())
        .collect()
}

fn converted() -> Option<(tempfile::TempDir, PathBuf)> {
    let dat = common::shared_path(RESNET)?;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dlib");
    convert_dlib_resnet(&dat, &out).unwrap();
    Some((dir, out))
}

#[test]
fn network_matches_dlib_on_its_own_chips_and_on_noise() {
    let (Some(fx), Some((_dir, model))) = (fixture(), converted()) else {
        return;
    };
    let emb = Embedder::load(&model).unwrap();
    let cfg = emb.config();
    assert_eq!(cfg.threshold, Some(0.6));
    assert_eq!(cfg.preprocess.channel_mean.map(|m| m[0]), Some(122.782));
    for (chips, want) in [
        ("chips", "chip_descriptors"),
        ("noise_chips", "noise_descriptors"),
    ] {
        let got = emb.embed_prepared(&images(&fx[chips])).unwrap();
        let d = common::max_abs_diff(&got, &fx[want]);
        eprintln!("{want}: max |Δ| = {d:e}");
        assert!(d <= 1e-4, "{want}: max |Δ| = {d}");
    }
}

/// dlib's chips and noise in one batch of more than 16: groups of 16 images run with the images
/// in the vector lanes, the rest in the flat layout (on AVX-512 CPUs).
#[test]
fn network_matches_dlib_in_a_batch_past_16() {
    let (Some(fx), Some((_dir, model))) = (fixture(), converted()) else {
        return;
    };
    let emb = Embedder::load(&model).unwrap();
    let parts = ["chips", "noise_chips", "chips"];
    let batch: Vec<RgbImage> = parts.iter().flat_map(|p| images(&fx[*p])).collect();
    assert!(batch.len() > 16, "{} chips", batch.len());
    let got = emb.embed_prepared(&batch).unwrap();
    let want = ["chip_descriptors", "noise_descriptors", "chip_descriptors"].map(|w| &fx[w]);
    let want = Tensor::cat(&want, 0).unwrap();
    let d = common::max_abs_diff(&got, &want);
    eprintln!("{} chips in one batch: max |Δ| = {d:e}", batch.len());
    assert!(d <= 1e-4, "max |Δ| = {d}");
}

#[test]
fn truncated_and_foreign_files_are_refused_with_the_file_named() {
    let Some(dat) = common::shared_path(RESNET) else {
        return;
    };
    let bytes = std::fs::read(&dat).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.dat");
    let out = dir.path().join("out");
    let mut cases: Vec<(String, Vec<u8>)> =
        [0, 1, 5, 300, 340, 19_000, bytes.len() / 2, bytes.len() - 1]
            .iter()
            .map(|&n| (format!("cut at {n}"), bytes[..n].to_vec()))
            .collect();
    cases.push(("extra byte".into(), [bytes.as_slice(), &[0]].concat()));
    cases.push(("png".into(), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()));
    let mut wide = bytes.clone();
    // The stem's filter count (32 → 33) in its alias tensor: shapes no longer agree.
    let at = 19_310 + 2; // after "01 01" (alias version) comes "01 20"
    assert_eq!(&wide[at..at + 2], &[0x01, 0x20]);
    wide[at + 1] = 0x21;
    cases.push(("other shape".into(), wide));
    if let Some(sp) = common::shared_path("pretrained/dlib/shape_predictor_5_face_landmarks.dat") {
        cases.push(("landmark model".into(), std::fs::read(sp).unwrap()));
    }
    for (what, b) in cases {
        std::fs::write(&bad, &b).unwrap();
        let e = convert_dlib_resnet(&bad, &out).unwrap_err().to_string();
        assert!(e.contains("bad.dat") && e.contains("byte"), "{what}: {e}");
        assert!(
            !out.join("model.safetensors").exists(),
            "{what}: wrote weights"
        );
    }
}

/// Fine-tuning starts from the converted weights: a network built on a fresh `VarMap` whose
/// variables then receive them (as `train --init` does) computes dlib's descriptors.
#[test]
fn network_built_for_training_then_initialised_matches_dlib() {
    let (Some(fx), Some((_dir, model))) = (fixture(), converted()) else {
        return;
    };
    use candle_core::ModuleT;
    let cfg = candle_face::model::ModelConfig::load(&model).unwrap();
    let tensors =
        candle_core::safetensors::load(model.join("model.safetensors"), &Device::Cpu).unwrap();
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu);
    let net = candle_face::model::EmbeddingNet::new(&cfg.architecture, vb).unwrap();
    candle_face::train::init_varmap(&vm, &tensors, "converted").unwrap();
    let x = cfg
        .preprocess
        .to_tensor(&images(&fx["chips"])[..2], &Device::Cpu)
        .unwrap();
    let got = net.forward_t(&x, true).unwrap();
    let want = fx["chip_descriptors"].narrow(0, 0, 2).unwrap();
    let d = common::max_abs_diff(&got, &want);
    assert!(d <= 1e-4, "max |Δ| = {d}");
}

/// The whole photo pipeline (MTCNN, the ported HOG detector's box, dlib's landmarks and chip,
/// the network) on dlib's own test photos lands within 0.1 of dlib's descriptors for every
/// photo;
/// a tight crop of the face (no room around it for the detector) and a dark copy are still
/// found, and land near the photo's.
#[test]
fn photo_pipeline_matches_dlib_and_finds_tight_and_dark_faces() {
    let (Some(fx), true) = (fixture(), candle_face::infer::has_bundled_model()) else {
        return;
    };
    let emb = candle_face::infer::BundledModel::Dlib
        .embedder(&Device::Cpu)
        .unwrap();
    assert!(emb.face_finder().is_some(), "detection is on by default");
    let photos = images(&fx["images"]);
    let got = emb.embed_rgb(&photos).unwrap();
    let want = &fx["descriptors"];
    let dist = (&got - want)
        .unwrap()
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    eprintln!("photo pipeline vs dlib: {dist:?}");
    let mean = dist.iter().sum::<f32>() / dist.len() as f32;
    let max = dist.iter().copied().fold(0f32, f32::max);
    eprintln!("max {max}, mean {mean}");
    assert!(dist.iter().all(|&d| d <= 0.1), "{dist:?}");

    let boxes = fx["boxes"].to_vec2::<f32>().unwrap();
    let [l, t, r, b] = [0, 1, 2, 3].map(|k| boxes[0][k].max(0.0) as u32);
    let tight = image::imageops::crop_imm(&photos[0], l, t, r - l, b - t).to_image();
    let dark = RgbImage::from_fn(250, 250, |x, y| {
        image::Rgb(photos[1].get_pixel(x, y).0.map(|v| v / 6))
    });
    let e = emb.embed_rgb(&[tight, dark]).unwrap();
    // The tight crop loses some context; the dark copy (a sixth of the brightness) changes the
    // chip itself, yet stays well inside the same-person threshold of 0.6.
    for (i, (src, bound)) in [(0usize, 0.2f32), (1, 0.45)].iter().enumerate() {
        let d = (e.get(i).unwrap() - want.get(*src).unwrap())
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        eprintln!("variant {i} vs dlib's descriptor of the photo: {d}");
        assert!(d < *bound, "variant {i}: {d}");
    }
}
