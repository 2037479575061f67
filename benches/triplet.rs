//! Batch-all triplet loss, forward + backward: the chunked custom op (O(B²) memory) against the
//! naive formulation that materialises the (B, B, B) triplet tensor.
//!
//! `cargo bench --bench triplet`. The naive loss at B = 1024 needs about 84 GB (B³; 10.5 GB at 512) and is only run
//! when `CANDLE_FACE_BENCH_NAIVE_1024=1`.

use candle_core::{Device, Tensor, Var};
use candle_face::distance::{pairwise_distance, Distance};
use candle_face::loss::{batch_all_chunked, labels_to_vec, TripletTerm, DEFAULT_CHUNK};

#[path = "../tests/support/batch_all_naive.rs"]
mod batch_all_naive;
use batch_all_naive::batch_all_naive;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const D: usize = 128;
const PER_ID: u32 = 4;

fn batch(b: usize) -> (Var, Tensor) {
    let e = Tensor::randn(0f32, 1.0, (b, D), &Device::Cpu).expect("randn");
    let y: Vec<u32> = (0..b as u32).map(|i| i / PER_ID).collect();
    (
        Var::from_tensor(&e).expect("var"),
        Tensor::new(y, &Device::Cpu).expect("labels"),
    )
}

fn step(e: &Var, y: &Tensor, naive: bool) {
    let term = TripletTerm::Hinge { margin: 0.2 };
    let d = pairwise_distance(e.as_tensor(), Distance::Euclidean).expect("distance");
    let loss = if naive {
        batch_all_naive(&d, y, term).expect("naive").0
    } else {
        let yv = labels_to_vec(y).expect("labels");
        batch_all_chunked(&d, &yv, term, DEFAULT_CHUNK)
            .expect("chunked")
            .0
    };
    let grads = loss.backward().expect("backward");
    std::hint::black_box(grads.get(e.as_tensor()).expect("gradient"));
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_all_fwd_bwd_d128");
    g.sample_size(10);
    let big_naive = std::env::var("CANDLE_FACE_BENCH_NAIVE_1024").is_ok_and(|v| v == "1");
    for b in [64usize, 256, 512, 1024] {
        let (e, y) = batch(b);
        g.bench_with_input(BenchmarkId::new("chunked", b), &b, |bench, _| {
            bench.iter(|| step(&e, &y, false))
        });
        if b < 1024 || big_naive {
            g.bench_with_input(BenchmarkId::new("naive", b), &b, |bench, _| {
                bench.iter(|| step(&e, &y, true))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
