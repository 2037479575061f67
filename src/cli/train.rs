//! `candle-face train`.

use anyhow::{bail, Result};
use candle_face::data::augment::Augment;
use candle_face::distance::Distance;
use candle_face::image::preprocess::Preprocess;
use candle_face::loss::{Mining, TripletLoss, TripletTerm};
use candle_face::model::{Architecture, Blocks, CompactCnnConfig, Head, TrainingSummary};
use candle_face::train::{train, Duration, NanPolicy, TrainEvent, TrainOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};

/// Arguments of `train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Training data: a labelled image folder `DIR/<person>/<image>`; a Parquet file with an
    /// image column and a label column; or a Hugging Face Hub image dataset in Parquet,
    /// `hf:owner/name[@revision]`. Parquet rows are extracted once into an image folder in the
    /// candle-face cache ($CANDLE_FACE_CACHE, default ~/.cache/candle-face).
    #[arg(long, value_name = "DATA")]
    pub data: String,
    /// Parquet data: the column holding the images (HF `Image` struct or binary); default
    /// `image`/`img`, else the first column holding bytes.
    #[arg(long, value_name = "COLUMN")]
    pub image_column: Option<String>,
    /// Parquet data: the column holding the identity (string, or integer class; HF
    /// `ClassLabel` names are used when the file has them); default `label`, `identity`, ...
    #[arg(long, value_name = "COLUMN")]
    pub label_column: Option<String>,
    /// Hub datasets: which split's Parquet files to use (a folder named SPLIT, or files named
    /// SPLIT-*.parquet); default `train` when there is one, else every Parquet file.
    #[arg(long, value_name = "SPLIT")]
    pub dataset_split: Option<String>,
    /// Hub datasets: use the local cache only (also CANDLE_FACE_OFFLINE=1 or HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Output directory: model folder, `checkpoints/`, `metrics.jsonl`.
    #[arg(long)]
    pub out: PathBuf,
    /// Train for this many epochs (passes over the training images).
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<f64>,
    /// Train for this many optimizer steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// People per batch (P).
    #[arg(long, default_value_t = 16)]
    pub people: usize,
    /// Images per person per batch (K).
    #[arg(long, default_value_t = 4)]
    pub images_per_person: usize,
    /// Of the P people of a batch, how many are people with a single image: their K entries
    /// are independently augmented views of that image, so they add identities as negatives
    /// (people with one photo are usually most of a folder). 0 leaves them out.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub singletons: usize,
    /// Triplet mining: batch-all, batch-hard or semi-hard.
    #[arg(long, default_value = "batch-hard")]
    pub loss: Mining,
    /// Triplet margin.
    #[arg(long, default_value_t = 0.2)]
    pub margin: f32,
    /// Soft margin: softplus(d(a,p) - d(a,n)) instead of the hinge (batch-hard, batch-all).
    #[arg(long)]
    pub soft_margin: bool,
    /// Distance: euclidean, squared-euclidean or cosine.
    #[arg(long, default_value = "euclidean", value_parser = parse_distance)]
    pub distance: Distance,
    /// Peak learning rate (AdamW) [default: 1e-3; with --init, the starting model's
    /// fine-tuning rate: 1e-5 for the dlib ResNet, 1e-4 for the others].
    #[arg(long)]
    pub lr: Option<f64>,
    /// AdamW decoupled weight decay (conv and linear weights only).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Linear warm-up steps [default: 100; with --init: 50].
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Fraction of people held out for validation (identity-disjoint).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f32,
    /// Maximum number of same-person validation pairs (as many different pairs are drawn).
    #[arg(long, default_value_t = 500)]
    pub val_pairs: usize,
    /// Seed for the split, the sampler and augmentation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continue from the newest checkpoint in OUT/checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Write a checkpoint every N steps (and at each epoch end).
    #[arg(long, default_value_t = 200)]
    pub checkpoint_every: u64,
    /// Log a metrics.jsonl line every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
    /// Validate every N epochs (0: only before and after training).
    #[arg(long, default_value_t = 1.0)]
    pub validate_every: f64,
    /// What to do when the loss becomes NaN/Inf: stop or skip.
    #[arg(long, default_value = "stop")]
    pub nan_policy: NanPolicy,
    /// Input side in pixels for the compact CNN.
    #[arg(long, default_value_t = 64)]
    pub image_size: u32,
    /// Centre crop as a fraction of the shorter image side before resizing.
    #[arg(long, default_value_t = 0.5)]
    pub crop_fraction: f32,
    /// Channels of the compact CNN's stages, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128,256")]
    pub channels: Vec<usize>,
    /// Conv blocks per stage of the compact CNN: one number for every stage, or one per stage
    /// (comma separated, e.g. `1,1,2,2`).
    #[arg(long, default_value = "1")]
    pub blocks_per_stage: Blocks,
    /// Embedding size.
    #[arg(long, default_value_t = 128)]
    pub embedding_dim: usize,
    /// Output layer of the compact CNN: `global-average` (average-pool the last map, then a
    /// linear layer) or `flatten` (a linear layer over the whole last map, keeping where on the
    /// face each feature is).
    #[arg(long, default_value = "global-average")]
    pub head: Head,
    /// Dropout probability on the compact CNN's head input while training.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Disable training augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// Augmentation: the crop window's side is scaled by `1 + u`, `u ∈ [−x, x]`.
    #[arg(
        long,
        default_value_t = 0.1,
        value_name = "X",
        conflicts_with = "no_augment"
    )]
    pub scale_jitter: f32,
    /// Augmentation: the crop window moves by up to this fraction of the image side.
    #[arg(
        long,
        default_value_t = 0.05,
        value_name = "X",
        conflicts_with = "no_augment"
    )]
    pub translate_jitter: f32,
    /// Augmentation: brightness is multiplied by `1 + u`, `u ∈ [−x, x]`.
    #[arg(
        long,
        default_value_t = 0.2,
        value_name = "X",
        conflicts_with = "no_augment"
    )]
    pub brightness: f32,
    /// Augmentation: contrast around the mean grey is multiplied by `1 + u`, `u ∈ [−x, x]`.
    #[arg(
        long,
        default_value_t = 0.2,
        value_name = "X",
        conflicts_with = "no_augment"
    )]
    pub contrast: f32,
    /// Augmentation: the crop window turns by up to this many degrees (0–45).
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "DEGREES",
        conflicts_with = "no_augment"
    )]
    pub rotate: f32,
    /// Augmentation: probability of training on a greyscale view.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "P",
        conflicts_with = "no_augment"
    )]
    pub grayscale: f32,
    /// Test-time flip augmentation: average the embeddings of the image and its mirror image.
    #[arg(long)]
    pub flip_tta: bool,
    /// No progress bar (plain log lines instead).
    #[arg(long)]
    pub quiet: bool,
    /// Fine-tune: start from this model (model folder, facenet-pytorch checkpoint,
    /// hf:owner/name, or `default`); its architecture and preprocessing are used and the
    /// architecture flags above are ignored.
    #[arg(long, value_name = "MODEL")]
    pub init: Option<String>,
    /// With --init: weight of a term keeping each training image's embedding near the starting
    /// model's (mean squared distance), so a small set does not erase what the model knew;
    /// 0 turns it off [default with --init: 10].
    #[arg(long, value_name = "W")]
    pub keep_init: Option<f64>,
    /// Keep parameters whose names start with PREFIX fixed (repeatable, or comma separated),
    /// e.g. `--freeze conv2d_,repeat_1,mixed_6a,repeat_2` to train only the last blocks;
    /// `--freeze none` trains everything. Default with --init: the starting model's early
    /// layers (dlib ResNet: `stem.,units.0.,units.1.,units.2.`; InceptionResnetV1: its stem).
    #[arg(long, value_name = "PREFIX", value_delimiter = ',')]
    pub freeze: Vec<String>,
    /// Switch mining at a step, as MINING@STEP (e.g. `batch-hard@1500` after semi-hard or
    /// batch-all early on).
    #[arg(long, value_name = "MINING@STEP", value_parser = parse_switch)]
    pub switch_mining: Option<(u64, Mining)>,
    /// Add an identity-classification loss (CosFace: one weight vector per training person,
    /// trained with the network and not saved in the model) with this weight to the triplet
    /// loss; 0 leaves it out.
    #[arg(long, value_name = "W", default_value_t = 0.0)]
    pub id_loss: f64,
    /// The identity loss's logit scale.
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    pub id_scale: f64,
    /// The identity loss's cosine margin.
    #[arg(long, value_name = "M", default_value_t = 0.2)]
    pub id_margin: f64,
    /// Only people with at least N training images get an identity class.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub id_min_images: usize,
}

