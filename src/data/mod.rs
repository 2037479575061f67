//! Datasets: image-folder scanning, identity-disjoint splits, P×K sampling, image decoding,
//! preprocessing and augmentation, and the prefetching loader.

pub mod folder;

pub use folder::{ImageFolder, Person};
