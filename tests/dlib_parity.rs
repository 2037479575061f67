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

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
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
        let d = max_abs_diff(&got, &fx[want]);
        eprintln!("{want}: max |Δ| = {d:e}");
        assert!(d <= 1e-4, "{want}: max |Δ| = {d}");
    }
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
