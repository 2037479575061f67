//! # candle-face
//!
//! Face embeddings learned with FaceNet-style triplet loss, on Hugging Face
//! [candle](https://github.com/huggingface/candle): train or fine-tune on a folder of labelled
//! photos, load pretrained weights, and verify whether two faces belong to the same person.
//!
//! The library is organised like the field's vocabulary:
//! - [`loss`]: pairwise distances, label masks and the triplet-loss family;
//! - [`data`]: image-folder scanning, identity-disjoint splits, P×K sampling, preprocessing;
//! - [`model`]: `config.json`, the compact CNN, InceptionResnetV1, saving and loading;
//! - [`train`]: the training loop, optimizer schedule, checkpoints and validation;
//! - [`infer`]: the inference-only path ([`infer::Embedder`], [`infer::Verifier`]);
//! - [`detect`]: MTCNN face detection and alignment;
//! - [`eval`]: pair protocols and verification metrics;
//! - `hub` (feature `hub`, on by default): `hf:owner/name[@revision]` references resolved to
//!   files in the Hugging Face Hub cache.

pub mod data;
pub mod detect;
pub mod error;
pub mod eval;
pub mod fsutil;
#[cfg(feature = "hub")]
pub mod hub;
pub mod infer;
pub mod loss;
pub mod model;
pub mod train;

pub use error::{Error, Result};
