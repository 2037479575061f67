//! MTCNN parity with facenet-pytorch 2.6.0 (fixtures made by `shared/reference/make_fixtures.py`):
//! the three networks, every stage of the cascade on scikit-image's astronaut, the
//! `extract_face` crop, and whole detections on real photos (`mtcnn_detect.json`).

mod common;

use common::shared_dir;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_face::detect::{extract_face, Face, Mtcnn};

fn fixture(shared: &std::path::Path, name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(shared.join("fixtures").join(name), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn mtcnn(shared: &std::path::Path) -> Mtcnn {
    let f = shared.join("fixtures");
    Mtcnn::load_files(
        f.join("mtcnn_pnet.safetensors"),
        f.join("mtcnn_rnet.safetensors"),
        f.join("mtcnn_onet.safetensors"),
        &Device::Cpu,
    )
    .expect("load MTCNN")
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let d = common::max_abs_diff(got, want);
    println!("{what}: max |Δ| = {d:.3e}");
    assert!(d <= tol, "{what}: max |Δ| = {d} > {tol}");
}

#[test]
fn networks_match_facenet_pytorch() {
    let Some(shared) = shared_dir() else { return };
    let fx = fixture(&shared, "mtcnn_parity.safetensors");
    let m = mtcnn(&shared);
    let (reg, prob) = m.pnet().forward(&fx["pnet.input"]).unwrap();
    assert_close("pnet.bbox", &reg, &fx["pnet.bbox"], 1e-4);
    assert_close("pnet.prob", &prob, &fx["pnet.prob"], 1e-4);
    let (reg, prob) = m.rnet().forward(&fx["rnet.input"]).unwrap();
    assert_close("rnet.bbox", &reg, &fx["rnet.bbox"], 1e-4);
    assert_close("rnet.prob", &prob, &fx["rnet.prob"], 1e-4);
    let (reg, lm, prob) = m.onet().forward(&fx["onet.input"]).unwrap();
    assert_close("onet.bbox", &reg, &fx["onet.bbox"], 1e-4);
    assert_close("onet.landmarks", &lm, &fx["onet.landmarks"], 1e-4);
    assert_close("onet.prob", &prob, &fx["onet.prob"], 1e-4);
}

#[test]
fn cascade_stages_match_on_astronaut() {
    let Some(shared) = shared_dir() else { return };
    let fx = fixture(&shared, "mtcnn_e2e_astronaut.safetensors");
    let m = mtcnn(&shared);
    let raw = fx["image_u8"]
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let img = image::RgbImage::from_raw(512, 512, raw).unwrap();
    let (faces, trace) = m.detect_with_trace(&img).unwrap();

    // Pyramid level 4 (78×78) and PNet on it.
    let sizes: Vec<usize> = trace.pyramid.iter().map(|t| t.dim(2).unwrap()).collect();
    assert_eq!(sizes, vec![308, 218, 155, 110, 78, 56, 40, 28, 20, 14]);
    assert_close(
        "pnet.scale4.in",
        &trace.pyramid[4],
        &fx["pnet.scale4.in"],
        1e-5,
    );
    let (reg, prob) = m.pnet().forward(&fx["pnet.scale4.in"]).unwrap();
    assert_close(
        "pnet.scale4.out.reg",
        &reg,
        &fx["pnet.scale4.out.reg"],
        1e-4,
    );
    assert_close(
        "pnet.scale4.out.prob",
        &prob,
        &fx["pnet.scale4.out.prob"],
        1e-4,
    );

    // Stage 1 → RNet batch.
    assert_eq!(trace.stage1.len(), 153, "candidates after stage 1");
    assert_close(
        "rnet.in",
        trace.rnet_input.as_ref().unwrap(),
        &fx["rnet.in"],
        1e-4,
    );
    let (reg, prob) = m.rnet().forward(&fx["rnet.in"]).unwrap();
    assert_close("rnet.out.reg", &reg, &fx["rnet.out.reg"], 1e-4);
    assert_close("rnet.out.prob", &prob, &fx["rnet.out.prob"], 1e-4);

    // Stage 2 → ONet batch.
    assert_eq!(trace.stage2.len(), 9, "candidates after stage 2");
    assert_close(
        "onet.in",
        trace.onet_input.as_ref().unwrap(),
        &fx["onet.in"],
        1e-4,
    );
    let (reg, lm, prob) = m.onet().forward(&fx["onet.in"]).unwrap();
    assert_close("onet.out.reg", &reg, &fx["onet.out.reg"], 1e-4);
    assert_close("onet.out.landmarks", &lm, &fx["onet.out.landmarks"], 1e-4);
    assert_close("onet.out.prob", &prob, &fx["onet.out.prob"], 1e-4);

    // Stage 3: one face.
    assert_eq!(faces.len(), 1);
    let f = faces[0];
    let want_box = fx["boxes"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want_lm = fx["landmarks"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want_p = fx["probs"].to_vec1::<f32>().unwrap()[0];
    println!("box {:?} vs {want_box:?}", f.bbox);
    for (g, w) in f.bbox.iter().zip(&want_box) {
        assert!((g - w).abs() <= 1e-2, "box {:?} vs {want_box:?}", f.bbox);
    }
    for (g, w) in f.landmarks.iter().flatten().zip(&want_lm) {
        assert!(
            (g - w).abs() <= 1e-2,
            "landmarks {:?} vs {want_lm:?}",
            f.landmarks
        );
    }
    assert!((f.score - want_p).abs() <= 1e-5);

    // facenet-pytorch's crop (margin 0, 160 px, post_process standardization).
    let crop = extract_face(&img, f.bbox, 0, 160).unwrap();
    let (w, h) = crop.dimensions();
    let mut chw = vec![0f32; 3 * 160 * 160];
    for (x, y, p) in crop.enumerate_pixels() {
        for c in 0..3 {
            chw[(c * h as usize + y as usize) * w as usize + x as usize] =
                (f32::from(p[c]) - 127.5) / 128.0;
        }
    }
    let got = Tensor::from_vec(chw, (3, 160, 160), &Device::Cpu).unwrap();
    assert_close("face160", &got, &fx["face160"], 1e-6);
}

#[derive(serde::Deserialize)]
struct Expected {
    image: String,
    width: u32,
    height: u32,
    boxes: Vec<[f32; 4]>,
    probs: Vec<f32>,
    landmarks: Vec<[[f32; 2]; 5]>,
}

#[derive(serde::Deserialize)]
struct DetectJson {
    results: Vec<Expected>,
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    w * h / (area(a) + area(b) - w * h)
}

/// Pixel tolerances for one photo. Lossless images must match facenet-pytorch to rounding, as
/// both decoders give identical pixels; so must JPEGs when they are decoded by libjpeg-turbo
/// (feature `libjpeg`, the default), as PIL does. The `image` crate's own JPEG decoder
/// (zune-jpeg, without the feature) differs from libjpeg-turbo by up to ±5 levels per pixel on
/// these LFW photos, and that alone moves a box by up to ~2.6 px.
fn tolerance(image: &str) -> (f32, f32, f32, f32) {
    // (max box |Δ| px, min IoU, max landmark |Δ| px, max probability |Δ|)
    if image.ends_with(".png") || cfg!(feature = "libjpeg") {
        (0.01, 0.999, 0.01, 1e-5)
    } else {
        (4.0, 0.92, 2.0, 1e-3)
    }
}

#[test]
fn detections_match_facenet_pytorch_on_real_photos() {
    let Some(shared) = shared_dir() else { return };
    let text = std::fs::read_to_string(shared.join("fixtures/mtcnn_detect.json")).unwrap();
    let json: DetectJson = serde_json::from_str(&text).unwrap();
    assert!(
        json.results.iter().any(|r| r.boxes.is_empty()),
        "fixture lacks the no-face case"
    );
    let m = mtcnn(&shared);
    let mut failures = Vec::new();
    for r in &json.results {
        let img = candle_face::image::load_image(&shared.join(&r.image)).unwrap();
        assert_eq!(img.dimensions(), (r.width, r.height), "{}", r.image);
        let faces: Vec<Face> = m.detect(&img).unwrap();
        println!(
            "{}: {} faces (want {})",
            r.image,
            faces.len(),
            r.boxes.len()
        );
        if faces.len() != r.boxes.len() {
            failures.push(format!(
                "{}: {} faces, want {}",
                r.image,
                faces.len(),
                r.boxes.len()
            ));
            continue;
        }
        let (tb, tiou, tl, tp) = tolerance(&r.image);
        for (i, f) in faces.iter().enumerate() {
            let (wb, wl, wp) = (&r.boxes[i], &r.landmarks[i], r.probs[i]);
            let dmax = f
                .bbox
                .iter()
                .zip(wb)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let lmax = f
                .landmarks
                .iter()
                .flatten()
                .zip(wl.iter().flatten())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let o = iou(&f.bbox, wb);
            println!(
                "  face {i}: box Δ {dmax:.3} px, IoU {o:.4}, landmark Δ {lmax:.3} px, p {} vs {wp}",
                f.score
            );
            if dmax > tb || o < tiou || lmax > tl || (f.score - wp).abs() > tp {
                failures.push(format!("{} face {i}: {f:?} vs {wb:?} {wl:?} {wp}", r.image));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
