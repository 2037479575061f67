//! Datasets: image-folder scanning, identity-disjoint splits, P×K sampling, augmentation, the
//! prefetching loader, Parquet datasets, and a folder of face crops made from a folder of photos
//! ([`prepare_folder`]).
//!
//! The path of a training image: [`ImageFolder::scan`] lists `root/<person>/<image>`,
//! [`ImageFolder::split`] holds out validation identities, [`ImageCache::build`] decodes every
//! image once ([`crate::image::load_image`]) into a source slightly larger than the
//! [`Preprocess`](crate::image::Preprocess) window, and the [`Loader`] draws [`PkSampler`] batches, applies [`Augment`] and hands over tensors.

pub mod augment;
pub mod image_folder;
pub mod loader;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod prepare;
pub mod sampler;

pub use augment::Augment;
pub use image_folder::{ImageFolder, Person, Split};
pub use loader::{eval_tensor, Batch, ImageCache, Loader};
pub use prepare::{prepare_folder, PrepareOptions, PrepareReport};
pub use sampler::PkSampler;
