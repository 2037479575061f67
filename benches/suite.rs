//! candle-face's benchmark suite: the library's own code paths (the models users train and load,
//! the AdamW optimizer, the triplet losses, the data loader), timed on the shapes of
//! `../shared/reference/bench_torch.py` so the figures sit beside PyTorch's. Prints one JSON
//! object per benchmark on stdout, with the same `bench` names and fields as `bench_torch.py`,
//! plus the forward/backward/optimizer split of the training steps.
//!
//! `cargo bench --bench suite [-- NAME...]`; names: `compact64-train`, `compact64-infer`,
//! `irv1-infer`, `irv1-train`, `batch-all`, `batch-hard`, `loader`. Environment: `RUNS` scales
//! the number of timed repetitions (default 1.0); `CANDLE_FACE_SHARED` for the loader's images
//! (else `../shared`; the loader benchmark generates images when neither exists).
//!
//! `scripts/compare-pytorch.sh` runs this and the PyTorch script in one go and prints the ratios.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_face::data::augment::Augment;
use candle_face::data::loader::{ImageCache, Loader};
use candle_face::data::ImageFolder;
use candle_face::distance::Distance;
use candle_face::image::preprocess::Preprocess;
use candle_face::loss::{Mining, TripletLoss, TripletTerm};
use candle_face::model::{Architecture, CompactCnnConfig, EmbeddingNet, InceptionResnetV1Config};
use candle_face::train::optim::{AdamW, AdamWConfig};
use candle_face::train::trainable_vars;
use candle_nn::{VarBuilder, VarMap};
use serde_json::json;

mod common;

use common::{median, runs, timed, Res};

fn compact64() -> Architecture {
    Architecture::CompactCnn(CompactCnnConfig::default())
}

fn irv1() -> Architecture {
    Architecture::InceptionResnetV1(InceptionResnetV1Config::default())
}

fn build(arch: &Architecture) -> Res<(VarMap, EmbeddingNet)> {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let net = EmbeddingNet::new(arch, vb)?;
    Ok((vm, net))
}

