//! Distances between embeddings, apart from the losses that use them (as pytorch-metric-learning
//! keeps `distances/` apart from `losses/`): the [`Distance`] a model is trained and compared
//! with, pairwise / cross / paired distance matrices, and the one row [`l2_normalize`].
//!
//! The euclidean distance follows Olivier Moindrot's "Triplet Loss and Online Triplet Mining in
//! TensorFlow" (2018) and its PyTorch equivalent (`tests/triplet_parity.rs`): the
//! squared distance is expanded as `‖a‖² − 2a·b + ‖b‖²`, clamped at 0 (the expansion can round to a
//! tiny negative number), and its square root is *safe*: exact zeros are replaced by `1e-16` before
//! the root and set back to 0 afterwards, so their gradient is 0 and never NaN.

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

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

impl std::fmt::Display for Distance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Distance::Euclidean => "euclidean",
            Distance::SquaredEuclidean => "squared_euclidean",
            Distance::Cosine => "cosine",
        })
    }
}

impl std::str::FromStr for Distance {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "euclidean" => Ok(Distance::Euclidean),
            "squared_euclidean" | "squared-euclidean" | "squared" => Ok(Distance::SquaredEuclidean),
            "cosine" => Ok(Distance::Cosine),
            other => Err(Error::InvalidArgument(format!(
                "unknown distance {other:?} (expected euclidean, squared_euclidean or cosine)"
            ))),
        }
    }
}

/// Smallest squared norm [`l2_normalize`] divides by: PyTorch's `F.normalize` floors the norm at
/// `1e-12`, so its square at `1e-24`.
pub const L2_EPS: f64 = 1e-24;

/// Checks that `x` is a 2-D float tensor and returns its shape.
fn dims2(x: &Tensor, what: &str) -> Result<(usize, usize)> {
    match x.dims() {
        [n, d] => Ok((*n, *d)),
        dims => Err(Error::InvalidArgument(format!(
            "{what} must be a 2-D (N, D) tensor, got shape {dims:?}"
        ))),
    }
}

/// Returns `x` with its negative entries set to 0; the gradient is passed where `x >= 0` (as
/// PyTorch's `clamp(min=0)`) and is 0 elsewhere.
fn clamp_min_zero(x: &Tensor) -> Result<Tensor> {
    let keep = x.ge(0.0)?.to_dtype(x.dtype())?;
    Ok(x.mul(&keep)?)
}

/// Safe square root of non-negative squared distances: exact zeros stay 0 with a zero gradient.
///
/// `sqrt(d + 1e-16·[d = 0]) · (1 − [d = 0])`, as in Moindrot's reference.
pub fn safe_sqrt(squared: &Tensor) -> Result<Tensor> {
    let zero = squared.eq(0.0)?.to_dtype(squared.dtype())?;
    let root = (squared + (&zero * 1e-16)?)?.sqrt()?;
    Ok(root.mul(&(1.0 - zero)?)?)
}

/// L2-normalises the rows of a (N, D) tensor as PyTorch's `F.normalize(x, p=2, dim=-1)`:
/// `x / max(‖x‖, 1e-12)`, written as `sqrt(max(‖x‖², 1e-24))` so that a zero row gives zeros
/// with a finite gradient.
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.maximum(L2_EPS)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// `‖a‖² − 2a·b + ‖b‖²` from the squared norms of the rows (`rows_sq`, (N,)), of the columns
/// (`cols_sq`, (M,)) and the dot products (`dot`, (N, M)), in the reference's order of operations
/// (`cols[None, :] − 2 dot + rows[:, None]`), clamped at 0; its safe square root for
/// [`Distance::Euclidean`].
fn euclidean_from_dots(
    rows_sq: &Tensor,
    dot: &Tensor,
    cols_sq: &Tensor,
    distance: Distance,
) -> Result<Tensor> {
    let d = cols_sq
        .unsqueeze(0)?
        .broadcast_sub(&(dot * 2.0)?)?
        .broadcast_add(&rows_sq.unsqueeze(1)?)?;
    let d = clamp_min_zero(&d)?;
    if distance == Distance::Euclidean {
        safe_sqrt(&d)
    } else {
        Ok(d)
    }
}