fn parse_switch(s: &str) -> Result<(u64, Mining), String> {
    let (m, at) = s
        .split_once('@')
        .ok_or_else(|| format!("expected MINING@STEP (e.g. batch-hard@1500), got {s:?}"))?;
    let mining: Mining = m.parse().map_err(|e| format!("{e}"))?;
    let at: u64 = at
        .parse()
        .map_err(|_| format!("{at:?} is not a step number"))?;
    Ok((at, mining))
}

fn parse_distance(s: &str) -> Result<Distance, String> {
    match s {
        "euclidean" => Ok(Distance::Euclidean),
        "squared-euclidean" | "squared" => Ok(Distance::SquaredEuclidean),
        "cosine" => Ok(Distance::Cosine),
        _ => Err(format!(
            "unknown distance {s:?} (euclidean, squared-euclidean, cosine)"
        )),
    }
}

impl TrainArgs {
    /// The library options these arguments describe.
    pub fn options(&self) -> Result<TrainOptions> {
        let mut o = TrainOptions::new(Path::new(&self.data), &self.out);
        o.architecture = self.architecture()?;
        o.preprocess = Preprocess {
            image_size: self.image_size,
            crop_fraction: self.crop_fraction,
            flip_tta: self.flip_tta,
            channel_mean: None,
            ..Preprocess::compact_default()
        };
        o.augment = self.augment()?;
        o.loss = self.loss()?;
        o.people_per_batch = self.people;
        o.images_per_person = self.images_per_person;
        o.singletons_per_batch = self.singletons;
        o.duration = match (self.epochs, self.steps) {
            (Some(e), None) => Duration::Epochs(e),
            (None, Some(s)) => Duration::Steps(s),
            (None, None) => Duration::Epochs(10.0),
            (Some(_), Some(_)) => bail!("give --epochs or --steps, not both"),
        };
        self.set_fine_tuning(&mut o);
        o.val_fraction = self.val_fraction;
        o.val_pairs = self.val_pairs;
        o.seed = self.seed;
        o.resume = self.resume;
        o.checkpoint_every = self.checkpoint_every;
        o.log_every = self.log_every;
        o.validate_every_epochs = self.validate_every;
        o.nan_policy = self.nan_policy;
        o.mining_switch = self.switch_mining;
        o.id_loss = self.id_loss()?;
        Ok(o)
    }

