//! Data pipeline on the real faces in `shared/data` (skipped with a message when absent).
//!
//! The quick checks run with `cargo test --test data_shared`. The throughput measurement is
//! ignored by default; run it with
//! `cargo test --release --test data_shared -- --ignored --nocapture`.

mod common;

use common::shared_dir;

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use candle_face::data::{Augment, ImageCache, ImageFolder, Loader};
use candle_face::image::Preprocess;

#[test]
fn small_sets_match_readme_counts() {
    let Some(shared) = shared_dir() else { return };
    for (set, people, images) in [("dlib_johns", 5, 55), ("faceapi_bbt", 8, 40)] {
        let root = shared.join("data/small").join(set);
        if !root.is_dir() {
            eprintln!("skipping {set}: {} not found", root.display());
            continue;
        }
        let f = ImageFolder::scan(&root).unwrap();
        assert_eq!(f.people.len(), people, "{set}: {}", f.summary());
        assert_eq!(f.num_images(), images, "{set}: {}", f.summary());
        assert!(f.skipped.is_empty(), "{set}: {:?}", f.skipped);
        // Every image decodes (greyscale PNGs included) and the loader runs on them.
        let pre = Preprocess::compact_default();
        let cache = Arc::new(ImageCache::build(&f, &pre, 0.15, None).unwrap());
        assert!(cache.failures().is_empty(), "{set}: {:?}", cache.failures());
        assert_eq!(cache.num_images(), images);
        let mut loader =
            Loader::new(cache, pre, Augment::default(), 4, 4, 0, 0, Device::Cpu).unwrap();
        let b = loader.next_batch().unwrap();
        assert_eq!(b.images.dims(), &[16, 3, 64, 64]);
    }
}

/// CPU seconds (user + system) used by this process so far: throughput per CPU-second is a
/// fairer figure than wall time on a busy machine.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

#[test]
#[ignore = "throughput measurement on LFW train (9525 images); run in release with --ignored --nocapture"]
fn lfw_train_throughput() {
    let Some(shared) = shared_dir() else { return };
    let root = shared.join("data/lfw/train");
    if !root.is_dir() {
        eprintln!("skipping: {} not found", root.display());
        return;
    }
    let t = Instant::now();
    let f = ImageFolder::scan(&root).unwrap();
    eprintln!(
        "scan: {} in {:.2} s",
        f.summary(),
        t.elapsed().as_secs_f64()
    );

    let pre = Preprocess::compact_default();
    let (t, c) = (Instant::now(), cpu_seconds());
    let cache = ImageCache::build(&f, &pre, 0.15, None).unwrap();
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
    eprintln!(
        "cache build: {} images in {:.2} s = {:.0} images/s on {} threads, {:.0} images per CPU-second ({} failures)",
        cache.num_images(),
        secs,
        cache.num_images() as f64 / secs,
        rayon::current_num_threads(),
        cache.num_images() as f64 / cpu,
        cache.failures().len()
    );
    let cache = Arc::new(cache);
    let (p, k) = (16, 4);
    let mut loader = Loader::new(cache, pre, Augment::default(), p, k, 0, 0, Device::Cpu).unwrap();
    loader.next_batch().unwrap();
    let n = 300;
    let (t, c) = (Instant::now(), cpu_seconds());
    for _ in 0..n {
        loader.next_batch().unwrap();
    }
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
    eprintln!(
        "loader P={p} K={k} 64 px, augmented: {:.1} batches/s = {:.0} images/s, {:.0} images per CPU-second",
        n as f64 / secs,
        (n * p * k) as f64 / secs,
        (n * p * k) as f64 / cpu
    );
}
