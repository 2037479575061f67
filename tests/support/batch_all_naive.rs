//! The naive batch-all triplet loss: the (B, B, B) triplet tensor built with candle ops, as the
//! PyTorch reference builds it. Not part of the library: the tests check the chunked
//! implementation against it, and the benchmarks compare their time and memory. Included with
//! `#[path = ".../support/batch_all_naive.rs"] mod batch_all_naive;`.

use candle_core::{DType, Tensor};
use candle_face::loss::{softplus_tensor, triplet_mask, BatchAllScan, TripletTerm};
use candle_face::{Error, Result};

/// Triplets whose hinge term is at most this are not counted as positive (the reference's
/// threshold, as in the chunked implementation).
const POSITIVE_EPS: f64 = 1e-16;

/// Batch-all triplet loss materialising the (B, B, B) tensor `d[a,p] − d[a,n] (+ m)` with candle
/// ops, exactly as the PyTorch reference does. O(B³) memory: the independent check of
/// [`candle_face::loss::batch_all_chunked`] in the tests, and its baseline in the benchmarks.
///
/// Returns the scalar loss and the triplet counts (`sum` is the sum of the terms).
pub fn batch_all_naive(
    dist: &Tensor,
    labels: &Tensor,
    term: TripletTerm,
) -> Result<(Tensor, BatchAllScan)> {
    let valid = triplet_mask(labels)?.to_dtype(dist.dtype())?;
    let b = valid.dim(0)?;
    if dist.dims() != [b, b] {
        return Err(Error::InvalidArgument(format!(
            "batch-all: distance matrix must be ({b}, {b}), got {:?}",
            dist.dims()
        )));
    }
    let diff = dist.unsqueeze(2)?.broadcast_sub(&dist.unsqueeze(1)?)?;
    let num_valid = valid.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? as usize;
    match term {
        TripletTerm::Hinge { margin } => {
            let t = ((diff + f64::from(margin))? * &valid)?;
            let t = (&t * t.gt(0.0)?.to_dtype(t.dtype())?)?;
            let pos = t.gt(POSITIVE_EPS)?.to_dtype(t.dtype())?.sum_all()?;
            let sum = t.sum_all()?;
            let loss = sum.div(&(&pos + POSITIVE_EPS)?)?;
            let scan = BatchAllScan {
                sum: sum.to_dtype(DType::F64)?.to_scalar()?,
                active: pos.to_dtype(DType::F64)?.to_scalar::<f64>()? as usize,
                valid: num_valid,
            };
            Ok((loss, scan))
        }
        TripletTerm::SoftPlus => {
            let sp = softplus_tensor(&diff)?;
            let sum = (sp * &valid)?.sum_all()?;
            let active = (diff.gt(0.0)?.to_dtype(valid.dtype())? * &valid)?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()? as usize;
            let loss = (&sum / (num_valid.max(1) as f64))?;
            let scan = BatchAllScan {
                sum: sum.to_dtype(DType::F64)?.to_scalar()?,
                active,
                valid: num_valid,
            };
            Ok((loss, scan))
        }
    }
}
