//! Training: P×K batches, online triplet mining, AdamW with warm-up and cosine decay, validation
//! on identity-disjoint pairs, atomic checkpoints and resuming.
//!
//! [`train`] runs a whole training job and reports what happens through a callback of
//! [`TrainEvent`]s, so the CLI can draw a progress bar and a library user can log however they
//! like. Output directory layout:
//! - `config.json`, `model.safetensors`: the finished model folder (written at the end);
//! - `checkpoints/step-XXXXXXXX.safetensors`: weights, optimizer moments and training state;
//! - `metrics.jsonl`: one JSON object per log interval and per validation.

pub mod checkpoint;
pub mod fine_tune;
pub mod optim;
pub mod schedule;
pub mod validate;

use crate::data::augment::Augment;
use crate::data::loader::{ImageCache, Loader};
use crate::data::preprocess::Preprocess;
use crate::data::sampler::PkSampler;
use crate::data::ImageFolder;
use crate::loss::{cosface_loss, IdLoss, Mining, TripletLoss};
use crate::model::{save_model, Architecture, EmbeddingNet, ModelConfig, TrainingSummary};
use crate::{Error, Result};
use candle_core::{DType, Device, ModuleT, Var};
use candle_nn::{VarBuilder, VarMap};
use checkpoint::TrainState;
use optim::{AdamW, AdamWConfig};
use schedule::LrSchedule;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use validate::{ValPairs, ValResult};

/// Name prefix of parameters that exist only for training (the identity classifier of
/// [`TrainOptions::id_loss`]): kept in checkpoints, left out of the model folder and of
/// `--init`.
pub const TRAINING_ONLY_PREFIX: &str = "training_only.";

/// Fraction of extra context cached around the crop for augmentation.
pub const CACHE_MARGIN: f32 = 0.15;

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
    /// one photo; see [`PkSampler::with_singletons`]). 0 leaves one-image people out.
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

    /// The part of the options that must not change when resuming.
    fn resume_key(&self) -> serde_json::Value {
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

    fn validate(&self) -> Result<()> {
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

/// What happens during training, in order.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// The dataset was scanned and split.
    Dataset {
        /// Human summary of the scan.
        summary: String,
        /// Training people and images.
        train_people: usize,
        /// Training images.
        train_images: usize,
        /// Validation people.
        val_people: usize,
        /// Validation pairs.
        val_pairs: usize,
        /// Notes (e.g. calibrating on training pairs).
        notes: Vec<String>,
    },
    /// Decoding images into the cache: `done` of `total`.
    Caching {
        /// Images decoded so far.
        done: usize,
        /// Images to decode.
        total: usize,
    },
    /// An image could not be used and was skipped.
    Skipped {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Training starts (or resumes) at `start_step` of `total_steps`.
    Start {
        /// First step to run.
        start_step: u64,
        /// Total steps.
        total_steps: u64,
        /// Steps per epoch.
        steps_per_epoch: u64,
        /// The checkpoint resumed from.
        resumed_from: Option<PathBuf>,
    },
    /// A step finished.
    Step {
        /// Steps completed.
        step: u64,
        /// Total steps.
        total_steps: u64,
        /// Loss of this step.
        loss: f32,
        /// Fraction of active triplets in this step.
        active_fraction: f32,
        /// Learning rate used.
        lr: f64,
        /// Recent throughput.
        images_per_s: f64,
    },
    /// A step was skipped because the loss was not finite.
    NonFiniteLoss {
        /// The step.
        step: u64,
    },
    /// Validation figures.
    Validation {
        /// Steps completed.
        step: u64,
        /// Epoch (fractional).
        epoch: f64,
        /// The figures.
        result: ValResult,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Steps completed.
        step: u64,
        /// The file.
        path: PathBuf,
    },
    /// A warning worth showing to the user.
    Warning(String),
    /// The model folder was written.
    Finished {
        /// The training summary stored in config.json.
        summary: Box<TrainingSummary>,
        /// The threshold stored in config.json.
        threshold: Option<f32>,
    },
}

/// The result of [`train`].
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The model config as written to `out/config.json`.
    pub config: ModelConfig,
    /// Steps completed.
    pub steps: u64,
}

struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// Opens `path`, dropping lines for steps after `keep_through` (left by a killed run).
    fn open(path: PathBuf, keep_through: Option<u64>) -> Result<Self> {
        if let Some(limit) = keep_through {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let kept: String = text
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                            .is_some_and(|s| s <= limit)
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                crate::fsutil::write_atomic(&path, kept.as_bytes())?;
            }
        } else if path.exists() {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(Self { path })
    }

    fn write(&self, value: serde_json::Value) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        writeln!(f, "{value}").map_err(|e| Error::io(&self.path, e))
    }
}

