//! The inference path: load a model folder without any training machinery, embed images, and
//! decide whether two faces belong to the same person.
//!
//! Nothing here depends on [`crate::train`]: weights are memory-mapped, BatchNorm runs in
//! evaluation mode, and there is no optimizer or `VarMap`.

pub mod bundled_models;
pub mod embedder;
pub mod source;
pub mod store;
pub mod verifier;

pub use crate::detect::FaceFinder;
pub use bundled_models::{has_bundled_model, BundledModel};
pub use embedder::Embedder;
pub use source::{LoadOptions, ModelSource};
pub use store::{read_embeddings, write_embeddings};
pub use verifier::{embedding_distance, Verdict, Verifier};
