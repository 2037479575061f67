//! The options of a training run ([`TrainOptions`]) and their checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::fine_tune;
use super::optim::AdamWConfig;
use crate::data::augment::Augment;
use crate::image::preprocess::Preprocess;
use crate::loss::{IdLoss, Mining, TripletLoss};
use crate::model::{Architecture, ModelConfig};
use crate::{Error, Result};

/// What to do when the loss is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NanPolicy {
    /// Stop with an error; the last good checkpoint stays on disk.
    #[default]
    Stop,
    /// Skip the step (no update, BatchNorm statistics restored) and go on.
    Skip,
}

impl std::str::FromStr for NanPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stop" => Ok(NanPolicy::Stop),
            "skip" => Ok(NanPolicy::Skip),
            _ => Err(Error::InvalidArgument(format!(
                "unknown NaN policy {s:?} (expected stop or skip)"
            ))),
        }
    }
}

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Duration {
    /// Passes over the training images (as P×K batches).
    Epochs(f64),
    /// Optimizer steps.
    Steps(u64),
}

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// The labelled image folder.
    pub data: PathBuf,
    /// Output directory (model folder, checkpoints, metrics).
    pub out: PathBuf,
    /// Network to train.
    pub architecture: Architecture,
    /// Preprocessing recipe (stored in the model's config).
    pub preprocess: Preprocess,
    /// Training augmentation.
    pub augment: Augment,
    /// Loss and mining.
    pub loss: TripletLoss,
    /// People per batch (P).
    pub people_per_batch: usize,
    /// Images per person per batch (K).
    pub images_per_person: usize,
    /// Of the P groups of a batch, how many are one-image people (K augmented views of their
    /// one photo; see [`crate::data::sampler::PkSampler::with_singletons`]). 0 leaves one-image people out.
    pub singletons_per_batch: usize,
    /// How long to train.
    pub duration: Duration,
    /// Optimizer settings; `lr` is the peak learning rate.
    pub optimizer: AdamWConfig,
    /// Warm-up steps of the learning-rate schedule.
    pub warmup_steps: u64,
    /// Final learning rate as a fraction of the peak.
    pub final_lr_fraction: f64,
    /// Fraction of people held out for validation.
    pub val_fraction: f32,
    /// Maximum number of same-person validation pairs (as many different pairs are drawn).
    pub val_pairs: usize,
    /// Seed for the split, the sampler and augmentation.
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at every epoch end).
    pub checkpoint_every: u64,
    /// How many checkpoints to keep.
    pub keep_checkpoints: usize,
    /// Log a metrics line every this many steps.
    pub log_every: u64,
    /// Validate every this many epochs (0: only before and after training).
    pub validate_every_epochs: f64,
    /// Continue from the newest checkpoint in `out/checkpoints`.
    pub resume: bool,
    /// What to do when the loss is not finite.
    pub nan_policy: NanPolicy,
    /// Fine-tune: start from this model's weights (a [`crate::infer::ModelSource`] string: model
    /// folder, facenet-pytorch checkpoint, `hf:owner/name`, `default`). Its architecture and
    /// preprocessing replace [`architecture`](Self::architecture) and
    /// [`preprocess`](Self::preprocess).
    #[serde(default)]
    pub init: Option<String>,
    /// Parameter-name prefixes to keep fixed (e.g. `conv2d_`, `repeat_1`): they get no
    /// optimizer updates (their BatchNorm running statistics still follow the data). Each
    /// prefix must match at least one parameter.
    #[serde(default)]
    pub freeze: Vec<String>,
    /// Switch the mining strategy at a step: `(step, mining)`, e.g. semi-hard first, then
    /// batch-hard from step 1500.
    #[serde(default)]
    pub mining_switch: Option<(u64, Mining)>,
    /// An identity-classification loss added to the triplet loss ([`crate::loss::cosface`]):
    /// one weight vector per training person, trained with the network, not saved in the model.
    #[serde(default)]
    pub id_loss: Option<IdLoss>,
    /// With [`init`](Self::init): which of the learning rate, warm-up and frozen layers take
    /// the starting model's fine-tuning defaults ([`fine_tune::fine_tune_defaults`]) instead
    /// of the values here (the ones a caller did not choose). None by default.
    #[serde(default)]
    pub init_defaults: InitDefaults,
    /// With [`init`](Self::init): weight of a term that keeps each training image's embedding
    /// near the starting model's embedding of it (the mean squared Euclidean distance between
    /// the two; "learning without forgetting", Li & Hoiem 2016), so that a small fine-tuning
    /// set changes what it must without erasing what the model knew of other faces. 0: off.
    #[serde(default)]
    pub keep_init: f64,
}

