//! Time of the ported dlib HOG face detector (`detect(img, 1)`) per photo, to compare with
//! dlib's own (`scripts/dlib_hog_ref.py --time N` prints dlib's figure):
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release --example hog_timing -- ../shared/data/lfw/train 5
//! ```
//!
//! Times the first 20 of every 20th photo under the folder (the reference script's sample),
//! `N` rounds (default 5), and prints milliseconds per photo.

use candle_face::detect::bundled_hog_detector;
use std::path::PathBuf;

fn main() -> candle_face::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "../shared/data/lfw/train".into()),
    );
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut paths = Vec::new();
    for person in std::fs::read_dir(&root).map_err(|e| candle_face::Error::io(&root, e))? {
        let dir = person.map_err(|e| candle_face::Error::io(&root, e))?.path();
        for f in std::fs::read_dir(&dir).map_err(|e| candle_face::Error::io(&dir, e))? {
            paths.push(f.map_err(|e| candle_face::Error::io(&dir, e))?.path());
        }
    }
    paths.sort();
    let images = paths
        .iter()
        .step_by(20)
        .take(20)
        .map(|p| candle_face::image::load_image(p))
        .collect::<candle_face::Result<Vec<_>>>()?;
    let det = bundled_hog_detector()?;
    let mut found = 0;
    for img in &images {
        found += det.detect(img, 1).len(); // warm-up
    }
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        for img in &images {
            std::hint::black_box(det.detect(img, 1));
        }
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / (rounds * images.len()) as f64;
    println!(
        "detect(img, 1): {ms:.1} ms per photo ({} photos, {found} faces, {} rayon threads)",
        images.len(),
        rayon::current_num_threads()
    );
    Ok(())
}
