//! Label masks for online triplet mining (Moindrot 2018, "Triplet Loss and Online Triplet Mining
//! in TensorFlow"): which (anchor, positive), (anchor, negative) pairs and (a, p, n) triplets are
//! valid in a batch, given one integer label per embedding.
//!
//! Masks are `u8` tensors of 0/1 (candle's boolean convention, as returned by comparisons); use
//! `.to_dtype(DType::F32)` to multiply with distances.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Reads a 1-D label tensor (u32, i64 or any integer dtype) into a vector of `i64`.
pub fn labels_to_vec(labels: &Tensor) -> Result<Vec<i64>> {
    if labels.rank() != 1 {
        return Err(Error::InvalidArgument(format!(
            "labels must be a 1-D tensor, got shape {:?}",
            labels.dims()
        )));
    }
    match labels.dtype() {
        DType::U8 | DType::U32 | DType::I64 => Ok(labels.to_dtype(DType::I64)?.to_vec1::<i64>()?),
        other => Err(Error::InvalidArgument(format!(
            "labels must be an integer tensor (u32 or i64), got {other:?}"
        ))),
    }
}

/// Builds a `u8` tensor of shape `dims` from a predicate on flat indices.
fn mask_tensor(dims: &[usize], device: &Device, f: impl Fn(usize) -> bool) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let data: Vec<u8> = (0..n).map(|i| u8::from(f(i))).collect();
    Ok(Tensor::from_vec(data, dims, device)?)
}

/// `mask[a, p] = 1` iff `a ≠ p` and `labels[a] = labels[p]`: the valid anchor–positive pairs, (B, B).
pub fn anchor_positive_mask(labels: &Tensor) -> Result<Tensor> {
    let y = labels_to_vec(labels)?;
    let b = y.len();
    mask_tensor(&[b, b], labels.device(), |i| {
        let (a, p) = (i / b, i % b);
        a != p && y[a] == y[p]
    })
}

/// `mask[a, n] = 1` iff `labels[a] ≠ labels[n]`: the valid anchor–negative pairs, (B, B).
pub fn anchor_negative_mask(labels: &Tensor) -> Result<Tensor> {
    let y = labels_to_vec(labels)?;
    let b = y.len();
    mask_tensor(&[b, b], labels.device(), |i| y[i / b] != y[i % b])
}

/// `mask[a, p, n] = 1` iff `a, p, n` are distinct, `labels[a] = labels[p]` and
/// `labels[a] ≠ labels[n]`: the valid triplets, (B, B, B). This is B³ bytes: meant for small batches
/// and tests; the batch-all loss itself never builds it.
pub fn triplet_mask(labels: &Tensor) -> Result<Tensor> {
    let y = labels_to_vec(labels)?;
    let b = y.len();
    mask_tensor(&[b, b, b], labels.device(), |i| {
        let (a, p, n) = (i / (b * b), (i / b) % b, i % b);
        a != p && a != n && p != n && y[a] == y[p] && y[a] != y[n]
    })
}

/// Per-batch label structure used by the losses: for each anchor, its positives and negatives.
#[derive(Debug, Clone)]
pub(crate) struct LabelSets {
    /// `positives[a]`: indices `p ≠ a` with the same label, ascending.
    pub positives: Vec<Vec<usize>>,
    /// `negatives[a]`: indices with another label, ascending.
    pub negatives: Vec<Vec<usize>>,
}

impl LabelSets {
    /// Groups the batch by label.
    pub fn new(y: &[i64]) -> Self {
        let b = y.len();
        let mut positives = Vec::with_capacity(b);
        let mut negatives = Vec::with_capacity(b);
        for a in 0..b {
            positives.push((0..b).filter(|&p| p != a && y[p] == y[a]).collect());
            negatives.push((0..b).filter(|&n| y[n] != y[a]).collect());
        }
        Self {
            positives,
            negatives,
        }
    }

    /// Number of valid (a, p, n) triplets.
    pub fn valid_triplets(&self) -> usize {
        self.positives
            .iter()
            .zip(&self.negatives)
            .map(|(p, n)| p.len() * n.len())
            .sum()
    }

    /// Whether anchor `a` has at least one positive and one negative.
    pub fn is_valid_anchor(&self, a: usize) -> bool {
        !self.positives[a].is_empty() && !self.negatives[a].is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_match_definitions() -> Result<()> {
        let labels = Tensor::new(&[0u32, 1, 0, 2, 1], &Device::Cpu)?;
        let ap = anchor_positive_mask(&labels)?.to_vec2::<u8>()?;
        let an = anchor_negative_mask(&labels)?.to_vec2::<u8>()?;
        assert_eq!(ap[0], vec![0, 0, 1, 0, 0]);
        assert_eq!(ap[1], vec![0, 0, 0, 0, 1]);
        assert_eq!(ap[3], vec![0, 0, 0, 0, 0]);
        assert_eq!(an[0], vec![0, 1, 0, 1, 1]);
        assert_eq!(an[3], vec![1, 1, 1, 0, 1]);
        let t = triplet_mask(&labels)?;
        let t = t.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()?;
        // anchors 0,2 (label 0): 1 positive × 3 negatives each; anchors 1,4: 1 × 3 each.
        assert_eq!(t, 12);
        assert_eq!(
            LabelSets::new(&labels_to_vec(&labels)?).valid_triplets(),
            12
        );
        Ok(())
    }

    #[test]
    fn i64_labels_accepted_and_float_rejected() -> Result<()> {
        let l64 = Tensor::new(&[3i64, 3, 4], &Device::Cpu)?;
        let ap = anchor_positive_mask(&l64)?.to_vec2::<u8>()?;
        assert_eq!(ap, vec![vec![0, 1, 0], vec![1, 0, 0], vec![0, 0, 0]]);
        let bad = Tensor::new(&[1f32, 2.0], &Device::Cpu)?;
        assert!(anchor_positive_mask(&bad).is_err());
        let bad2 = Tensor::new(&[[1u32, 2]], &Device::Cpu)?;
        assert!(anchor_positive_mask(&bad2).is_err());
        Ok(())
    }
}
