//! `candle-face verify`.

use super::model_arg::{DetectArgs, ModelArgs};
use anyhow::Result;
use candle_face::infer::Verifier;
use std::path::PathBuf;

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    detect: DetectArgs,
    /// Decision threshold on the distance (default: the model's calibrated threshold).
    #[arg(long)]
    threshold: Option<f32>,
    /// Print only `{"distance":..,"threshold":..,"same":..}` on stdout.
    #[arg(long)]
    json: bool,
    /// First image.
    image1: PathBuf,
    /// Second image.
    image2: PathBuf,
}

/// Runs `verify`.
pub fn run(a: VerifyArgs) -> Result<()> {
    let verifier = Verifier::new(a.detect.apply(a.model.load()?)?, a.threshold)?;
    let v = verifier.verify_paths(&a.image1, &a.image2)?;
    if a.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "distance {:.4}  threshold {:.4}  {}",
            v.distance,
            v.threshold,
            if v.same { "SAME" } else { "DIFFERENT" }
        );
    }
    Ok(())
}
