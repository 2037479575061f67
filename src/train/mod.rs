//! Training: P×K batches, online triplet mining, AdamW with warm-up and cosine decay, validation
//! on identity-disjoint pairs, atomic checkpoints and resuming.
//!
//! [`train`] runs a whole training job and reports what happens through a callback of
//! [`TrainEvent`]s, so the CLI can draw a progress bar and a library user can log however they
//! like. Output directory layout:
//! - `config.json`, `model.safetensors`: the finished model folder (written at the end);
//! - `checkpoints/step-XXXXXXXX.safetensors`: weights, optimizer moments and training state;
//! - `metrics.jsonl`: one JSON object per log interval and per validation.
//!
//! The parts of a run: [`options`] (what defines it), [`data`] (caches and validation pairs),
//! [`setup`] (model, fine-tune start, frozen layers, resume), `id_head` (the identity-loss
//! head), `run` (the steps and the finished model folder), [`events`] (what it reports),
//! `metrics` (`metrics.jsonl`).

pub mod checkpoint;
pub mod data;
pub mod events;
pub mod fine_tune;
mod id_head;
mod metrics;
pub mod optim;
pub mod options;
mod run;
pub mod schedule;
pub mod seeded_init;
pub mod setup;
pub mod validate;

pub use data::CACHE_MARGIN;
pub use events::{TrainEvent, TrainOutcome};
pub use options::{Duration, InitDefaults, NanPolicy, TrainOptions};
pub use run::train;
pub use setup::{init_varmap, trainable_vars};
