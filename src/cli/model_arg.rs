//! The `--model` argument: a model folder (later also `hf:owner/name` and the shipped default).

use anyhow::{bail, Result};
use candle_face::infer::Embedder;
use std::path::PathBuf;

/// Options shared by every command that loads a model.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Model folder (config.json + model.safetensors).
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: Option<PathBuf>,
}

impl ModelArgs {
    /// Loads the embedder for inference.
    pub fn load(&self) -> Result<Embedder> {
        let Some(dir) = &self.model else {
            bail!("no --model given (pass a model folder written by `candle-face train`)");
        };
        Ok(Embedder::load(dir)?)
    }
}

/// Face detection switches (`--detect` / `--no-detect`).
#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Run face detection and alignment before embedding (for raw photos).
    #[arg(long, conflicts_with = "no_detect")]
    pub detect: bool,
    /// Use the images as they are (pre-cropped faces): only the model's own preprocessing.
    #[arg(long)]
    pub no_detect: bool,
}

impl DetectArgs {
    /// Refuses `--detect` until a detector is wired in.
    pub fn check(&self) -> Result<()> {
        if self.detect {
            bail!("--detect: face detection is not available in this build; pass --no-detect with face crops");
        }
        Ok(())
    }
}
