//! Pretrained weights from the Hugging Face Hub.
//!
//! A model is named `hf:owner/name[@revision]` ([`HubRef`]); [`fetch_model`] resolves it to local
//! files (`config.json` and the weights) in the standard Hub cache,
//! `<cache>/models--owner--name/snapshots/<commit>/...`, the layout shared with Python's
//! `huggingface_hub` and candle's examples. [`HubOptions`] sets the endpoint, token, cache
//! folder, offline mode, retries and progress bar, and [`HubOptions::from_env`] reads
//! `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_CACHE`/`HF_HOME`, `CANDLE_FACE_OFFLINE` and
//! `HF_HUB_OFFLINE`.
//!
//! The Hub protocol is implemented here on a small blocking HTTP client (`ureq`, rustls):
//! - a file: `HEAD {endpoint}/{owner}/{name}/resolve/{revision}/{file}` (`/datasets/...` for
//!   datasets) gives the commit (`X-Repo-Commit`) and the content's ETag (`X-Linked-Etag` for
//!   LFS files, else `ETag`); a `GET` of the same URL, following the redirect to the CDN,
//!   writes `blobs/<etag>` through a temporary file and a rename, so a download cut short
//!   never leaves a file under the final name; `snapshots/<commit>/<file>` links to the blob
//!   and `refs/<revision>` records the commit;
//! - a dataset's file list: the tree API,
//!   `GET {endpoint}/api/datasets/{owner}/{name}/tree/{revision}?recursive=true`, page by page;
//! - offline (or when the Hub cannot be reached, or answers with a server error), files are
//!   found through `refs/<revision>` (or a commit hash given as the revision) in the cache;
//! - `Authorization: Bearer <token>` goes to the endpoint's host only; requests that fail
//!   transiently (connection refused, timeout, HTTP 408/429/5xx) are retried with exponential
//!   backoff, and a download cut short resumes where it stopped (`Range`);
//! - timeouts, in seconds, as `huggingface_hub` reads them: `HF_HUB_ETAG_TIMEOUT` to connect and
//!   get an answer's headers, `HF_HUB_DOWNLOAD_TIMEOUT` of silence during a download (10 each).
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

mod cache;
mod client;
mod errors;
mod fetch;
mod http;
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