/// Copies the starting weights `tensors` into every variable of `varmap` (fine-tuning); a
/// missing tensor or a shape that differs is an error naming it and `source`.
pub fn init_varmap(
    varmap: &VarMap,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    source: &str,
) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Msg("variable map lock poisoned".into()))?;
    for (name, var) in data.iter() {
        if name.starts_with(TRAINING_ONLY_PREFIX) {
            continue;
        }
        let t = tensors.get(name).ok_or_else(|| {
            Error::weights(
                source,
                format!("has no tensor {name} for the model to start from"),
            )
        })?;
        if t.dims() != var.dims() {
            return Err(Error::weights(
                source,
                format!(
                    "tensor {name} has shape {:?}, the model needs {:?}",
                    t.dims(),
                    var.dims()
                ),
            ));
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

/// The trainable variables of `varmap` (BatchNorm running statistics excluded), with whether
/// weight decay applies (convolution and linear weights only).
pub fn trainable_vars(varmap: &VarMap) -> Result<Vec<(String, Var, bool)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Msg("variable map lock poisoned".into()))?;
    let mut vars: Vec<(String, Var, bool)> = data
        .iter()
        .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
        .map(|(n, v)| {
            // The identity classifier's rows are normalized in the loss: decay would only
            // shrink them and raise their effective learning rate.
            let decay = n.ends_with(".weight")
                && !n.contains(".bn.")
                && v.rank() > 1
                && !n.starts_with(TRAINING_ONLY_PREFIX);
            (n.clone(), v.clone(), decay)
        })
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

fn bn_stats(varmap: &VarMap) -> Result<Vec<(Var, candle_core::Tensor)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Msg("variable map lock poisoned".into()))?;
    let mut out = Vec::new();
    for (n, v) in data.iter() {
        if n.ends_with("running_mean") || n.ends_with("running_var") {
            out.push((v.clone(), v.as_tensor().copy()?));
        }
    }
    Ok(out)
}