    /// The compact CNN these arguments describe.
    fn architecture(&self) -> Result<Architecture> {
        let arch = CompactCnnConfig {
            channels: self.channels.clone(),
            blocks_per_stage: self.blocks_per_stage.clone(),
            embedding_dim: self.embedding_dim,
            image_size: self.image_size as usize,
            head: self.head,
            dropout: self.dropout,
            ..Default::default()
        };
        arch.validate()?;
        Ok(Architecture::CompactCnn(arch))
    }

    /// The training augmentation.
    fn augment(&self) -> Result<Augment> {
        let augment = if self.no_augment {
            Augment::none()
        } else {
            Augment {
                flip: true,
                scale_jitter: self.scale_jitter,
                translate_jitter: self.translate_jitter,
                brightness: self.brightness,
                contrast: self.contrast,
                rotate: self.rotate,
                grayscale: self.grayscale,
            }
        };
        augment.validate()?;
        Ok(augment)
    }

    /// The triplet loss: `--loss` mining, `--margin` or `--soft-margin`, `--distance`.
    fn loss(&self) -> Result<TripletLoss> {
        // The margin is checked even with --soft-margin, which does not use it.
        let hinge = TripletTerm::Hinge {
            margin: self.margin,
        };
        hinge.validate()?;
        Ok(TripletLoss {
            mining: self.loss,
            term: if self.soft_margin {
                TripletTerm::SoftPlus
            } else {
                hinge
            },
            distance: self.distance,
        })
    }

