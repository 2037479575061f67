//! Validation during training: identity-disjoint pairs, embedded without augmentation, scored by
//! accuracy at the best threshold and ROC AUC.

use crate::data::loader::{eval_tensor, ImageCache};
use crate::distance::Distance;
use crate::image::preprocess::Preprocess;
use crate::infer::embedding_distance;
use crate::model::EmbeddingNet;
use crate::Result;
use candle_core::Device;
use rand::SeedableRng;
use std::collections::HashMap;

/// Validation pairs over the images of an [`ImageCache`].
#[derive(Debug, Clone, Default)]
pub struct ValPairs {
    /// The distinct images, as (label, image index) in the cache.
    pub items: Vec<(usize, usize)>,
    /// Pairs as (index into `items`, index into `items`, same person).
    pub pairs: Vec<(usize, usize, bool)>,
}

impl ValPairs {
    /// Deterministic pairs, drawn as [`crate::eval::generate_pairs`] draws them: up to
    /// `max_each` same-person pairs, identity-balanced (each person with two or more images
    /// contributes one pair per round, so people with many images do not dominate, as in LFW's
    /// protocol), and as many different-person pairs (fewer only when fewer exist); never an
    /// image with itself, no pair twice.
    pub fn generate(images_per_person: &[usize], max_each: usize, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let same: Vec<((usize, usize), (usize, usize))> =
            crate::eval::pairs::balanced_same_pairs(images_per_person, max_each, &mut rng)
                .into_iter()
                .map(|(p, i, j)| ((p, i), (p, j)))
                .collect();
        let diff = crate::eval::pairs::different_pairs(images_per_person, same.len(), &mut rng);
        let mut index: HashMap<(usize, usize), usize> = HashMap::new();
        let mut items = Vec::new();
        let mut id = |x: (usize, usize)| -> usize {
            *index.entry(x).or_insert_with(|| {
                items.push(x);
                items.len() - 1
            })
        };
        let mut pairs = Vec::with_capacity(same.len() + diff.len());
        for (a, b) in same {
            pairs.push((id(a), id(b), true));
        }
        for (p, i, q, j) in diff {
            pairs.push((id((p, i)), id((q, j)), false));
        }
        Self { items, pairs }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// True when both same and different pairs exist (metrics need both).
    pub fn usable(&self) -> bool {
        self.pairs.iter().any(|p| p.2) && self.pairs.iter().any(|p| !p.2)
    }
}

/// Validation figures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ValResult {
    /// Accuracy at the best threshold.
    pub accuracy: f32,
    /// The best threshold.
    pub threshold: f32,
    /// ROC AUC.
    pub auc: f32,
    /// Number of pairs.
    pub pairs: usize,
}

/// Embeds the items of `pairs` (evaluation mode, batches of `batch`) and returns the pair distances.
pub fn pair_distances(
    net: &EmbeddingNet,
    cache: &ImageCache,
    pre: &Preprocess,
    pairs: &ValPairs,
    distance: Distance,
    device: &Device,
    batch: usize,
) -> Result<Vec<f32>> {
    let mut rows: Vec<Vec<f32>> = Vec::with_capacity(pairs.items.len());
    for chunk in pairs.items.chunks(batch.max(1)) {
        let x = eval_tensor(cache, pre, chunk, device)?;
        let e = net.embed(&x, pre.flip_tta)?.to_device(&Device::Cpu)?;
        rows.extend(e.to_vec2::<f32>()?);
    }
    Ok(pairs
        .pairs
        .iter()
        .map(|&(a, b, _)| embedding_distance(&rows[a], &rows[b], distance))
        .collect())
}

/// Scores distances against the pairs' labels.
pub fn score(distances: &[f32], pairs: &ValPairs) -> Result<ValResult> {
    let same: Vec<bool> = pairs.pairs.iter().map(|p| p.2).collect();
    let (threshold, accuracy) = crate::eval::metrics::best_threshold(distances, &same)?;
    let auc = crate::eval::metrics::auc(&crate::eval::metrics::roc(distances, &same)?);
    Ok(ValResult {
        accuracy,
        threshold,
        auc,
        pairs: pairs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn pairs_are_valid_distinct_and_deterministic() {
        let counts = [3, 1, 4, 2, 0, 5];
        let a = ValPairs::generate(&counts, 10, 7);
        let b = ValPairs::generate(&counts, 10, 7);
        assert_eq!(a.pairs, b.pairs);
        assert_eq!(a.pairs.iter().filter(|p| p.2).count(), 10);
        assert_eq!(a.pairs.iter().filter(|p| !p.2).count(), 10);
        let mut seen = BTreeSet::new();
        for &(x, y, same) in &a.pairs {
            let (ix, iy) = (a.items[x], a.items[y]);
            assert_ne!(ix, iy);
            assert_eq!(same, ix.0 == iy.0);
            assert!(ix.1 < counts[ix.0] && iy.1 < counts[iy.0]);
            assert!(seen.insert((ix.min(iy), ix.max(iy))));
        }
    }

    #[test]
    fn same_pairs_are_identity_balanced() {
        // One person with 780 possible pairs and four with one each: drawing uniformly over
        // pairs would almost never pick the small ones; balanced rounds pick each of them once
        // and the large person for the rest.
        let counts = [40, 2, 2, 2, 2];
        let v = ValPairs::generate(&counts, 8, 3);
        let mut per_person = [0usize; 5];
        for &(x, _, same) in &v.pairs {
            if same {
                per_person[v.items[x].0] += 1;
            }
        }
        assert_eq!(per_person, [4, 1, 1, 1, 1]);
    }
}
