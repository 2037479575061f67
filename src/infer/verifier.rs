//! [`Verifier`]: the distance between two faces compared with a calibrated threshold.

use crate::distance::Distance;
use crate::infer::Embedder;
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// The answer to "are these the same person?".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Verdict {
    /// Distance between the two embeddings (in the model's distance).
    pub distance: f32,
    /// The threshold it was compared with.
    pub threshold: f32,
    /// `distance <= threshold`.
    pub same: bool,
}

/// Distance between two embeddings; the euclidean distance of identical vectors is exactly 0.
pub fn embedding_distance(a: &[f32], b: &[f32], distance: Distance) -> f32 {
    match distance {
        Distance::Euclidean | Distance::SquaredEuclidean => {
            let d2: f64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| {
                    let d = (*x as f64) - (*y as f64);
                    d * d
                })
                .sum();
            if distance == Distance::Euclidean {
                d2.sqrt() as f32
            } else {
                d2 as f32
            }
        }
        Distance::Cosine => {
            let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
            for (x, y) in a.iter().zip(b) {
                dot += (*x as f64) * (*y as f64);
                na += (*x as f64) * (*x as f64);
                nb += (*y as f64) * (*y as f64);
            }
            let denom = (na.sqrt() * nb.sqrt()).max(1e-12);
            (1.0 - dot / denom) as f32
        }
    }
}

/// Verifies pairs of faces with an [`Embedder`] and a threshold.
#[derive(Debug, Clone)]
pub struct Verifier {
    embedder: Embedder,
    threshold: f32,
}

impl Verifier {
    /// A verifier using `threshold`, or the model's calibrated threshold when `None`.
    pub fn new(embedder: Embedder, threshold: Option<f32>) -> Result<Self> {
        let threshold = match threshold.or(embedder.config().threshold) {
            Some(t) if t.is_finite() && t >= 0.0 => t,
            Some(t) => return Err(Error::InvalidArgument(format!("invalid threshold {t}"))),
            None => {
                return Err(Error::InvalidArgument(format!(
                    "the model {} has no calibrated threshold: pass one explicitly",
                    embedder.source().display()
                )))
            }
        };
        Ok(Self {
            embedder,
            threshold,
        })
    }

    /// The threshold in use.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The embedder in use.
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Compares two embeddings.
    pub fn verify_embeddings(&self, a: &[f32], b: &[f32]) -> Verdict {
        let distance = embedding_distance(a, b, self.embedder.config().distance);
        Verdict {
            distance,
            threshold: self.threshold,
            same: distance <= self.threshold,
        }
    }

    /// Embeds two image files (in one batch) and compares them.
    pub fn verify_paths(&self, a: impl AsRef<Path>, b: impl AsRef<Path>) -> Result<Verdict> {
        let e = self.embedder.embed_images(&[a.as_ref(), b.as_ref()])?;
        let ea = e.get(0)?.to_vec1::<f32>()?;
        let eb = e.get(1)?.to_vec1::<f32>()?;
        Ok(self.verify_embeddings(&ea, &eb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_closed_form() {
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        assert!((embedding_distance(&a, &b, Distance::Euclidean) - 2f32.sqrt()).abs() < 1e-6);
        assert!((embedding_distance(&a, &b, Distance::SquaredEuclidean) - 2.0).abs() < 1e-6);
        assert!((embedding_distance(&a, &b, Distance::Cosine) - 1.0).abs() < 1e-6);
        assert_eq!(embedding_distance(&a, &a, Distance::Euclidean), 0.0);
    }
}
