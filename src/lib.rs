//! # candle-face
//!
//! Face embeddings learned with FaceNet-style triplet loss, on Hugging Face
//! [candle](https://github.com/huggingface/candle): train or fine-tune on a folder of labelled
//! photos, load pretrained weights, and verify whether two faces belong to the same person.
//!
//! The library is organised like the field's vocabulary:
//! - [`distance`]: the distance between embeddings, distance matrices, row normalisation;
//! - [`loss`]: label masks, triplet mining and terms, the triplet-loss family;
//! - [`convert`]: other projects' weights (facenet-pytorch checkpoints and MTCNN `.pt` files,
//!   dlib's `.dat` files) into model folders;
//! - [`image`](mod@image): decoding, resampling and warping images, and a model's preprocessing
//!   (shared by training and inference);
//! - [`data`]: image-folder scanning, identity-disjoint splits, P×K sampling, augmentation, the
//!   prefetching loader, Parquet;
//! - [`model`]: `config.json`, the compact CNN, InceptionResnetV1, saving and loading;
//! - [`ops`]: tensor operations candle lacks or gets wrong (max pooling with a correct gradient);
//! - [`train`]: the training loop, optimizer schedule, checkpoints and validation;
//! - [`infer`]: the inference-only path ([`infer::Embedder`], [`infer::Verifier`]);
//! - [`detect`]: MTCNN face detection, dlib's landmarks and alignment, face crops;
//! - [`gallery`]: enrolled faces in a file or in PostgreSQL + pgvector, and identification;
//! - [`eval`]: pair protocols and verification metrics;
//! - [`synthetic`]: generated face-like images with identities (the demo and the tests);
//! - `hub` (feature `hub`, on by default): `hf:owner/name[@revision]` references resolved to
//!   files in the Hugging Face Hub cache.

pub mod convert;
pub mod data;
pub mod detect;
pub mod distance;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod gallery;
#[cfg(feature = "hub")]
pub mod hub;
pub mod image;
pub mod infer;
pub mod loss;
pub mod model;
pub mod ops;
pub mod synthetic;
pub mod train;

pub use error::{Error, Result};

/// Raises glibc's mmap and trim thresholds so large activation buffers are reused instead of
/// being mapped and unmapped on every step (measured here: about 2× faster training with candle's
/// built-in ops). Call it once at start-up; a no-op on other platforms and C libraries.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Fixes the number of compute threads for the whole process, once: when `RAYON_NUM_THREADS`
/// is unset it is set to candle's default (the physical core count, as PyTorch uses), so that
/// rayon's pool and candle agree, and candle stops re-reading `/proc/cpuinfo` on every matrix
/// product (about 1200 times per MTCNN detection, 8% of its time here). Call it at start-up,
/// before any other thread exists (it changes the process environment); the `candle-face`
/// binary does. An existing `RAYON_NUM_THREADS` is left as it is.
pub fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads().max(1);
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
