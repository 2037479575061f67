//! The training run: output folder and resume, then data, model and optimizer set-up, the
//! steps, and the finished model folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, ModuleT, Tensor, Var};

use super::checkpoint::{self, Checkpoint};
use super::data::TrainData;
use super::events::{TrainEvent, TrainOutcome};
use super::metrics::MetricsLog;
use super::options::{Duration, NanPolicy, TrainOptions};
use super::schedule::LrSchedule;
use super::setup::{bn_stats, InitModel, Model};
use super::validate::{self, ValResult};
use crate::data::loader::{Batch, Loader};
use crate::data::sampler::PkSampler;
use crate::loss::LossOutput;
use crate::model::{save_model, ModelConfig, TrainingSummary};
use crate::{Error, Result};

/// Images per forward pass when embedding validation pairs.
const EVAL_BATCH: usize = 64;

/// Runs a training job described by `opts`, reporting progress through `on_event`.
pub fn train(opts: &TrainOptions, on_event: &mut dyn FnMut(TrainEvent)) -> Result<TrainOutcome> {
    opts.validate()?;
    let device = Device::Cpu;
    let init = read_init(opts)?;
    // Fine-tuning: the starting model dictates the architecture and preprocessing.
    let resolved = init.as_ref().map(|(cfg, _)| opts.for_init(cfg));
    let opts = resolved.as_ref().unwrap_or(opts);
    let ckpt_dir = opts.out.join("checkpoints");
    let resume = open_output(opts, &ckpt_dir, on_event)?;
    let data = TrainData::prepare(opts, on_event)?;
    let people = data.train_cache.images_per_person();
    let model = Model::build(opts, init.as_ref(), resume.as_ref(), &people, &device)?;
    let resumed_step = resume.map(|c| c.state.step);
    let mut run = Run::new(opts, &data, model, ckpt_dir, resumed_step, device)?;
    run.validate_untrained(on_event)?;
    on_event(TrainEvent::Start {
        start_step: run.model.state.step,
        total_steps: run.total_steps,
        steps_per_epoch: run.steps_per_epoch,
        resumed_from: run.model.resumed_from.clone(),
    });
    let last_val = run.steps(on_event)?;
    run.finish(init.as_ref().map(|(cfg, _)| cfg), last_val, on_event)
}

/// The starting model of a fine-tune (`opts.init`), read.
fn read_init(opts: &TrainOptions) -> Result<Option<InitModel>> {
    match &opts.init {
        Some(src) => {
            let source: crate::infer::ModelSource = src.parse()?;
            Ok(Some(
                source.read_weights(&crate::infer::LoadOptions::default())?,
            ))
        }
        None => Ok(None),
    }
}

/// Prepares the output folder and returns the checkpoint to resume from: the newest good one
/// with `opts.resume` (damaged ones passed over with a warning), none otherwise; an error when
/// a fresh run would overwrite checkpoints or the checkpoint's run had other options.
fn open_output(
    opts: &TrainOptions,
    ckpt_dir: &Path,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<Option<Checkpoint>> {
    std::fs::create_dir_all(ckpt_dir).map_err(|e| Error::io(ckpt_dir, e))?;
    checkpoint::remove_stale_temporaries(&opts.out);
    checkpoint::remove_stale_temporaries(ckpt_dir);
    if !opts.resume {
        if !checkpoint::list_checkpoints(ckpt_dir)?.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} already holds checkpoints: pass --resume to continue that run, or choose another --out",
                ckpt_dir.display()
            )));
        }
        return Ok(None);
    }
    let (resume, passed_over) = checkpoint::latest_good_checkpoint(ckpt_dir, &Device::Cpu)?;
    for reason in passed_over {
        on_event(TrainEvent::Warning(format!(
            "passed over a damaged checkpoint: {reason}"
        )));
    }
    match &resume {
        None => on_event(TrainEvent::Warning(format!(
            "--resume: no checkpoint in {}, starting from scratch",
            ckpt_dir.display()
        ))),
        Some(c) if c.state.options != opts.resume_key() => {
            return Err(Error::InvalidArgument(format!(
                "{} was written by a run with different options ({}); resume with the same \
                 architecture, preprocessing, seed, batch shape and validation split",
                c.path.display(),
                c.state.options
            )))
        }
        Some(_) => {}
    }
    Ok(resume)
}

