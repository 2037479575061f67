//! InceptionResnetV1 CPU inference benchmark, shaped like `shared/reference/bench_torch.py`'s
//! `bench_infer("irv1")`: batch-1 latency (median of 20 after 3 warm-ups) and batch-32
//! throughput (median of 5 after 2 warm-ups), weights filled by the closed-form rule.
//! Prints one JSON line. Run with `cargo bench --bench irv1`.

mod common;

use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_face::convert::facenet::expected_tensors;
use candle_face::model::{InceptionResnetV1, InceptionResnetV1Config};
use candle_nn::VarBuilder;
use common::fill::{fill_state_dict, fill_tensor};

fn median_secs(mut f: impl FnMut(), warmup: usize, runs: usize) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut ts: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    ts[runs / 2]
}

fn main() -> candle_core::Result<()> {
    // glibc's mmap threshold makes every large activation an mmap/munmap pair (see
    // shared/CANDLE-NOTES.md); keep freed memory in the heap instead.
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
    let dev = Device::Cpu;
    let cfg = InceptionResnetV1Config::default();
    let specs = expected_tensors(&cfg).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let vb = VarBuilder::from_tensors(fill_state_dict(&specs, &dev)?, DType::F32, &dev);
    let model =
        InceptionResnetV1::new(&cfg, vb).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let s = cfg.image_size;
    let input = |n: usize| {
        Tensor::from_vec(
            fill_tensor("bench.input", &[n, 3, s, s], false),
            (n, 3, s, s),
            &dev,
        )
    };
    let x1 = input(1)?;
    let x32 = input(32)?;
    let run = |x: &Tensor| {
        model.forward_t(x, false).expect("forward");
    };
    let b1 = median_secs(|| run(&x1), 3, 20);
    let b32 = median_secs(|| run(&x32), 2, 5);
    println!(
        "{{\"bench\": \"irv1-infer\", \"input\": {s}, \"threads\": {}, \"batch1_latency_ms\": {:.2}, \"batch32_images_per_s\": {:.2}}}",
        candle_core::utils::get_num_threads(),
        1000.0 * b1,
        32.0 / b32
    );
    Ok(())
}
