//! dlib's face-recognition ResNet in candle-face: the network alone on 150×150 chips and the
//! whole `candle-face verify` of two photos, timed so the figures sit beside dlib's own
//! (`scripts/dlib_bench.py`) and a PyTorch port of the same network
//! (`scripts/bench_dlib_torch.py`). Prints one JSON object per benchmark on stdout:
//!
//! - `dlib-resnet-infer`: `BundledModel::Dlib` without detection, `embed_prepared` (preprocess +
//!   network) on dlib's own chips from `shared/fixtures/dlib_parity.safetensors` (cycled to fill
//!   a batch; synthetic noise chips when the fixture is missing): batch-1 median latency and
//!   batch-32 throughput, plus the largest |Δ| to dlib's descriptors of those chips.
//! - `dlib-verify`: `Verifier::verify_paths(a, b)` as the CLI runs it (the default model with
//!   MTCNN detection, dlib's 5-point shape predictor and chip, loaded once outside the timing)
//!   on two LFW photos; median ms, and the median of each stage (decode, detect + align, embed:
//!   summed over both photos, timed one after the other; `verify_paths` decodes and detects the
//!   two photos in parallel, so the stages can add up to more than the whole).
//!
//! `cargo bench --bench dlib [-- NAME...]`; names: `dlib-resnet-infer`, `dlib-verify`.
//! Environment: `RUNS` scales the number of timed repetitions (default 1.0);
//! `CANDLE_FACE_SHARED` (else `../shared`); `RAYON_NUM_THREADS` (else candle's default, the
//! number of cores). `scripts/compare-dlib.sh` runs this, dlib and PyTorch in one go.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_face::image::load_image;
use candle_face::infer::{BundledModel, Verifier};
use image::RgbImage;
use serde_json::json;

mod common;

use common::{median, runs, timed_all, Res};

