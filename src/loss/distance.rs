//! Pairwise distances between embeddings.

use serde::{Deserialize, Serialize};

/// The distance between two embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distance {
    /// Euclidean distance with a safe square root (zero distances have a finite gradient).
    #[default]
    Euclidean,
    /// Squared euclidean distance.
    SquaredEuclidean,
    /// Cosine distance, `1 - cos(a, b)`.
    Cosine,
}
