//! `candle-face enroll` and `identify`.

use super::model_arg::{DetectArgs, ModelArgs};
use anyhow::{bail, Result};
use candle_face::infer::Gallery;
use std::path::PathBuf;

/// Arguments of `enroll`.
#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    detect: DetectArgs,
    /// Folder of people to enroll: `DIR/<person>/<image>` (one or more images each).
    #[arg(long)]
    data: PathBuf,
    /// Output gallery file (safetensors).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Approximate index for fast search: `auto` (built from 100 000 enrolled faces on),
    /// `ivf` (always), `none` (exact search only).
    #[arg(long, default_value = "auto", value_parser = ["auto", "ivf", "none"])]
    index: String,
    /// Cells of the approximate index (default about 4√N).
    #[arg(long, value_name = "N")]
    nlist: Option<usize>,
}

/// Runs `enroll`.
pub fn run_enroll(a: EnrollArgs) -> Result<()> {
    let embedder = a.detect.apply(a.model.load()?)?;
    let folder = candle_face::data::ImageFolder::scan(&a.data)?;
    let mut gallery = Gallery::for_embedder(&embedder)?;
    let (mut skipped, mut faceless) = (0usize, 0usize);
    for person in &folder.people {
        let (emb, kept, failures) = match embedder.embed_images_lossy(&person.images) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("skipped person {}: {e}", person.name);
                skipped += person.images.len();
                continue;
            }
        };
        for f in &failures {
            eprintln!("skipped {f}");
            faceless += matches!(f, candle_face::Error::NoFace { .. }) as usize;
        }
        skipped += failures.len();
        let rows = emb.to_vec2::<f32>()?;
        for (row, _) in rows.iter().zip(kept) {
            gallery.add(&person.name, row)?;
        }
    }
    if gallery.is_empty() {
        bail!("{}: no image could be enrolled", a.data.display());
    }
    let build = match a.index.as_str() {
        "ivf" => true,
        "none" => false,
        _ => gallery.len() >= candle_face::infer::gallery::APPROXIMATE_FROM,
    };
    if build {
        let t = std::time::Instant::now();
        gallery.build_index(a.nlist)?;
        let idx = gallery.index().expect("just built");
        eprintln!(
            "indexed {} faces in {} cells ({:.1} s)",
            idx.len(),
            idx.nlist(),
            t.elapsed().as_secs_f64()
        );
    }
    gallery.save(&a.out)?;
    eprintln!(
        "enrolled {} people ({} images{}) into {}",
        gallery.people().len(),
        gallery.len(),
        if skipped > 0 {
            format!(", {skipped} skipped, {faceless} of them without a face")
        } else {
            String::new()
        },
        a.out.display()
    );
    Ok(())
}

/// Arguments of `identify`.
#[derive(Debug, clap::Args)]
pub struct IdentifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    detect: DetectArgs,
    /// Gallery written by `enroll` with the same model.
    #[arg(long, short = 'g')]
    gallery: PathBuf,
    /// Number of nearest people to list.
    #[arg(long, default_value_t = 1)]
    top_k: usize,
    /// Distance threshold beyond which the answer is "unknown" (default: the model's).
    #[arg(long)]
    threshold: Option<f32>,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Compare with every enrolled face even when the gallery has an approximate index.
    #[arg(long)]
    exact: bool,
    /// Cells of the approximate index to search (more: slower, closer to exact).
    #[arg(long, default_value_t = candle_face::infer::ivf::DEFAULT_NPROBE)]
    nprobe: usize,
    /// Query images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Runs `identify`.
pub fn run_identify(a: IdentifyArgs) -> Result<()> {
    let embedder = a.detect.apply(a.model.load()?)?;
    let gallery = Gallery::load(&a.gallery)?;
    gallery.check_model(&embedder)?;
    let Some(threshold) = a.threshold.or(embedder.config().threshold) else {
        bail!("the model has no calibrated threshold: pass --threshold");
    };
    let (emb, kept, failures) = embedder.embed_images_lossy(&a.images)?;
    for f in &failures {
        eprintln!("skipped {f}");
    }
    let rows = emb.to_vec2::<f32>()?;
    for (row, i) in rows.iter().zip(kept) {
        let r = if a.exact {
            gallery.identify_exact(row, a.top_k, threshold)?
        } else {
            gallery.identify_probing(row, a.top_k, threshold, a.nprobe)?
        };
        let path = a.images[i].display().to_string();
        if a.json {
            let v = serde_json::json!({
                "image": path,
                "identity": r.identity.as_deref().unwrap_or("unknown"),
                "known": r.identity.is_some(),
                "candidates": r.candidates,
                "threshold": r.threshold,
            });
            println!("{v}");
        } else {
            let who = r.identity.as_deref().unwrap_or("unknown");
            let list: Vec<String> = r
                .candidates
                .iter()
                .map(|c| format!("{} {:.4}", c.name, c.distance))
                .collect();
            println!("{path}: {who}  [{}]", list.join(", "));
        }
    }
    if !failures.is_empty() && rows.is_empty() {
        bail!("no query image could be used");
    }
    Ok(())
}
