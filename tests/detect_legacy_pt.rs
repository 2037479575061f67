//! facenet-pytorch's shipped `pnet.pt`/`rnet.pt`/`onet.pt` (legacy PyTorch format) read with
//! `read_legacy_pt` must equal the converted safetensors copies in `shared/fixtures`, and the
//! folder written by `convert_mtcnn_pt` must load and detect like them.
//!
//! Needs the `.pt` files, which are not in shared/: set `CANDLE_FACE_MTCNN_PT` to a folder
//! holding them, e.g.
//! ```sh
//! pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fp
//! python3 -m zipfile -e /tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl /tmp/fp/x
//! CANDLE_FACE_MTCNN_PT=/tmp/fp/x/facenet_pytorch/data cargo test --test detect_legacy_pt
//! ```

mod common;

use common::shared_dir;

use std::path::PathBuf;

use candle_core::Device;
use candle_face::convert::{convert_mtcnn_pt, read_legacy_pt};
use candle_face::detect::Mtcnn;

fn pt_dir() -> Option<PathBuf> {
    match std::env::var_os("CANDLE_FACE_MTCNN_PT") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!("skipping: CANDLE_FACE_MTCNN_PT (folder with facenet-pytorch's pnet.pt, rnet.pt, onet.pt) not set");
            None
        }
    }
}

#[test]
fn legacy_pt_equals_shared_safetensors() {
    let (Some(shared), Some(pt)) = (shared_dir(), pt_dir()) else {
        return;
    };
    for net in ["pnet", "rnet", "onet"] {
        let got = read_legacy_pt(pt.join(format!("{net}.pt"))).unwrap();
        let want = candle_core::safetensors::load(
            shared.join(format!("fixtures/mtcnn_{net}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let mut names: Vec<_> = got.keys().cloned().collect();
        names.sort();
        let mut want_names: Vec<_> = want.keys().cloned().collect();
        want_names.sort();
        assert_eq!(names, want_names, "{net}: tensor names");
        for name in names {
            let (g, w) = (&got[&name], &want[&name]);
            assert_eq!(g.dims(), w.dims(), "{net}.{name}");
            let gv = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let wv = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(gv == wv, "{net}.{name}: values differ");
        }
        println!("{net}: {} tensors identical", got.len());
    }
}

#[test]
fn converted_folder_detects_like_the_fixture_weights() {
    let (Some(shared), Some(pt)) = (shared_dir(), pt_dir()) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    convert_mtcnn_pt(
        pt.join("pnet.pt"),
        pt.join("rnet.pt"),
        pt.join("onet.pt"),
        out.path(),
    )
    .unwrap();
    let converted = Mtcnn::load(out.path(), &Device::Cpu).unwrap();
    let f = shared.join("fixtures");
    let reference = Mtcnn::load_files(
        f.join("mtcnn_pnet.safetensors"),
        f.join("mtcnn_rnet.safetensors"),
        f.join("mtcnn_onet.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let img = image::open(f.join("images/group_640x480.png"))
        .unwrap()
        .to_rgb8();
    let a = converted.detect(&img).unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a, reference.detect(&img).unwrap());
}
