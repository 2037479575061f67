//! Pretrained weights from the Hugging Face Hub.
//!
//! A model is named `hf:owner/name[@revision]` ([`HubRef`]); [`fetch_model`] resolves it to local
//! files (`config.json` and the weights) in the standard Hub cache,
//! `<cache>/models--owner--name/snapshots/<commit>/...`, the layout shared with Python's
//! `huggingface_hub` and candle's examples. Downloads go through the
//! [`hf-hub`](https://docs.rs/hf-hub/1.0.0) crate's blocking client; [`HubOptions`] sets the
//! endpoint, token, cache folder, offline mode and progress bar, and
//! [`HubOptions::from_env`] reads `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_CACHE`/`HF_HOME`,
//! `CANDLE_FACE_OFFLINE` and `HF_HUB_OFFLINE`.
//!
//! This module only finds files; loading them into a model is the caller's job.
//!
//! ```no_run
//! use candle_face::hub::{fetch_model, HubOptions, HubRef};
//!
//! let r: HubRef = "hf:owner/facenet@main".parse()?;
//! let files = fetch_model(&r, None, &HubOptions::from_env())?;
//! println!("weights at {}", files.weights.display());
//! # Ok::<(), candle_face::Error>(())
//! ```

mod fetch;
mod options;
mod progress;
mod reference;

pub use fetch::{
    fetch_dataset_parquet, fetch_file, fetch_model, parquet_in_split, DatasetFiles, HubFiles,
    CONFIG_FILE, DEFAULT_WEIGHTS_FILE,
};
pub use options::HubOptions;
pub use progress::PROGRESS_MIN_BYTES;
pub use reference::{HubRef, DEFAULT_REVISION, HUB_PREFIX};