    /// The optimizer settings, the starting model and frozen layers, and which of them a
    /// fine-tune takes from the starting model's defaults (those not given).
    fn set_fine_tuning(&self, o: &mut TrainOptions) {
        o.optimizer.lr = self.lr.unwrap_or(1e-3);
        o.optimizer.weight_decay = self.weight_decay;
        o.warmup_steps = self.warmup_steps.unwrap_or(100);
        o.init_defaults = candle_face::train::InitDefaults {
            lr: self.lr.is_none(),
            warmup_steps: self.warmup_steps.is_none(),
            freeze: self.freeze.is_empty(),
            keep_init: self.keep_init.is_none(),
        };
        o.keep_init = self.keep_init.unwrap_or(0.0);
        o.init = self.init.clone();
        o.freeze = self
            .freeze
            .iter()
            .filter(|p| !p.is_empty() && p.as_str() != "none")
            .cloned()
            .collect();
    }

    /// The identity loss, with a non-zero `--id-loss` weight.
    fn id_loss(&self) -> Result<Option<candle_face::loss::IdLoss>> {
        if self.id_loss == 0.0 {
            return Ok(None);
        }
        let id = candle_face::loss::IdLoss {
            weight: self.id_loss,
            scale: self.id_scale,
            margin: self.id_margin,
            min_images: self.id_min_images,
        };
        id.validate()?;
        Ok(Some(id))
    }
}

/// Renders training events as a progress bar (or plain lines when not on a terminal).
pub struct Reporter {
    bar: ProgressBar,
    plain_every: u64,
}

impl Reporter {
    /// A reporter; `quiet` disables the bar.
    pub fn new(quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if quiet {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        Self {
            bar,
            plain_every: 50,
        }
    }

    fn say(&self, msg: String) {
        if self.bar.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.bar.println(msg);
        }
    }

    /// Handles one event.
    pub fn event(&mut self, e: TrainEvent) {
        match e {
            TrainEvent::Dataset {
                summary,
                train_people,
                train_images,
                val_people,
                val_pairs,
                notes,
            } => {
                self.say(format!("data: {summary}"));
                self.say(format!(
                    "split: {train_people} training people ({train_images} images), {val_people} validation people, {val_pairs} pairs for validation"
                ));
                for n in notes {
                    self.say(format!("note: {n}"));
                }
            }
            TrainEvent::Caching { .. } => {}
            TrainEvent::Skipped { path, reason } => {
                self.say(format!("skipped {}: {reason}", path.display()))
            }
            TrainEvent::Start {
                start_step,
                total_steps,
                steps_per_epoch,
                resumed_from,
            } => {
                if let Some(p) = resumed_from {
                    self.say(format!("resuming from {} (step {start_step})", p.display()));
                }
                self.say(format!(
                    "training {total_steps} steps ({steps_per_epoch} per epoch)"
                ));
                self.start_bar(start_step, total_steps);
            }
            TrainEvent::Step {
                step,
                total_steps,
                loss,
                active_fraction,
                lr,
                images_per_s,
            } => {
                let msg = format!(
                    "loss {loss:.4} active {:.1}% lr {lr:.2e} {images_per_s:.0} img/s",
                    active_fraction * 100.0
                );
                self.progress(step, total_steps, msg);
            }
            TrainEvent::NonFiniteLoss { step } => {
                self.say(format!("step {step}: loss is not finite, step skipped"))
            }
            TrainEvent::Validation {
                step,
                epoch,
                result,
            } => self.say(format!(
                "validation at step {step} (epoch {epoch:.2}): accuracy {:.2}% at threshold {:.4}, AUC {:.4} on {} pairs",
                result.accuracy * 100.0,
                result.threshold,
                result.auc,
                result.pairs
            )),
            TrainEvent::Checkpoint { step, path } => {
                if self.bar.is_hidden() {
                    eprintln!("checkpoint at step {step}: {}", path.display());
                }
            }
            TrainEvent::Warning(w) => self.say(format!("warning: {w}")),
            TrainEvent::Finished { summary, threshold } => self.finished(&summary, threshold),
        }
    }

