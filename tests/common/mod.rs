//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

#[path = "../../benches/common/fill.rs"]
pub mod fill;

/// The `shared/` folder (real data and parity fixtures): `$CANDLE_FACE_SHARED`, else `../shared`
/// beside the crate. `None` (with a message on stderr) when it is missing.
pub fn shared_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CANDLE_FACE_SHARED").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.join("data").is_dir() || c.join("fixtures").is_dir() {
            return Some(c);
        }
    }
    eprintln!("skipping: shared/ not found (set CANDLE_FACE_SHARED to the folder with data/ and fixtures/)");
    None
}

/// A file or folder inside `shared/`, or `None` with a message when it is missing.
pub fn shared_path(rel: &str) -> Option<PathBuf> {
    let p = shared_dir()?.join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not found in shared/", p.display());
        None
    }
}

/// The first `n` entries of `dir`, sorted by path.
pub fn sorted_files(dir: &std::path::Path, n: usize) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v.truncate(n);
    v
}

/// `shared/data/lfw/train` when this build also bundles the default model (tests that verify
/// with it); `None`, saying which is missing, otherwise.
pub fn lfw_with_bundled_model() -> Option<PathBuf> {
    if !candle_face::infer::has_bundled_model() {
        eprintln!("skipping: this build has no default model in models/default");
        return None;
    }
    shared_path("data/lfw/train")
}

/// The largest absolute difference between two tensors of the same shape (f32).
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
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

/// A tiny trained model (library call, a few steps on synthetic people).
pub fn tiny_model(root: &std::path::Path) -> PathBuf {
    use candle_face::image::preprocess::Preprocess;
    use candle_face::model::{Architecture, CompactCnnConfig};
    use candle_face::train::{train, Duration, TrainOptions};
    let data = root.join("train-data");
    candle_face::synthetic::write_dataset(&data, 8, 3, 40, 5).unwrap();
    let out = root.join("model");
    let mut o = TrainOptions::new(&data, &out);
    o.architecture = Architecture::CompactCnn(CompactCnnConfig {
        channels: vec![4, 8],
        embedding_dim: 8,
        image_size: 16,
        ..Default::default()
    });
    o.preprocess = Preprocess {
        image_size: 16,
        crop_fraction: 0.9,
        ..Preprocess::compact_default()
    };
    o.duration = Duration::Steps(3);
    o.people_per_batch = 4;
    o.images_per_person = 2;
    o.val_fraction = 0.0;
    train(&o, &mut |_| {}).unwrap();
    out
}