/// A run in progress: options, data, model and the step plan.
struct Run<'a> {
    opts: &'a TrainOptions,
    data: &'a TrainData,
    model: Model,
    device: Device,
    ckpt_dir: PathBuf,
    metrics: MetricsLog,
    sampler: PkSampler,
    schedule: LrSchedule,
    batch_size: usize,
    steps_per_epoch: u64,
    total_steps: u64,
    val_every_steps: u64,
}

impl<'a> Run<'a> {
    /// Plans the steps (P×K sampler, schedule, validation interval) and opens the metrics log,
    /// keeping the lines up to `resumed_step`.
    fn new(
        opts: &'a TrainOptions,
        data: &'a TrainData,
        model: Model,
        ckpt_dir: PathBuf,
        resumed_step: Option<u64>,
        device: Device,
    ) -> Result<Self> {
        let sampler = PkSampler::new(
            &data.train_cache.images_per_person(),
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
        let metrics = MetricsLog::open(opts.out.join("metrics.jsonl"), resumed_step)?;
        let val_every_steps = if opts.validate_every_epochs > 0.0 {
            ((opts.validate_every_epochs * steps_per_epoch as f64).round() as u64).max(1)
        } else {
            u64::MAX
        };
        Ok(Self {
            opts,
            data,
            model,
            device,
            ckpt_dir,
            metrics,
            sampler,
            schedule,
            batch_size,
            steps_per_epoch,
            total_steps,
            val_every_steps,
        })
    }

    /// Epochs (fractional) after `step` steps.
    fn epoch(&self, step: u64) -> f64 {
        step as f64 / self.steps_per_epoch as f64
    }

    /// Scores the network on the validation (or calibration) pairs; `None` without usable pairs.
    fn validate_now(&self) -> Result<Option<ValResult>> {
        let (cache, pairs) = self.data.score_pairs();
        if !pairs.usable() {
            return Ok(None);
        }
        let d = validate::pair_distances(
            &self.model.net,
            cache,
            &self.opts.preprocess,
            pairs,
            self.opts.loss.distance,
            &self.device,
            EVAL_BATCH,
        )?;
        Ok(Some(validate::score(&d, pairs)?))
    }

    /// Writes a validation result to the metrics log and reports it.
    fn record_validation(
        &self,
        step: u64,
        r: ValResult,
        flag: Option<&str>,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        let epoch = self.epoch(step);
        self.metrics.validation(step, epoch, &r, flag)?;
        on_event(TrainEvent::Validation {
            step,
            epoch,
            result: r,
        });
        Ok(())
    }

    /// Scores the untrained network once, before the first step of a run.
    fn validate_untrained(&mut self, on_event: &mut dyn FnMut(TrainEvent)) -> Result<()> {
        let state = &self.model.state;
        if state.step != 0 || state.val_accuracy_before.is_some() {
            return Ok(());
        }
        if let Some(r) = self.validate_now()? {
            self.model.state.val_accuracy_before = Some(r.accuracy);
            self.model.state.val_auc_before = Some(r.auc);
            self.record_validation(0, r, Some("untrained"), on_event)?;
        }
        Ok(())
    }

    /// Runs the steps left; returns the last periodic validation.
    fn steps(&mut self, on_event: &mut dyn FnMut(TrainEvent)) -> Result<Option<ValResult>> {
        let opts = self.opts;
        let mut loader = Loader::from_sampler(
            self.data.train_cache.clone(),
            opts.preprocess.clone(),
            opts.augment.clone(),
            self.sampler.clone(),
            opts.seed,
            self.model.state.step,
            self.device.clone(),
        )?;
        let mut window = LogWindow::new(self.model.state.elapsed_s);
        let mut last_val = None;
        while self.model.state.step < self.total_steps {
            let lr = self.schedule.lr(self.model.state.step);
            self.model.opt.set_lr(lr);
            let batch = loader.next_batch()?;
            if let Some(out) = self.step(&batch, on_event)? {
                if let Some(r) = self.after_step(lr, &out, &mut window, on_event)? {
                    last_val = Some(r);
                }
            }
        }
        Ok(last_val)
    }

    /// The loss of a batch's embeddings: the triplet loss (with the miner of this step), plus
    /// the `keep_init` drift and the identity loss when they are on.
    fn loss(&self, emb: &Tensor, batch: &Batch) -> Result<LossOutput> {
        let opts = self.opts;
        let loss_fn = match opts.mining_switch {
            Some((at, mining)) if self.model.state.step >= at => opts.loss.with_mining(mining),
            _ => opts.loss,
        };
        let mut out = loss_fn.forward(emb, &batch.labels)?;
        if let Some(reference) = &self.model.reference {
            let before = reference.forward_t(&batch.images, false)?.detach();
            let drift = (emb - before)?.sqr()?.sum(1)?.mean(0)?;
            out.loss = (out.loss + (drift * opts.keep_init)?)?;
        }
        if let Some(head) = &self.model.id_head {
            if let Some(id) = head.loss(emb, &batch.labels, &self.device)? {
                out.loss = (out.loss + id)?;
            }
        }
        Ok(out)
    }

    /// One optimizer step on `batch`; `None` when the loss was not finite and the step skipped.
    fn step(
        &mut self,
        batch: &Batch,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<Option<StepResult>> {
        let saved_bn = match self.opts.nan_policy {
            NanPolicy::Skip => Some(bn_stats(&self.model.varmap)?),
            NanPolicy::Stop => None,
        };
        let emb = self.model.net.forward_t(&batch.images, true)?;
        let out = self.loss(&emb, batch)?;
        let loss = out.loss.to_scalar::<f32>()?;
        if !loss.is_finite() {
            self.skip_step(loss, saved_bn, on_event)?;
            return Ok(None);
        }
        let grads = out.loss.backward()?;
        self.model.opt.step(&grads)?;
        Ok(Some(StepResult {
            loss,
            active_fraction: out.stats.active_fraction,
        }))
    }

    /// A non-finite `loss`: an error with [`NanPolicy::Stop`]; with [`NanPolicy::Skip`] the
    /// BatchNorm statistics are put back and the step counted as skipped.
    fn skip_step(
        &mut self,
        loss: f32,
        saved_bn: Option<Vec<(Var, Tensor)>>,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        let state = &mut self.model.state;
        if self.opts.nan_policy == NanPolicy::Stop {
            return Err(Error::Msg(format!(
                "the loss became {loss} at step {}; stopping. The last good checkpoint is in {} \
                 (lower --lr, or pass --nan-policy skip)",
                state.step + 1,
                self.ckpt_dir.display()
            )));
        }
        for (var, t) in saved_bn.into_iter().flatten() {
            var.set(&t)?;
        }
        state.step += 1;
        state.skipped_steps += 1;
        // Keep the optimizer's step count in line with the training step.
        self.model.opt.skip_step();
        on_event(TrainEvent::NonFiniteLoss { step: state.step });
        Ok(())
    }

    /// Counts a finished step, reports it, and logs, validates and checkpoints when due;
    /// returns the validation run, if any.
    fn after_step(
        &mut self,
        lr: f64,
        out: &StepResult,
        window: &mut LogWindow,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<Option<ValResult>> {
        let state = &mut self.model.state;
        state.step += 1;
        state.images_seen += self.batch_size as u64;
        window.add(self.batch_size as u64, out);
        let images_per_s = window.images_per_s();
        on_event(TrainEvent::Step {
            step: state.step,
            total_steps: self.total_steps,
            loss: out.loss,
            active_fraction: out.active_fraction,
            lr,
            images_per_s,
        });
        state.elapsed_s = window.elapsed_s();
        let (step, elapsed_s) = (state.step, state.elapsed_s);
        if step.is_multiple_of(self.opts.log_every.max(1)) || step == self.total_steps {
            let line = window.line(step, self.epoch(step), lr, images_per_s, elapsed_s);
            self.metrics.write(line)?;
        }
        let mut val = None;
        if step.is_multiple_of(self.val_every_steps) && step < self.total_steps {
            val = self.validate_now()?;
            if let Some(r) = val {
                self.record_validation(step, r, None, on_event)?;
            }
        }
        let epoch_end = step.is_multiple_of(self.steps_per_epoch);
        if step.is_multiple_of(self.opts.checkpoint_every.max(1))
            || epoch_end
            || step == self.total_steps
        {
            let path = checkpoint::save_checkpoint(
                &self.ckpt_dir,
                &self.model.varmap,
                &self.model.opt,
                &self.model.state,
                self.opts.keep_checkpoints.max(1),
            )?;
            on_event(TrainEvent::Checkpoint { step, path });
        }
        Ok(val)
    }

    /// Validates the trained network, calibrates the threshold and writes the model folder.
    fn finish(
        self,
        init: Option<&ModelConfig>,
        last_val: Option<ValResult>,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<TrainOutcome> {
        let opts = self.opts;
        let step = self.model.state.step;
        let final_val = self.validate_now()?;
        if let Some(r) = final_val {
            if last_val != Some(r) {
                self.record_validation(step, r, Some("final"), on_event)?;
            }
        }
        let mut cfg = ModelConfig::new(opts.architecture.clone(), opts.preprocess.clone());
        cfg.distance = opts.loss.distance;
        // A fine-tuned model reads its input as the model it started from did.
        if let Some(init) = init {
            cfg.face_crop = init.face_crop.clone();
            cfg.detect_faces = init.detect_faces;
        }
        let mut notes = self.data.notes.clone();
        match final_val {
            Some(r) => {
                let on = if self.data.calibrate_on_train {
                    "training pairs (no validation people)"
                } else {
                    "validation pairs"
                };
                let source = format!("train: best accuracy on {} {on}", r.pairs);
                cfg.set_threshold(r.threshold, source);
            }
            None => notes
                .push("no pairs to calibrate a threshold on: pass --threshold to verify".into()),
        }
        let summary = self.summary(final_val, notes);
        cfg.training = Some(summary.clone());
        save_model(&opts.out, &cfg, &self.model.varmap)?;
        on_event(TrainEvent::Finished {
            summary: Box::new(summary),
            threshold: cfg.threshold,
        });
        Ok(TrainOutcome {
            config: cfg,
            steps: step,
        })
    }

    /// The training summary stored in `config.json`.
    fn summary(&self, final_val: Option<ValResult>, notes: Vec<String>) -> TrainingSummary {
        let state = &self.model.state;
        let data = self.data;
        let wall = state.elapsed_s;
        TrainingSummary {
            data: self.opts.data.display().to_string(),
            train_people: data.train_people,
            train_images: data.train_images,
            val_people: data.val_people,
            val_pairs: data.score_pairs().1.len(),
            calibrated_on_train: data.calibrate_on_train,
            steps: state.step,
            epochs: self.epoch(state.step),
            loss: self.opts.loss.describe(),
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
        }
    }
}

/// What a finished step reports.
struct StepResult {
    loss: f32,
    active_fraction: f32,
}

/// Time and sums since the last metrics line, and the run's wall time.
struct LogWindow {
    run_start: Instant,
    elapsed_before: f64,
    start: Instant,
    images: u64,
    loss_sum: f64,
    active_sum: f64,
    steps: u64,
}

impl LogWindow {
    /// A window starting now, in a run that had already taken `elapsed_before` seconds.
    fn new(elapsed_before: f64) -> Self {
        Self {
            run_start: Instant::now(),
            elapsed_before,
            start: Instant::now(),
            images: 0,
            loss_sum: 0.0,
            active_sum: 0.0,
            steps: 0,
        }
    }

    fn add(&mut self, images: u64, out: &StepResult) {
        self.images += images;
        self.loss_sum += out.loss as f64;
        self.active_sum += out.active_fraction as f64;
        self.steps += 1;
    }

    /// Images per second since the window started.
    fn images_per_s(&self) -> f64 {
        let window = self.start.elapsed().as_secs_f64();
        if window > 0.0 {
            self.images as f64 / window
        } else {
            0.0
        }
    }

    /// Wall time of the whole run, earlier sessions included.
    fn elapsed_s(&self) -> f64 {
        self.elapsed_before + self.run_start.elapsed().as_secs_f64()
    }

    /// The metrics line of the window, which starts again.
    fn line(
        &mut self,
        step: u64,
        epoch: f64,
        lr: f64,
        speed: f64,
        elapsed_s: f64,
    ) -> serde_json::Value {
        let n = self.steps as f64;
        let line = serde_json::json!({
            "step": step, "epoch": epoch,
            "loss": self.loss_sum / n,
            "active_fraction": self.active_sum / n,
            "lr": lr, "images_per_s": speed,
            "elapsed_s": elapsed_s,
        });
        *self = Self {
            run_start: self.run_start,
            elapsed_before: self.elapsed_before,
            ..Self::new(0.0)
        };
        line
    }
}