fn shared() -> PathBuf {
    std::env::var_os("CANDLE_FACE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// Threads in use: candle's count and rayon's pool (`pin_thread_count` makes them agree).
fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// dlib's chips and descriptors from the fixture, or `n` noise chips (no descriptors).
fn chips(n: usize) -> Res<(Vec<RgbImage>, Option<Tensor>, &'static str)> {
    let p = shared().join("fixtures/dlib_parity.safetensors");
    if p.is_file() {
        let mut fx = candle_core::safetensors::load(&p, &Device::Cpu)?;
        if let (Some(c), Some(d)) = (fx.remove("chips"), fx.remove("chip_descriptors")) {
            let (k, h, w, _) = c.dims4()?;
            let flat = c.flatten_all()?.to_vec1::<u8>()?;
            let imgs = flat
                .chunks_exact(h * w * 3)
                .take(k)
                .map(|c| RgbImage::from_raw(w as u32, h as u32, c.to_vec()).unwrap())
                .collect();
            return Ok((imgs, Some(d), "fixture"));
        }
    }
    // Deterministic noise (xorshift), no fixture needed.
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let imgs = (0..n)
        .map(|_| {
            RgbImage::from_fn(150, 150, |_, _| {
                let mut px = [0u8; 3];
                for v in &mut px {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    *v = (s >> 56) as u8;
                }
                image::Rgb(px)
            })
        })
        .collect();
    Ok((imgs, None, "synthetic"))
}

fn bench_infer() -> Res<()> {
    let emb = BundledModel::Dlib
        .embedder(&Device::Cpu)?
        .without_detection();
    let (pool, want, source) = chips(32)?;
    let parity = match &want {
        Some(d) => {
            let got = emb.embed_prepared(&pool)?;
            let diff = (got - d)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            Some(diff as f64)
        }
        None => None,
    };
    let batch32: Vec<RgbImage> = pool.iter().cycle().take(32).cloned().collect();
    let mut k = 0usize;
    let lat = median(timed_all(3, runs(30), || {
        let one = std::slice::from_ref(&pool[k % pool.len()]);
        k += 1;
        emb.embed_prepared(one)?.to_vec2::<f32>()?;
        Ok(())
    })?);
    let b32 = median(timed_all(1, runs(5), || {
        emb.embed_prepared(&batch32)?.to_vec2::<f32>()?;
        Ok(())
    })?);
    println!(
        "{}",
        json!({
            "bench": "dlib-resnet-infer", "impl": "candle-face", "input": 150, "chips": source,
            "what": "embed_prepared (preprocess + network) on 150x150 chips, without detection",
            "batch1_latency_ms": 1000.0 * lat, "batch32_images_per_s": 32.0 / b32,
            "batch32_ms_per_batch": 1000.0 * b32, "parity_max_abs_diff": parity,
            "threads": threads(), "rayon_threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}

fn bench_verify() -> Res<()> {
    let lfw = shared().join("data/lfw/train/Aaron_Peirsol");
    let (a, b) = (
        lfw.join("Aaron_Peirsol_0001.jpg"),
        lfw.join("Aaron_Peirsol_0002.jpg"),
    );
    if !a.is_file() || !b.is_file() {
        eprintln!(
            "dlib-verify: {} not found (set CANDLE_FACE_SHARED): skipped",
            a.display()
        );
        return Ok(());
    }
    // As `candle-face verify a b` with no options: the default model, detection from its config.
    let emb = BundledModel::Dlib
        .embedder(&Device::Cpu)?
        .with_model_defaults()?;
    let verifier = Verifier::new(emb, None)?;
    let mut verdict = None;
    let ts = timed_all(2, runs(15), || {
        verdict = Some(verifier.verify_paths(&a, &b)?);
        Ok(())
    })?;
    let verdict = verdict.expect("timed at least once");

    // The same work stage by stage, one photo after the other.
    let emb = verifier.embedder();
    let finder = emb.face_finder().expect("the default model detects faces");
    let pre = &emb.config().preprocess;
    let (mut decode, mut detect, mut embed) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..1 + runs(10) {
        let t0 = Instant::now();
        let imgs = [load_image(&a)?, load_image(&b)?];
        let t1 = Instant::now();
        let crops = [
            pre.prepare(&finder.find(&imgs[0], &a)?),
            pre.prepare(&finder.find(&imgs[1], &b)?),
        ];
        let t2 = Instant::now();
        emb.embed_prepared(&crops)?.to_vec2::<f32>()?;
        let t3 = Instant::now();
        if i > 0 {
            decode.push((t1 - t0).as_secs_f64() * 1e3);
            detect.push((t2 - t1).as_secs_f64() * 1e3);
            embed.push((t3 - t2).as_secs_f64() * 1e3);
        }
    }
    let min = ts.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{}",
        json!({
            "bench": "dlib-verify", "impl": "candle-face",
            "what": "Verifier::verify_paths: decode + MTCNN + dlib HOG box + 5pt shape predictor + dlib chip + ResNet (batch 2) + distance",
            "img1": "Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "img2": "Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
            "distance": verdict.distance, "same": verdict.same,
            "runs": ts.len(), "median_ms": 1000.0 * median(ts), "min_ms": 1000.0 * min,
            "stage_median_ms_both_photos": {
                "decode": median(decode), "detect_align": median(detect), "embed": median(embed),
            },
            "threads": threads(), "rayon_threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}

fn main() -> Res<()> {
    // As the `candle-face` binary starts up.
    let user_threads = std::env::var("RAYON_NUM_THREADS").ok();
    candle_face::tune_allocator();
    candle_face::pin_thread_count();
    eprintln!(
        "candle-face dlib bench: {} threads (RAYON_NUM_THREADS {})",
        candle_core::utils::get_num_threads(),
        user_threads.as_deref().unwrap_or("unset: candle's default")
    );
    // `cargo bench` passes `--bench`; any other arguments pick benchmarks by name.
    let names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |n: &str| names.is_empty() || names.iter().any(|a| a == n);
    if !BundledModel::Dlib.is_built_in() {
        eprintln!("this build has no bundled dlib model (models/dlib-resnet-v1/ was empty)");
        return Ok(());
    }
    if want("dlib-resnet-infer") {
        bench_infer()?;
    }
    if want("dlib-verify") {
        bench_verify()?;
    }
    Ok(())
}
