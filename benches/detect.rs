//! MTCNN detection speed on CPU: `cargo bench --bench detect` (release). Prints one JSON line
//! with the median and mean milliseconds per image on `shared/fixtures/images/group_640x480.png`
//! (three faces). Uses `CANDLE_FACE_SHARED` or `../shared`; `BENCH_ITERS` sets the repetitions.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use candle_face::detect::Mtcnn;

/// glibc malloc returns big buffers to the kernel after every free; keep them (CANDLE-NOTES).
fn malloc_fix() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn main() {
    malloc_fix();
    candle_face::pin_thread_count();
    let shared = std::env::var_os("CANDLE_FACE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let f = shared.join("fixtures");
    let image_path = f.join("images/group_640x480.png");
    if !image_path.is_file() {
        eprintln!("skipping: shared/ not found (set CANDLE_FACE_SHARED)");
        return;
    }
    let mtcnn = Mtcnn::load_files(
        f.join("mtcnn_pnet.safetensors"),
        f.join("mtcnn_rnet.safetensors"),
        f.join("mtcnn_onet.safetensors"),
        &Device::Cpu,
    )
    .expect("load MTCNN weights");
    let img = image::open(&image_path).expect("open image").to_rgb8();
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let faces = mtcnn.detect(&img).expect("detect").len(); // warm-up
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let n = mtcnn.detect(&img).expect("detect").len();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(n, faces);
    }
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    println!(
        "{{\"bench\":\"mtcnn_detect\",\"image\":\"group_640x480.png\",\"device\":\"cpu\",\"threads\":{},\"iters\":{iters},\"faces\":{faces},\"ms_per_image_median\":{:.2},\"ms_per_image_mean\":{mean:.2},\"ms_min\":{:.2}}}",
        candle_core::utils::get_num_threads(),
        ms[ms.len() / 2],
        ms[0]
    );
}
