//! What a training run reports ([`TrainEvent`]) and returns ([`TrainOutcome`]).

use std::path::PathBuf;

use super::validate::ValResult;
use crate::model::{ModelConfig, TrainingSummary};

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

/// The result of [`crate::train::train`].
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The model config as written to `out/config.json`.
    pub config: ModelConfig,
    /// Steps completed.
    pub steps: u64,
}