    fn start_bar(&mut self, start_step: u64, total_steps: u64) {
        self.bar.set_length(total_steps);
        self.bar.set_position(start_step);
        self.bar.reset_eta();
        self.bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.plain_every = (total_steps / 20).max(1);
    }

    /// The bar, or a plain line every twentieth of the run when the bar is hidden.
    fn progress(&mut self, step: u64, total_steps: u64, msg: String) {
        self.bar.set_position(step);
        self.bar.set_message(msg.clone());
        if self.bar.is_hidden() && (step.is_multiple_of(self.plain_every) || step == total_steps) {
            eprintln!("step {step}/{total_steps} {msg}");
        }
    }

    fn finished(&mut self, summary: &TrainingSummary, threshold: Option<f32>) {
        self.bar.finish_and_clear();
        eprintln!(
            "done: {} steps in {:.0} s ({:.1} images/s)",
            summary.steps, summary.wall_time_s, summary.images_per_s
        );
        if let (Some(b), Some(a)) = (summary.val_accuracy_before, summary.val_accuracy) {
            eprintln!(
                "validation accuracy: {:.2}% before training, {:.2}% after (AUC {:.4})",
                b * 100.0,
                a * 100.0,
                summary.val_auc.unwrap_or(f32::NAN)
            );
        }
        match threshold {
            Some(t) => eprintln!("calibrated threshold: {t:.4}"),
            None => eprintln!("no threshold calibrated"),
        }
    }
}

/// Runs `train`.
pub fn run(a: TrainArgs) -> Result<()> {
    let mut opts = a.options()?;
    opts.data = resolve_data(&a)?;
    let mut reporter = Reporter::new(a.quiet);
    let outcome = train(&opts, &mut |e| reporter.event(e))?;
    eprintln!(
        "model folder: {} ({} steps)",
        opts.out.display(),
        outcome.steps
    );
    Ok(())
}

/// The image folder `--data` names (extracting Parquet data first).
#[cfg(feature = "parquet")]
fn resolve_data(a: &TrainArgs) -> Result<PathBuf> {
    use candle_face::data::parquet::{resolve_data, ParquetColumns};
    let cols = ParquetColumns {
        image: a.image_column.clone(),
        label: a.label_column.clone(),
    };
    let (dir, extracted) = resolve_data(&a.data, a.dataset_split.as_deref(), &cols, a.offline)?;
    if let Some(e) = extracted {
        if !a.quiet || !e.skipped.is_empty() {
            eprintln!(
                "{}: {} images of {} people from {} rows{} in {}",
                a.data,
                e.images,
                e.people,
                e.rows,
                if e.reused { " (already extracted)" } else { "" },
                e.dir.display()
            );
        }
        for s in e.skipped.iter().take(20) {
            eprintln!("skipped {s}");
        }
        if e.skipped.len() > 20 {
            eprintln!("... and {} more skipped rows", e.skipped.len() - 20);
        }
    }
    Ok(dir)
}

/// The image folder `--data` names (this build reads no Parquet).
#[cfg(not(feature = "parquet"))]
fn resolve_data(a: &TrainArgs) -> Result<PathBuf> {
    if a.data.starts_with("hf:") || a.data.ends_with(".parquet") {
        bail!(
            "{}: Parquet and Hub datasets need the `parquet` feature (and `hub` for hf:)",
            a.data
        );
    }
    let _ = (
        &a.image_column,
        &a.label_column,
        &a.dataset_split,
        a.offline,
    );
    Ok(PathBuf::from(&a.data))
}