/// All pairwise distances between the rows of `x`: (B, D) → (B, B).
///
/// The diagonal is exactly 0 for every distance: for the euclidean distances the squared norms are
/// taken from the diagonal of the same Gram matrix `x xᵀ` (so `‖a‖² − 2a·a + ‖a‖²` cancels exactly),
/// and for the cosine distance the diagonal is masked.
pub fn pairwise_distance(x: &Tensor, distance: Distance) -> Result<Tensor> {
    let (b, _) = dims2(x, "embeddings")?;
    let eye = Tensor::eye(b, x.dtype(), x.device())?;
    match distance {
        Distance::Euclidean | Distance::SquaredEuclidean => {
            let dot = x.matmul(&x.t()?)?;
            let sq = dot.mul(&eye)?.sum(1)?; // diagonal of the Gram matrix, (B,)
            euclidean_from_dots(&sq, &dot, &sq, distance)
        }
        Distance::Cosine => {
            let n = l2_normalize(x)?;
            let d = (1.0 - n.matmul(&n.t()?)?)?;
            let d = clamp_min_zero(&d)?;
            Ok(d.mul(&(1.0 - eye)?)?)
        }
    }
}

/// Distances between every row of `a` and every row of `b`: (N, D), (M, D) → (N, M).
pub fn cross_distance(a: &Tensor, b: &Tensor, distance: Distance) -> Result<Tensor> {
    let (_, da) = dims2(a, "a")?;
    let (_, db) = dims2(b, "b")?;
    if da != db {
        return Err(Error::InvalidArgument(format!(
            "cross_distance: embedding sizes differ ({da} vs {db})"
        )));
    }
    match distance {
        Distance::Euclidean | Distance::SquaredEuclidean => {
            let dot = a.matmul(&b.t()?)?;
            let sa = a.sqr()?.sum(1)?;
            let sb = b.sqr()?.sum(1)?;
            euclidean_from_dots(&sa, &dot, &sb, distance)
        }
        Distance::Cosine => {
            let d = (1.0 - l2_normalize(a)?.matmul(&l2_normalize(b)?.t()?)?)?;
            clamp_min_zero(&d)
        }
    }
}

/// Row-wise distance between paired rows: (N, D), (N, D) → (N,), computed directly from the
/// differences (no expansion), as Keras / FaceNet's offline triplet loss does.
pub fn paired_distance(a: &Tensor, b: &Tensor, distance: Distance) -> Result<Tensor> {
    let (na, da) = dims2(a, "a")?;
    let (nb, db) = dims2(b, "b")?;
    if (na, da) != (nb, db) {
        return Err(Error::InvalidArgument(format!(
            "paired_distance: shapes differ ({na}, {da}) vs ({nb}, {db})"
        )));
    }
    match distance {
        Distance::Euclidean => safe_sqrt(&(a - b)?.sqr()?.sum(1)?),
        Distance::SquaredEuclidean => Ok((a - b)?.sqr()?.sum(1)?),
        Distance::Cosine => {
            let cos = (l2_normalize(a)? * l2_normalize(b)?)?.sum(1)?;
            clamp_min_zero(&(1.0 - cos)?)
        }
    }
}

/// Ensures `x` is a float tensor the losses support (f32, or f64 for exact gradient checks).
pub(crate) fn ensure_float(x: &Tensor, what: &str) -> Result<()> {
    if !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Err(Error::InvalidArgument(format!(
            "{what} must be f32 or f64, got {:?}",
            x.dtype()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn l2_normalize_unit_rows_and_zero_row() {
        let x = Tensor::new(&[[3f32, 4.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let y = l2_normalize(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, vec![vec![0.6, 0.8], vec![0.0, 0.0]]);
    }
}