/// One training step as `candle-face train` runs it: forward in training mode, batch-hard
/// triplet loss (margin 0.2, euclidean), backward, AdamW; timed whole and by phase.
fn bench_train(name: &str, arch: &Architecture, people: usize, warmup: usize, n: usize) -> Res<()> {
    let (vm, net) = build(arch)?;
    let size = arch.image_size();
    let k = 4;
    let b = people * k;
    let x = Tensor::randn(0f32, 1.0, (b, 3, size, size), &Device::Cpu)?;
    let labels: Vec<u32> = (0..b as u32).map(|i| i / k as u32).collect();
    let labels = Tensor::new(labels.as_slice(), &Device::Cpu)?;
    let loss_fn = TripletLoss {
        mining: Mining::BatchHard,
        term: TripletTerm::Hinge { margin: 0.2 },
        distance: Distance::Euclidean,
    };
    let mut opt = AdamW::new(
        trainable_vars(&vm)?,
        AdamWConfig {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let (mut fwd, mut bwd, mut upd, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..warmup + n {
        let t0 = Instant::now();
        let e = net.forward_t(&x, true)?;
        let out = loss_fn.forward(&e, &labels)?;
        let _ = out.loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = out.loss.backward()?;
        let t2 = Instant::now();
        opt.step(&grads)?;
        let t3 = Instant::now();
        if i >= warmup {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            upd.push((t3 - t2).as_secs_f64());
            total.push((t3 - t0).as_secs_f64());
        }
    }
    let s = median(total);
    println!(
        "{}",
        json!({
            "bench": format!("{name}-train"), "impl": "candle-face", "batch": b, "input": size,
            "step_s": s, "images_per_s": b as f64 / s,
            "forward_s": median(fwd), "backward_s": median(bwd), "optimizer_s": median(upd),
        })
    );
    Ok(())
}

/// Inference in evaluation mode: batch-1 latency and batch-32 throughput.
fn bench_infer(name: &str, arch: &Architecture, n: usize) -> Res<()> {
    let (_vm, net) = build(arch)?;
    let size = arch.image_size();
    let x1 = Tensor::randn(0f32, 1.0, (1, 3, size, size), &Device::Cpu)?;
    let x32 = Tensor::randn(0f32, 1.0, (32, 3, size, size), &Device::Cpu)?;
    let lat = timed(3, n, || {
        net.forward_t(&x1, false)?.to_vec2::<f32>()?;
        Ok(())
    })?;
    let b32 = timed(2, (n / 4).max(3), || {
        net.forward_t(&x32, false)?.to_vec2::<f32>()?;
        Ok(())
    })?;
    println!(
        "{}",
        json!({
            "bench": format!("{name}-infer"), "impl": "candle-face", "input": size,
            "batch1_latency_ms": 1000.0 * lat, "batch32_images_per_s": 32.0 / b32,
        })
    );
    Ok(())
}

/// Triplet loss forward + backward on random unit embeddings (D = 128), K = 4 per person.
fn bench_loss(mining: Mining, sizes: &[usize]) -> Res<()> {
    let name = match mining {
        Mining::BatchAll => "batch-all",
        Mining::BatchHard => "batch-hard",
        Mining::SemiHard => "semi-hard",
    };
    for &b in sizes {
        let e = Tensor::randn(0f32, 1.0, (b, 128), &Device::Cpu)?;
        let e = e.broadcast_div(&e.sqr()?.sum_keepdim(1)?.sqrt()?)?;
        let var = candle_core::Var::from_tensor(&e)?;
        let labels: Vec<u32> = (0..b as u32).map(|i| i / 4).collect();
        let labels = Tensor::new(labels.as_slice(), &Device::Cpu)?;
        let loss_fn = TripletLoss {
            mining,
            term: TripletTerm::Hinge { margin: 0.2 },
            distance: Distance::Euclidean,
        };
        let s = timed(1, runs(if b >= 1024 { 3 } else { 10 }), || {
            let out = loss_fn.forward(var.as_tensor(), &labels)?;
            let g = out.loss.backward()?;
            let _ = g.get(var.as_tensor());
            Ok(())
        })?;
        println!(
            "{}",
            json!({"bench": name, "impl": "candle-face", "batch": b, "dim": 128, "fwd_bwd_ms": 1000.0 * s})
        );
    }
    Ok(())
}

fn shared_lfw() -> Option<PathBuf> {
    let base = std::env::var_os("CANDLE_FACE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let p = base.join("data/lfw/train");
    p.is_dir().then_some(p)
}

/// The data loader: cached decode of the dataset, then P×K batches with augmentation on the
/// loader thread (images/s of finished training batches), compact64 recipe; once with the
/// default augmentation and once adding ±8° rotation and 10% greyscale.
fn bench_loader() -> Res<()> {
    let tmp;
    let (root, source) = match shared_lfw() {
        Some(p) => (p, "shared/data/lfw/train"),
        None => {
            tmp = tempfile::tempdir().map_err(|e| candle_face::Error::Msg(e.to_string()))?;
            candle_face::synthetic::write_dataset(tmp.path(), 200, 8, 250, 1)?;
            (tmp.path().to_path_buf(), "generated 250×250 PNGs")
        }
    };
    let folder = ImageFolder::scan(&root)?;
    let pre = Preprocess {
        crop_fraction: 0.56,
        ..Preprocess::compact_default()
    };
    let t = Instant::now();
    let cache = ImageCache::build(&folder, &pre, candle_face::train::CACHE_MARGIN, None)?;
    let decode_s = t.elapsed().as_secs_f64();
    let decoded = cache.num_images();
    let cache = Arc::new(cache);
    // The default augmentation, and the default plus rotation and greyscale (the per-pixel
    // rotated sampler instead of the separable one).
    let strong = Augment {
        rotate: 8.0,
        grayscale: 0.1,
        ..Augment::default()
    };
    let mut rates = Vec::new();
    for augment in [Augment::default(), strong] {
        let mut loader = Loader::new(
            cache.clone(),
            pre.clone(),
            augment,
            16,
            4,
            7,
            0,
            Device::Cpu,
        )?;
        loader.next_batch()?;
        let n = runs(60);
        let t = Instant::now();
        for _ in 0..n {
            loader.next_batch()?;
        }
        rates.push((n * 64) as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        json!({
            "bench": "loader", "impl": "candle-face", "source": source,
            "decode_images_per_s": decoded as f64 / decode_s,
            "batch": 64, "images_per_s": rates[0],
            "rotate8_grey_images_per_s": rates[1],
        })
    );
    Ok(())
}

fn main() -> Res<()> {
    candle_face::tune_allocator();
    candle_face::pin_thread_count();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = [
        "compact64-train",
        "compact64-infer",
        "irv1-infer",
        "irv1-train",
        "batch-all",
        "batch-hard",
        "loader",
    ];
    let which: Vec<&str> = if args.is_empty() {
        all.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    eprintln!(
        "candle-face bench suite: {} threads",
        candle_core::utils::get_num_threads()
    );
    for w in which {
        match w {
            "compact64-train" => bench_train("compact64", &compact64(), 16, 3, runs(10))?,
            "compact64-infer" => bench_infer("compact64", &compact64(), runs(20))?,
            "irv1-infer" => bench_infer("irv1", &irv1(), runs(12))?,
            "irv1-train" => bench_train("irv1", &irv1(), 8, 1, runs(4))?,
            "batch-all" => bench_loss(Mining::BatchAll, &[64, 256, 1024])?,
            "batch-hard" => bench_loss(Mining::BatchHard, &[64, 256, 1024])?,
            "loader" => bench_loader()?,
            other => eprintln!("unknown benchmark {other:?} (known: {})", all.join(", ")),
        }
    }
    Ok(())
}
