//! Measures how LFW's deep-funneled images frame the face, for the `FaceCrop::lfw_deep_funneled`
//! recipe: runs the bundled MTCNN on the first image of up to N people of `DIR` (default
//! `../shared/data/lfw/train`) and prints the median face-box side and vertical centre offset.
//!
//! `cargo run --release --example lfw_framing -- [DIR] [N]`

use candle_face::detect::bundled_mtcnn;
use candle_face::image::load_image;
use std::path::PathBuf;

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "../shared/data/lfw/train".into()),
    );
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(300);
    let m = bundled_mtcnn(&candle_core::Device::Cpu)?;
    let mut people: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    people.sort();
    let (mut sides, mut shifts, mut none) = (Vec::new(), Vec::new(), 0);
    for person in people.iter().take(n) {
        let mut imgs: Vec<_> = std::fs::read_dir(person)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        imgs.sort();
        let Some(path) = imgs.first() else { continue };
        let img = load_image(path)?;
        let (cx, cy) = (img.width() as f32 / 2.0, img.height() as f32 / 2.0);
        // The face nearest the image centre is the labelled person.
        let face = m.detect(&img)?.into_iter().min_by(|a, b| {
            let d = |f: &candle_face::detect::Face| {
                ((f.bbox[0] + f.bbox[2]) / 2.0 - cx).abs()
                    + ((f.bbox[1] + f.bbox[3]) / 2.0 - cy).abs()
            };
            d(a).total_cmp(&d(b))
        });
        match face {
            Some(f) => {
                sides.push(f.width().max(f.height()));
                shifts.push((cy - (f.bbox[1] + f.bbox[3]) / 2.0) / f.height());
            }
            None => none += 1,
        }
    }
    if sides.is_empty() {
        anyhow::bail!("no faces found under {}", dir.display());
    }
    let side = median(sides.clone());
    println!(
        "{} images with a face, {none} without; median box side {side:.1} px; \
         box_scale (image side / box side) {:.3}; y_shift {:.4} box heights",
        sides.len(),
        250.0 / side,
        median(shifts)
    );
    Ok(())
}
