//! Distances, label masks and the triplet-loss family, as plain tensor functions.

pub mod distance;

pub use distance::Distance;
