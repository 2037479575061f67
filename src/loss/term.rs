//! The per-triplet term `f(d(a,p) − d(a,n))` that every triplet loss averages: the hinge with a
//! margin (FaceNet) or the soft margin (Hermans, Beyer & Leibe 2017).

use std::fmt;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The per-triplet term applied to `x = d(a,p) − d(a,n)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripletTerm {
    /// `relu(x + margin)`.
    Hinge {
        /// The margin `m`.
        margin: f32,
    },
    /// `softplus(x)`, the soft margin: no margin to choose.
    SoftPlus,
}

impl Default for TripletTerm {
    fn default() -> Self {
        TripletTerm::Hinge { margin: 0.2 }
    }
}

impl fmt::Display for TripletTerm {
    /// `margin 0.2` or `soft margin`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TripletTerm::Hinge { margin } => write!(f, "margin {margin}"),
            TripletTerm::SoftPlus => f.write_str("soft margin"),
        }
    }
}

impl TripletTerm {
    /// Checks that a hinge's margin is finite and not negative.
    pub fn validate(&self) -> Result<()> {
        match *self {
            TripletTerm::Hinge { margin } if !margin.is_finite() || margin < 0.0 => {
                Err(Error::InvalidArgument(format!(
                    "triplet margin must be finite and ≥ 0, got {margin}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The terms of `x = d(a,p) − d(a,n)` (any shape) and how many are active (hinge:
    /// `x + m > 0`; soft margin: `x > 0`).
    pub(crate) fn apply(&self, x: &Tensor) -> Result<(Tensor, usize)> {
        let (t, gate) = match *self {
            TripletTerm::Hinge { margin } => {
                let t = (x + f64::from(margin))?;
                (hinge(&t)?, t)
            }
            TripletTerm::SoftPlus => (softplus_tensor(x)?, x.clone()),
        };
        let active = gate
            .gt(0.0)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()? as usize;
        Ok((t, active))
    }
}

/// `softplus(x) = log(1 + eˣ)` elementwise, with PyTorch's threshold (the identity above 20).
pub fn softplus_tensor(x: &Tensor) -> Result<Tensor> {
    let big = x.gt(20.0)?.to_dtype(x.dtype())?;
    let small = (1.0 - &big)?;
    let xs = x.mul(&small)?;
    let soft = ((xs.exp()? + 1.0)?.log()? * &small)?;
    Ok((soft + x.mul(&big)?)?)
}

/// `relu(x)` with PyTorch's gradient convention (0 at 0).
fn hinge(x: &Tensor) -> Result<Tensor> {
    Ok(x.mul(&x.gt(0.0)?.to_dtype(x.dtype())?)?)
}

/// PyTorch's `softplus` on one value (threshold 20: above it, the identity).
pub(crate) fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// The logistic function, `softplus'`, on one value.
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x > 20.0 {
        1.0
    } else {
        1.0 / (1.0 + (-x).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn margin_is_checked_only_for_the_hinge() {
        assert!(TripletTerm::Hinge { margin: -0.1 }.validate().is_err());
        assert!(TripletTerm::Hinge { margin: f32::NAN }.validate().is_err());
        assert!(TripletTerm::Hinge { margin: 0.0 }.validate().is_ok());
        assert!(TripletTerm::SoftPlus.validate().is_ok());
    }

    #[test]
    fn active_counts_follow_the_term() {
        let x = Tensor::new(&[-0.3f32, -0.1, 0.2], &Device::Cpu).unwrap();
        let (_, hinge) = TripletTerm::Hinge { margin: 0.2 }.apply(&x).unwrap();
        let (_, soft) = TripletTerm::SoftPlus.apply(&x).unwrap();
        assert_eq!((hinge, soft), (2, 1));
        assert_eq!(TripletTerm::default().to_string(), "margin 0.2");
        assert_eq!(TripletTerm::SoftPlus.to_string(), "soft margin");
    }
}
