//! `candle-face prepare`: a labelled folder of photos → the same folder of face crops.

use anyhow::{Context, Result};
use candle_face::data::{prepare_folder, PrepareOptions};
use candle_face::detect::FaceFinder;
use std::path::PathBuf;

use super::detect::{load_detector, CropArg, PickArg};

/// Arguments of `prepare`.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// Labelled photos, laid out as `<data>/<person>/<image>`.
    #[arg(long)]
    data: PathBuf,
    /// Where the crops go: `<out>/<person>/<image stem>.png` (created; must not lie inside
    /// --data).
    #[arg(long)]
    out: PathBuf,
    /// Crop recipe: `dlib` (dlib's aligned 150×150 chip) is what the default model reads, so
    /// it is the one to fine-tune it on (`train --init default`); `lfw` / `lfw-aligned` frame
    /// faces like LFW's images (the compact model).
    #[arg(long, value_enum, default_value = "dlib")]
    crop: CropArg,
    /// Which face to crop from photos with several: the largest (as `--detect` does at
    /// inference) or the one nearest the image centre (for sets centred on the labelled person,
    /// like LFW).
    #[arg(long, value_enum, default_value = "largest")]
    pick: PickArg,
    /// Smallest face side in pixels to look for.
    #[arg(long, default_value_t = 20.0)]
    min_face_size: f64,
    /// MTCNN folder (pnet/rnet/onet.safetensors) instead of the bundled weights.
    #[arg(long)]
    mtcnn: Option<PathBuf>,
    /// Write crops that already exist again (by default they are kept, so an interrupted run
    /// continues).
    #[arg(long)]
    overwrite: bool,
    /// List every skipped image (by default the first ten of each kind).
    #[arg(long)]
    verbose: bool,
}

/// Runs `prepare`: prints a summary and the skipped images; fails only when the source folder
/// cannot be used or no crop exists afterwards.
pub fn run(a: PrepareArgs) -> Result<()> {
    let m = load_detector(a.mtcnn.as_deref(), a.min_face_size)?;
    let finder = FaceFinder::new(m, a.crop.recipe())?.with_pick(a.pick.into());
    let opts = PrepareOptions {
        overwrite: a.overwrite,
        progress: Some(|done, total| {
            if done % 500 == 0 || done == total {
                eprintln!("{done}/{total} images");
            }
        }),
    };
    let r = prepare_folder(&a.data, &a.out, &finder, &opts)
        .with_context(|| format!("cannot prepare {}", a.data.display()))?;
    let limit = if a.verbose { usize::MAX } else { 10 };
    for p in r.no_face.iter().take(limit) {
        eprintln!("skipped: {}: no face found", p.display());
    }
    for (p, why) in r.failed.iter().chain(&r.unreadable).take(limit) {
        eprintln!("skipped: {}: {why}", p.display());
    }
    println!(
        "{} people, {} images: {} crops written, {} kept, {} without a face, {} unreadable → {}",
        r.people,
        r.images,
        r.written,
        r.kept,
        r.no_face.len(),
        r.failed.len() + r.unreadable.len(),
        a.out.display()
    );
    if r.written + r.kept == 0 {
        anyhow::bail!("no face crop could be made from {}", a.data.display());
    }
    Ok(())
}
