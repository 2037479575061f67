//! Scoring pairs with a model: each distinct image is embedded once (in batches), then every
//! pair's distance is computed.

use crate::eval::pairs::Pair;
use crate::infer::{embedding_distance, Embedder};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Distances and labels of the pairs that could be scored.
#[derive(Debug, Clone, Default)]
pub struct ScoredPairs {
    /// Distance of each scored pair.
    pub distances: Vec<f32>,
    /// Whether each scored pair is the same person.
    pub same: Vec<bool>,
    /// Indices into the input pairs of the scored pairs.
    pub kept: Vec<usize>,
    /// Indices into the input pairs of the pairs that could not be scored (an image without a
    /// face, or unreadable).
    pub unscored: Vec<usize>,
    /// Why images (and so their pairs) were skipped: one message per unusable file.
    pub skipped: Vec<String>,
}

impl ScoredPairs {
    /// Number of input pairs, scored or not.
    pub fn total(&self) -> usize {
        self.kept.len() + self.unscored.len()
    }

    /// Fraction of the input pairs that were scored.
    pub fn scored_fraction(&self) -> f64 {
        self.kept.len() as f64 / self.total().max(1) as f64
    }
}

fn resolve(root: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// Embeds the distinct images of `pairs` (paths relative to `images`) and computes each pair's
/// distance. Unusable images (unreadable, or without a face when detection is on) are reported
/// in `skipped` and their pairs listed in `unscored`; it is an error only when no pair can be
/// scored.
pub fn score_pairs(embedder: &Embedder, pairs: &[Pair], images: &Path) -> Result<ScoredPairs> {
    if pairs.is_empty() {
        return Err(Error::InvalidArgument("no pairs to score".into()));
    }
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    let mut distinct: Vec<PathBuf> = Vec::new();
    for p in pairs {
        for x in [&p.a, &p.b] {
            let full = resolve(images, x);
            index.entry(full.clone()).or_insert_with(|| {
                distinct.push(full);
                distinct.len() - 1
            });
        }
    }
    let (emb, kept_images, failures) = embedder.embed_images_lossy(&distinct)?;
    let rows = emb.to_vec2::<f32>()?;
    let mut row_of: Vec<Option<usize>> = vec![None; distinct.len()];
    for (r, &i) in kept_images.iter().enumerate() {
        row_of[i] = Some(r);
    }
    let distance = embedder.config().distance;
    let mut out = ScoredPairs {
        skipped: failures.iter().map(|e| e.to_string()).collect(),
        ..Default::default()
    };
    for (k, p) in pairs.iter().enumerate() {
        let ra = row_of[index[&resolve(images, &p.a)]];
        let rb = row_of[index[&resolve(images, &p.b)]];
        if let (Some(ra), Some(rb)) = (ra, rb) {
            out.distances
                .push(embedding_distance(&rows[ra], &rows[rb], distance));
            out.same.push(p.same);
            out.kept.push(k);
        } else {
            out.unscored.push(k);
        }
    }
    if out.distances.is_empty() {
        return Err(Error::InvalidArgument(
            "none of the pairs could be scored: every pair has an unusable image".into(),
        ));
    }
    Ok(out)
}

/// The (FAR, TAR) at `threshold` (same iff `distance <= threshold`): the fractions of different
/// and of same pairs accepted. A class with no pairs gives 0.
pub fn operating_point(distances: &[f32], same: &[bool], threshold: f32) -> (f32, f32) {
    let (mut fa, mut nd, mut ta, mut ns) = (0usize, 0usize, 0usize, 0usize);
    for (&d, &s) in distances.iter().zip(same) {
        let accept = d <= threshold;
        if s {
            ns += 1;
            ta += accept as usize;
        } else {
            nd += 1;
            fa += accept as usize;
        }
    }
    let rate = |a: usize, n: usize| if n == 0 { 0.0 } else { a as f32 / n as f32 };
    (rate(fa, nd), rate(ta, ns))
}