/// Runs a training job described by `opts`, reporting progress through `on_event`.
pub fn train(opts: &TrainOptions, on_event: &mut dyn FnMut(TrainEvent)) -> Result<TrainOutcome> {
    opts.validate()?;
    let device = Device::Cpu;
    // Fine-tuning: the starting model dictates the architecture and preprocessing.
    let init = match &opts.init {
        Some(src) => {
            let source: crate::infer::ModelSource = src.parse()?;
            Some(source.read_weights(&crate::infer::LoadOptions::default())?)
        }
        None => None,
    };
    let mut owned = opts.clone();
    if let Some((cfg, _)) = &init {
        let d = fine_tune::fine_tune_defaults(&cfg.architecture);
        let want = opts.init_defaults;
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
        owned.architecture = cfg.architecture.clone();
        let flip = owned.preprocess.flip_tta;
        owned.preprocess = cfg.preprocess.clone();
        owned.preprocess.flip_tta |= flip;
    }
    let opts = &owned;
    let out = opts.out.as_path();
    let ckpt_dir = out.join("checkpoints");
    std::fs::create_dir_all(&ckpt_dir).map_err(|e| Error::io(&ckpt_dir, e))?;
    checkpoint::remove_stale_temporaries(out);
    checkpoint::remove_stale_temporaries(&ckpt_dir);

    // Resume or refuse to overwrite.
    let (resume, passed_over) = if opts.resume {
        checkpoint::latest_good_checkpoint(&ckpt_dir, &device)?
    } else {
        if !checkpoint::list_checkpoints(&ckpt_dir)?.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} already holds checkpoints: pass --resume to continue that run, or choose another --out",
                ckpt_dir.display()
            )));
        }
        (None, Vec::new())
    };
    for reason in passed_over {
        on_event(TrainEvent::Warning(format!(
            "passed over a damaged checkpoint: {reason}"
        )));
    }
    if opts.resume && resume.is_none() {
        on_event(TrainEvent::Warning(format!(
            "--resume: no checkpoint in {}, starting from scratch",
            ckpt_dir.display()
        )));
    }
    if let Some(c) = &resume {
        if c.state.options != opts.resume_key() {
            return Err(Error::InvalidArgument(format!(
                "{} was written by a run with different options ({}); resume with the same \
                 architecture, preprocessing, seed, batch shape and validation split",
                c.path.display(),
                c.state.options
            )));
        }
    }

    // Data.
    let folder = ImageFolder::scan(&opts.data)?;
    let split = folder.split(opts.val_fraction, opts.seed);
    let mut notes: Vec<String> = split.note.iter().cloned().collect();
    if let Some(src) = &opts.init {
        notes.push(format!("fine-tuned from {src}"));
    }
    if !opts.freeze.is_empty() {
        notes.push(format!("frozen parameters: {}", opts.freeze.join(", ")));
    }
    if let Some((at, mining)) = opts.mining_switch {
        notes.push(format!(
            "mining: {} until step {at}, {mining} from then on",
            opts.loss.mining
        ));
    }
    if opts.augment != Augment::default() {
        let a = &opts.augment;
        notes.push(if *a == Augment::none() {
            "no augmentation".to_string()
        } else {
            format!(
                "augmentation: flip {}, scale ±{}, shift ±{}, brightness ±{}, contrast ±{}, rotation ±{}°, greyscale p={}",
                a.flip, a.scale_jitter, a.translate_jitter, a.brightness, a.contrast, a.rotate, a.grayscale
            )
        });
    }
    if let Some(id) = &opts.id_loss {
        notes.push(format!(
            "identity loss: CosFace over the training people with {}+ images, scale {}, margin {}, weight {}",
            id.min_images, id.scale, id.margin, id.weight
        ));
    }
    if opts.singletons_per_batch > 0 {
        notes.push(format!(
            "{} of the {} people of each batch have a single image (augmented views of it)",
            opts.singletons_per_batch, opts.people_per_batch
        ));
    }
    let mut caching = |done: usize, total: usize| on_event(TrainEvent::Caching { done, total });
    let train_cache = build_cache(&split.train, &opts.preprocess, &mut caching)?;
    let val_cache = if split.val.people.is_empty() {
        None
    } else {
        Some(build_cache(&split.val, &opts.preprocess, &mut caching)?)
    };
    for (path, reason) in train_cache
        .failures()
        .iter()
        .chain(val_cache.iter().flat_map(|c| c.failures().iter()))
    {
        on_event(TrainEvent::Skipped {
            path: path.clone(),
            reason: reason.clone(),
        });
    }
    let bad = train_cache.failures().len() + val_cache.as_ref().map_or(0, |c| c.failures().len());
    if bad > 0 {
        notes.push(format!(
            "skipped {bad} of {} files that could not be decoded",
            folder.num_images()
        ));
    }
    let train_cache = Arc::new(train_cache);
    let (val_pairs, calibrate_on_train) = match &val_cache {
        Some(c) => {
            let p = ValPairs::generate(&c.images_per_person(), opts.val_pairs, opts.seed ^ 0x5eed);
            if p.usable() {
                (p, false)
            } else {
                (ValPairs::default(), true)
            }
        }
        None => (ValPairs::default(), true),
    };
    let train_pairs = if calibrate_on_train {
        let p = ValPairs::generate(
            &train_cache.images_per_person(),
            opts.val_pairs,
            opts.seed ^ 0x7a1,
        );
        if split.note.is_none() {
            notes.push(
                "too few validation people with two or more images: the threshold is calibrated on training pairs (optimistic)".into(),
            );
        }
        p
    } else {
        ValPairs::default()
    };
    let (score_cache, score_pairs): (&ImageCache, &ValPairs) =
        match (&val_cache, calibrate_on_train) {
            (Some(c), false) => (c, &val_pairs),
            _ => (&train_cache, &train_pairs),
        };
    let train_images: usize = train_cache.images_per_person().iter().sum();
    let train_people = train_cache.num_people();
    let val_people = val_cache.as_ref().map_or(0, |c| c.num_people());
    on_event(TrainEvent::Dataset {
        summary: folder.summary(),
        train_people,
        train_images,
        val_people,
        val_pairs: score_pairs.len(),
        notes: notes.clone(),
    });

    // Model and optimizer.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let net = EmbeddingNet::new(&opts.architecture, vb.clone())?;
    // The starting model, fixed, for `keep_init`.
    let reference = match &init {
        Some((_, tensors)) if opts.keep_init > 0.0 => {
            let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &device);
            Some(EmbeddingNet::new(&opts.architecture, vb)?)
        }
        _ => None,
    };
    // Identity classes: the training people with enough images, numbered in label order.
    let id_classes: Vec<Option<u32>> = match &opts.id_loss {
        Some(id) => {
            let mut next = 0u32;
            train_cache
                .images_per_person()
                .iter()
                .map(|&n| {
                    (n >= id.min_images).then(|| {
                        next += 1;
                        next - 1
                    })
                })
                .collect()
        }
        None => Vec::new(),
    };
    let n_classes = id_classes.iter().flatten().count();
    let id_head = match &opts.id_loss {
        Some(id) => {
            if n_classes < 2 {
                return Err(Error::InvalidArgument(format!(
                    "--id-loss: {n_classes} training people have {} or more images; the \
                     identity loss needs at least two",
                    id.min_images
                )));
            }
            Some(
                vb.pp(TRAINING_ONLY_PREFIX.trim_end_matches('.'))
                    .pp("id_head")
                    .get_with_hints(
                        (n_classes, opts.architecture.embedding_dim()),
                        "weight",
                        candle_nn::Init::Randn {
                            mean: 0.0,
                            stdev: 1.0,
                        },
                    )?,
            )
        }
        None => None,
    };
    if let (Some((_, tensors)), None) = (&init, &resume) {
        init_varmap(&varmap, tensors, opts.init.as_deref().unwrap_or_default())?;
    }
    let mut trainable = trainable_vars(&varmap)?;
    for prefix in &opts.freeze {
        if !trainable
            .iter()
            .any(|(n, _, _)| n.starts_with(prefix.as_str()))
        {
            return Err(Error::InvalidArgument(format!(
                "--freeze {prefix}: no parameter of the {} model starts with it",
                opts.architecture.name()
            )));
        }
    }
    trainable.retain(|(n, _, _)| !opts.freeze.iter().any(|p| n.starts_with(p.as_str())));
    if trainable.is_empty() {
        return Err(Error::InvalidArgument(
            "--freeze leaves no parameter to train".into(),
        ));
    }
    let mut opt = AdamW::new(trainable, opts.optimizer)?;
    let mut state = TrainState {
        options: opts.resume_key(),
        ..Default::default()
    };
    let mut resumed_from = None;
    if let Some(c) = &resume {
        checkpoint::restore_model(c, &varmap)?;
        opt.load_state(&c.optimizer, c.state.step)
            .map_err(|e| Error::weights(&c.path, e))?;
        state = c.state.clone();
        resumed_from = Some(c.path.clone());
    }

    let sampler = PkSampler::new(
        &train_cache.images_per_person(),
        opts.people_per_batch,
        opts.images_per_person,
        opts.seed,
    )?
    .with_singletons(opts.singletons_per_batch)?;
    let batch_size = sampler.p() * opts.images_per_person;
    let steps_per_epoch = sampler.batches_per_epoch().max(1) as u64;
    let total_steps = match opts.duration {
        Duration::Steps(s) => s,
        Duration::Epochs(e) => ((e * steps_per_epoch as f64).ceil() as u64).max(1),
    };
    let schedule = LrSchedule {
        base_lr: opts.optimizer.lr,
        warmup_steps: opts.warmup_steps.min(total_steps / 5),
        total_steps,
        final_fraction: opts.final_lr_fraction,
    };
    let metrics = MetricsLog::open(
        out.join("metrics.jsonl"),
        resume.as_ref().map(|c| c.state.step),
    )?;
    let eval_batch = 64;
    let validate_now = |net: &EmbeddingNet| -> Result<Option<ValResult>> {
        if !score_pairs.usable() {
            return Ok(None);
        }
        let d = validate::pair_distances(
            net,
            score_cache,
            &opts.preprocess,
            score_pairs,
            opts.loss.distance,
            &device,
            eval_batch,
        )?;
        Ok(Some(validate::score(&d, score_pairs)?))
    };

    // Untrained baseline.
    if state.step == 0 && state.val_accuracy_before.is_none() {
        if let Some(r) = validate_now(&net)? {
            state.val_accuracy_before = Some(r.accuracy);
            state.val_auc_before = Some(r.auc);
            metrics.write(serde_json::json!({
                "step": 0, "epoch": 0.0, "val_accuracy": r.accuracy, "val_auc": r.auc,
                "val_threshold": r.threshold, "val_pairs": r.pairs, "untrained": true,
            }))?;
            on_event(TrainEvent::Validation {
                step: 0,
                epoch: 0.0,
                result: r,
            });
        }
    }

    on_event(TrainEvent::Start {
        start_step: state.step,
        total_steps,
        steps_per_epoch,
        resumed_from,
    });

    let mut loader = Loader::from_sampler(
        train_cache.clone(),
        opts.preprocess.clone(),
        opts.augment.clone(),
        sampler.clone(),
        opts.seed,
        state.step,
        device.clone(),
    )?;
    let val_every_steps = if opts.validate_every_epochs > 0.0 {
        ((opts.validate_every_epochs * steps_per_epoch as f64).round() as u64).max(1)
    } else {
        u64::MAX
    };
    let run_start = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut window_start = Instant::now();
    let mut window_images = 0u64;
    let mut last_val: Option<ValResult> = None;
    let (mut loss_sum, mut active_sum, mut n_logged) = (0f64, 0f64, 0u64);

    while state.step < total_steps {
        let lr = schedule.lr(state.step);
        opt.set_lr(lr);
        let batch = loader.next_batch()?;
        let saved_bn = if opts.nan_policy == NanPolicy::Skip {
            Some(bn_stats(&varmap)?)
        } else {
            None
        };
        let emb = net.forward_t(&batch.images, true)?;
        let loss_fn = match opts.mining_switch {
            Some((at, mining)) if state.step >= at => opts.loss.with_mining(mining),
            _ => opts.loss,
        };
        let mut out_loss = loss_fn.forward(&emb, &batch.labels)?;
        if let Some(reference) = &reference {
            let before = reference.forward_t(&batch.images, false)?.detach();
            let drift = (&emb - before)?.sqr()?.sum(1)?.mean(0)?;
            out_loss.loss = (out_loss.loss + (drift * opts.keep_init)?)?;
        }
        if let (Some(id), Some(head)) = (&opts.id_loss, &id_head) {
            let (rows, classes): (Vec<u32>, Vec<u32>) = batch
                .labels
                .to_vec1::<u32>()?
                .iter()
                .enumerate()
                .filter_map(|(i, &l)| id_classes[l as usize].map(|c| (i as u32, c)))
                .unzip();
            if !rows.is_empty() {
                let n = rows.len();
                let emb = emb.index_select(&candle_core::Tensor::from_vec(rows, n, &device)?, 0)?;
                let classes = candle_core::Tensor::from_vec(classes, n, &device)?;
                let ce = cosface_loss(&emb, head, &classes, id.scale, id.margin)?;
                out_loss.loss = (out_loss.loss + (ce * id.weight)?)?;
            }
        }
        let loss_value = out_loss.loss.to_scalar::<f32>()?;
        if !loss_value.is_finite() {
            match opts.nan_policy {
                NanPolicy::Stop => {
                    return Err(Error::Msg(format!(
                        "the loss became {loss_value} at step {}; stopping. The last good checkpoint is in {} \
                         (lower --lr, or pass --nan-policy skip)",
                        state.step + 1,
                        ckpt_dir.display()
                    )));
                }
                NanPolicy::Skip => {
                    if let Some(saved) = saved_bn {
                        for (var, t) in saved {
                            var.set(&t)?;
                        }
                    }
                    state.step += 1;
                    state.skipped_steps += 1;
                    // Keep the optimizer's step count in line with the training step.
                    opt.skip_step();
                    on_event(TrainEvent::NonFiniteLoss { step: state.step });
                    continue;
                }
            }
        }
        let grads = out_loss.loss.backward()?;
        opt.step(&grads)?;
        state.step += 1;
        state.images_seen += batch_size as u64;
        window_images += batch_size as u64;
        loss_sum += loss_value as f64;
        active_sum += out_loss.stats.active_fraction as f64;
        n_logged += 1;
        let window = window_start.elapsed().as_secs_f64();
        let images_per_s = if window > 0.0 {
            window_images as f64 / window
        } else {
            0.0
        };
        on_event(TrainEvent::Step {
            step: state.step,
            total_steps,
            loss: loss_value,
            active_fraction: out_loss.stats.active_fraction,
            lr,
            images_per_s,
        });
        let epoch = state.step as f64 / steps_per_epoch as f64;
        state.elapsed_s = elapsed_before + run_start.elapsed().as_secs_f64();
        if state.step.is_multiple_of(opts.log_every.max(1)) || state.step == total_steps {
            metrics.write(serde_json::json!({
                "step": state.step, "epoch": epoch,
                "loss": loss_sum / n_logged as f64,
                "active_fraction": active_sum / n_logged as f64,
                "lr": lr, "images_per_s": images_per_s,
                "elapsed_s": state.elapsed_s,
            }))?;
            loss_sum = 0.0;
            active_sum = 0.0;
            n_logged = 0;
            window_start = Instant::now();
            window_images = 0;
        }
        let epoch_end = state.step.is_multiple_of(steps_per_epoch);
        if state.step.is_multiple_of(val_every_steps) && state.step < total_steps {
            if let Some(r) = validate_now(&net)? {
                metrics.write(serde_json::json!({
                    "step": state.step, "epoch": epoch, "val_accuracy": r.accuracy,
                    "val_auc": r.auc, "val_threshold": r.threshold, "val_pairs": r.pairs,
                }))?;
                on_event(TrainEvent::Validation {
                    step: state.step,
                    epoch,
                    result: r,
                });
                last_val = Some(r);
            }
        }
        if state.step.is_multiple_of(opts.checkpoint_every.max(1))
            || epoch_end
            || state.step == total_steps
        {
            let path = checkpoint::save_checkpoint(
                &ckpt_dir,
                &varmap,
                &opt,
                &state,
                opts.keep_checkpoints.max(1),
            )?;
            on_event(TrainEvent::Checkpoint {
                step: state.step,
                path,
            });
        }
    }
    drop(loader);

    // Final validation and calibration.
    let final_val = validate_now(&net)?;
    if let Some(r) = final_val {
        if last_val.map(|l| l != r).unwrap_or(true) {
            metrics.write(serde_json::json!({
                "step": state.step, "epoch": state.step as f64 / steps_per_epoch as f64,
                "val_accuracy": r.accuracy, "val_auc": r.auc, "val_threshold": r.threshold,
                "val_pairs": r.pairs, "final": true,
            }))?;
            on_event(TrainEvent::Validation {
                step: state.step,
                epoch: state.step as f64 / steps_per_epoch as f64,
                result: r,
            });
        }
    }
    let mut cfg = ModelConfig::new(opts.architecture.clone(), opts.preprocess.clone());
    cfg.distance = opts.loss.distance;
    // A fine-tuned model reads its input as the model it started from did.
    if let Some((init_cfg, _)) = &init {
        cfg.face_crop = init_cfg.face_crop.clone();
        cfg.detect_faces = init_cfg.detect_faces;
    }
    if let Some(r) = final_val {
        let source = if calibrate_on_train {
            format!(
                "train: best accuracy on {} training pairs (no validation people)",
                r.pairs
            )
        } else {
            format!("train: best accuracy on {} validation pairs", r.pairs)
        };
        cfg.set_threshold(r.threshold, source);
    } else {
        notes.push("no pairs to calibrate a threshold on: pass --threshold to verify".into());
    }
    let wall = state.elapsed_s;
    let summary = TrainingSummary {
        data: opts.data.display().to_string(),
        train_people,
        train_images,
        val_people,
        val_pairs: score_pairs.len(),
        calibrated_on_train: calibrate_on_train,
        steps: state.step,
        epochs: state.step as f64 / steps_per_epoch as f64,
        loss: opts.loss.describe(),
        val_accuracy_before: state.val_accuracy_before,
        val_accuracy: final_val.map(|r| r.accuracy),
        val_auc: final_val.map(|r| r.auc),
        wall_time_s: wall,
        images_per_s: if wall > 0.0 {
            state.images_seen as f64 / wall
        } else {
            0.0
        },
        notes,
    };
    cfg.training = Some(summary.clone());
    save_model(out, &cfg, &varmap)?;
    on_event(TrainEvent::Finished {
        summary: Box::new(summary),
        threshold: cfg.threshold,
    });
    Ok(TrainOutcome {
        config: cfg,
        steps: state.step,
    })
}

fn build_cache(
    folder: &ImageFolder,
    pre: &Preprocess,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ImageCache> {
    let total = folder.num_images();
    progress(0, total);
    let cache = ImageCache::build(folder, pre, CACHE_MARGIN, None)?;
    progress(total, total);
    Ok(cache)
}
