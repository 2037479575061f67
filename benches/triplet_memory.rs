//! Peak extra heap memory and time of one batch-all forward + backward, chunked vs naive, measured
//! with a counting global allocator. Prints one JSON line per measurement.
//!
//! `cargo bench --bench triplet_memory` (sizes: `CANDLE_FACE_BENCH_SIZES=64,256,512,1024`; the
//! naive loss is skipped above `CANDLE_FACE_BENCH_NAIVE_MAX`, default 512: it took 10.5 GB at 512 and
//! grows as B³, so about 84 GB at 1024).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_face::distance::{pairwise_distance, Distance};
use candle_face::loss::{batch_all_chunked, labels_to_vec, TripletTerm, DEFAULT_CHUNK};

#[path = "../tests/support/batch_all_naive.rs"]
mod batch_all_naive;
use batch_all_naive::batch_all_naive;

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const D: usize = 128;

fn main() {
    let sizes: Vec<usize> = std::env::var("CANDLE_FACE_BENCH_SIZES")
        .unwrap_or_else(|_| "64,256,512,1024".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let naive_max: usize = std::env::var("CANDLE_FACE_BENCH_NAIVE_MAX")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let term = TripletTerm::Hinge { margin: 0.2 };
    for b in sizes {
        let e = Tensor::randn(0f32, 1.0, (b, D), &Device::Cpu).expect("randn");
        let e = Var::from_tensor(&e).expect("var");
        let y: Vec<u32> = (0..b as u32).map(|i| i / 4).collect();
        let y = Tensor::new(y, &Device::Cpu).expect("labels");
        for naive in [false, true] {
            if naive && b > naive_max {
                println!(
                    "{{\"bench\":\"batch_all_fwd_bwd\",\"impl\":\"naive\",\"b\":{b},\"d\":{D},\"skipped\":\"b > CANDLE_FACE_BENCH_NAIVE_MAX={naive_max}\"}}"
                );
                continue;
            }
            let mut best_ms = f64::INFINITY;
            let mut peak_extra = 0usize;
            let mut loss_value = 0f32;
            let reps = if b <= 256 { 5 } else { 2 };
            for _ in 0..reps {
                let base = LIVE.load(Ordering::Relaxed);
                PEAK.store(base, Ordering::Relaxed);
                let t0 = Instant::now();
                let d = pairwise_distance(e.as_tensor(), Distance::Euclidean).expect("distance");
                let loss = if naive {
                    batch_all_naive(&d, &y, term).expect("naive").0
                } else {
                    let yv = labels_to_vec(&y).expect("labels");
                    batch_all_chunked(&d, &yv, term, DEFAULT_CHUNK)
                        .expect("chunked")
                        .0
                };
                let grads = loss.backward().expect("backward");
                let g = grads.get(e.as_tensor()).expect("gradient");
                std::hint::black_box(g);
                best_ms = best_ms.min(t0.elapsed().as_secs_f64() * 1e3);
                peak_extra = peak_extra.max(PEAK.load(Ordering::Relaxed) - base);
                loss_value = loss.to_scalar::<f32>().expect("scalar");
            }
            println!(
                "{{\"bench\":\"batch_all_fwd_bwd\",\"impl\":\"{}\",\"b\":{b},\"d\":{D},\"best_ms\":{best_ms:.2},\"peak_extra_bytes\":{peak_extra},\"peak_extra_mb\":{:.2},\"loss\":{loss_value}}}",
                if naive { "naive" } else { "chunked" },
                peak_extra as f64 / 1e6
            );
        }
    }
}
