//! `candle-face embed`.

use super::model_arg::{DetectArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Arguments of `embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    detect: DetectArgs,
    /// Output safetensors file: tensor `embeddings` (N×D f32), metadata `paths` (JSON array).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Images, or folders whose images (recursively, sorted) are embedded.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).with_context(|| format!("reading {}", p.display()))?;
            found.sort();
            if found.is_empty() {
                bail!("{}: no images in this folder", p.display());
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if candle_face::data::image_folder::has_image_extension(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Runs `embed`.
pub fn run(a: EmbedArgs) -> Result<()> {
    let embedder = a.detect.apply(a.model.load()?)?;
    let paths = expand(&a.inputs)?;
    let (emb, kept, failures) = embedder.embed_images_lossy(&paths)?;
    for f in &failures {
        eprintln!("skipped {f}");
    }
    if !failures.is_empty() {
        let faceless = failures
            .iter()
            .filter(|e| matches!(e, candle_face::Error::NoFace { .. }))
            .count();
        eprintln!(
            "skipped {} of {} files ({faceless} without a face)",
            failures.len(),
            paths.len()
        );
    }
    let names: Vec<String> = kept
        .iter()
        .map(|&i| paths[i].display().to_string())
        .collect();
    candle_face::infer::write_embeddings(&a.out, &emb, &names)?;
    eprintln!(
        "wrote {} embeddings of dimension {} to {}",
        names.len(),
        embedder.embedding_dim(),
        a.out.display()
    );
    Ok(())
}