/// Which settings [`TrainOptions::init_defaults`] fills in for a fine-tune.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitDefaults {
    /// The peak learning rate.
    pub lr: bool,
    /// The warm-up steps.
    pub warmup_steps: bool,
    /// The frozen parameter prefixes.
    pub freeze: bool,
    /// The weight of the term that keeps embeddings near the starting model's.
    pub keep_init: bool,
}

impl TrainOptions {
    /// Defaults for the compact CNN on `data`, writing to `out`.
    pub fn new(data: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            data: data.into(),
            out: out.into(),
            architecture: Architecture::CompactCnn(Default::default()),
            preprocess: Preprocess::compact_default(),
            augment: Augment::default(),
            loss: TripletLoss::default(),
            people_per_batch: 16,
            images_per_person: 4,
            singletons_per_batch: 0,
            duration: Duration::Epochs(10.0),
            optimizer: AdamWConfig::default(),
            warmup_steps: 100,
            final_lr_fraction: 0.01,
            val_fraction: 0.1,
            val_pairs: 500,
            seed: 42,
            checkpoint_every: 200,
            keep_checkpoints: 3,
            log_every: 10,
            validate_every_epochs: 1.0,
            resume: false,
            nan_policy: NanPolicy::Stop,
            init: None,
            freeze: Vec::new(),
            mining_switch: None,
            id_loss: None,
            init_defaults: InitDefaults::default(),
            keep_init: 0.0,
        }
    }

    /// The options a run starting from the model `init` (its config) uses: the architecture and
    /// preprocessing of that model (flip TTA kept when asked for here), and its fine-tuning
    /// defaults for what [`init_defaults`](Self::init_defaults) selects.
    pub(crate) fn for_init(&self, init: &ModelConfig) -> Self {
        let mut owned = self.clone();
        let d = fine_tune::fine_tune_defaults(&init.architecture);
        let want = self.init_defaults;
        if want.lr {
            owned.optimizer.lr = d.lr;
        }
        if want.warmup_steps {
            owned.warmup_steps = d.warmup_steps;
        }
        if want.freeze {
            owned.freeze = d.freeze;
        }
        if want.keep_init {
            owned.keep_init = d.keep_init;
        }
        owned.architecture = init.architecture.clone();
        let flip = owned.preprocess.flip_tta;
        owned.preprocess = init.preprocess.clone();
        owned.preprocess.flip_tta |= flip;
        owned
    }

    /// The part of the options that must not change when resuming.
    pub(crate) fn resume_key(&self) -> serde_json::Value {
        let mut key = serde_json::json!({
            "architecture": self.architecture,
            "preprocess": self.preprocess,
            "seed": self.seed,
            "people_per_batch": self.people_per_batch,
            "images_per_person": self.images_per_person,
            "val_fraction": self.val_fraction,
            "init": self.init,
            "freeze": self.freeze,
        });
        // Only when used, so checkpoints written before the option existed still resume.
        if self.singletons_per_batch > 0 {
            key["singletons_per_batch"] = self.singletons_per_batch.into();
        }
        if self.keep_init > 0.0 {
            key["keep_init"] = self.keep_init.into();
        }
        if let Some(id) = &self.id_loss {
            key["id_loss"] = serde_json::json!(id);
        }
        key
    }

    /// Checks the options before anything is read or written.
    pub(crate) fn validate(&self) -> Result<()> {
        self.loss.validate()?;
        if self.people_per_batch < 2 {
            return Err(Error::InvalidArgument(
                "--people must be at least 2 (triplets need two people)".into(),
            ));
        }
        if self.images_per_person < 2 {
            return Err(Error::InvalidArgument(
                "--images-per-person must be at least 2 (triplets need a positive)".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(Error::InvalidArgument(format!(
                "--val-fraction {} must be in [0, 1)",
                self.val_fraction
            )));
        }
        match self.duration {
            Duration::Epochs(e) if !(e > 0.0 && e.is_finite()) => {
                return Err(Error::InvalidArgument(format!(
                    "--epochs {e} must be positive"
                )))
            }
            Duration::Steps(0) => {
                return Err(Error::InvalidArgument("--steps must be positive".into()))
            }
            _ => {}
        }
        if !(self.keep_init >= 0.0 && self.keep_init.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "--keep-init {} must be a finite weight of 0 or more",
                self.keep_init
            )));
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "--lr {} must be positive",
                self.optimizer.lr
            )));
        }
        if let Some(id) = &self.id_loss {
            id.validate()?;
        }
        if self.preprocess.image_size as usize != self.architecture.image_size() {
            return Err(Error::InvalidArgument(format!(
                "preprocess image size {} differs from the architecture's input size {}",
                self.preprocess.image_size,
                self.architecture.image_size()
            )));
        }
        Ok(())
    }
}
