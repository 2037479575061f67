//! The `--model` argument and the face-detection switches shared by the inference commands.

use anyhow::{Context, Result};
use candle_face::infer::{Embedder, LoadOptions, ModelSource};

/// Options shared by every command that loads a model.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// The model: `default` (dlib's face-recognition ResNet, built into candle-face; also used
    /// when --model is omitted), `compact` (the built-in model trained from scratch on LFW), a
    /// model folder (config.json + model.safetensors), a facenet-pytorch checkpoint
    /// (.pth/.pt/.safetensors), or hf:owner/name[@rev][/file] on the Hugging Face Hub.
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: Option<String>,
    /// Never use the network: Hub models must already be in the local cache (also
    /// CANDLE_FACE_OFFLINE=1 or HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

impl ModelArgs {
    /// The parsed model source.
    pub fn source(&self) -> Result<ModelSource> {
        Ok(self.model.as_deref().unwrap_or("default").parse()?)
    }

    /// Loading options (CPU, Hub settings from the environment and `--offline`).
    pub fn load_options(&self) -> LoadOptions {
        #[allow(unused_mut)]
        let mut opts = LoadOptions::default();
        #[cfg(feature = "hub")]
        {
            opts.hub.offline |= self.offline;
        }
        opts
    }

    /// Loads the embedder for inference.
    pub fn load(&self) -> Result<Embedder> {
        let source = self.source()?;
        source
            .load(&self.load_options())
            .with_context(|| format!("cannot load model {source}"))
    }
}

/// Face detection switches (`--detect` / `--no-detect`).
#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Detect the main face of each image (bundled MTCNN) and align it the way the model
    /// expects (its config.json `face_crop`). On by default for models that expect photos
    /// (the default model); needed for others only when the images are not face crops.
    #[arg(long, conflicts_with = "no_detect")]
    pub detect: bool,
    /// Use the images as they are: ready face crops (for the default model, 150×150 dlib face
    /// chips), only the model's own preprocessing.
    #[arg(long)]
    pub no_detect: bool,
    /// Which face of a photo with several to use when detecting: the largest, or the one
    /// nearest the image centre (photos centred on their subject).
    #[arg(
        long,
        value_enum,
        default_value = "largest",
        conflicts_with = "no_detect"
    )]
    pub pick: super::detect::PickArg,
}

impl DetectArgs {
    /// Whether detection runs for `embedder`: `--detect`, or the model expects photos and
    /// `--no-detect` was not given.
    pub fn enabled(&self, embedder: &Embedder) -> bool {
        self.detect || (!self.no_detect && embedder.config().detect_faces)
    }

    /// Turns detection on in `embedder` when [`enabled`](Self::enabled).
    pub fn apply(&self, embedder: Embedder) -> Result<Embedder> {
        let pick = self.pick.into();
        if !self.enabled(&embedder) {
            return Ok(embedder.without_detection());
        }
        // A model that detects by default already holds a finder: keep it when the pick agrees.
        if embedder.face_finder().is_some_and(|f| f.pick() == pick) {
            Ok(embedder)
        } else {
            Ok(embedder.with_detection_pick(pick)?)
        }
    }
}
