//! An identity-classification loss to train beside the triplet loss: CosFace's large-margin
//! cosine loss (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
//! CVPR 2018; with `margin` 0 it is NormFace's normalized softmax).
//!
//! Each training person gets a weight vector (a row of `weight`, trained with the network and
//! thrown away afterwards); the logits are the cosines between the normalized embedding and the
//! normalized weights, the true person's cosine lowered by `margin`, all multiplied by `scale`:
//!
//! `L = mean_i [ −log( e^{s(cos θ_{i,y_i} − m)} / (e^{s(cos θ_{i,y_i} − m)} + Σ_{j≠y_i} e^{s cos θ_{i,j}}) ) ]`
//!
//! Triplet mining sees the P×K people of a batch only; the classifier pulls every embedding
//! towards its person's vector and away from all other people's, every step. Re-identification
//! work on sets as small as ours trains both together (Luo et al., "Bag of Tricks and a Strong
//! Baseline for Deep Person Re-identification", CVPRW 2019: ID loss + triplet loss).

use crate::{Error, Result};
use candle_core::{DType, Tensor, D};

/// Settings of [`cosface_loss`] as used in training (see [`crate::train::TrainOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IdLoss {
    /// Weight of this loss in the sum with the triplet loss.
    pub weight: f64,
    /// Logit scale `s`.
    pub scale: f64,
    /// Additive cosine margin `m`.
    pub margin: f64,
    /// Only people with at least this many training images get a class (others, such as the
    /// one-image people of [`crate::train::TrainOptions::singletons_per_batch`], take part in
    /// the triplet loss only): a class seen through one photo teaches the classifier that
    /// photo, not the person.
    #[serde(default = "default_min_images")]
    pub min_images: usize,
}

fn default_min_images() -> usize {
    2
}

impl Default for IdLoss {
    fn default() -> Self {
        Self {
            weight: 1.0,
            scale: 30.0,
            margin: 0.2,
            min_images: default_min_images(),
        }
    }
}

impl IdLoss {
    /// Checks the numbers: weight and scale positive and finite, margin in `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        let ok = self.weight.is_finite()
            && self.weight > 0.0
            && self.scale.is_finite()
            && self.scale > 0.0
            && (0.0..1.0).contains(&self.margin)
            && self.min_images >= 1;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "identity loss: weight {} and scale {} must be positive, margin {} in [0, 1), \
                 minimum images {} at least 1",
                self.weight, self.scale, self.margin, self.min_images
            )))
        }
    }
}

/// Rows of `x` (N, D) divided by `sqrt(|row|² + 1e-12)`: a zero row stays zero, and neither
/// value nor gradient is ever NaN.
fn normalize_rows(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// The CosFace loss of embeddings `emb` (N, D; normalized here, so any scale works) against
/// per-person weights `weight` (C, D) for integer `labels` (N,) in `0..C`, averaged over the
/// batch. Differentiable with respect to `emb` and `weight`.
///
/// # Errors
/// Shapes that do not fit, or a label ≥ C.
pub fn cosface_loss(
    emb: &Tensor,
    weight: &Tensor,
    labels: &Tensor,
    scale: f64,
    margin: f64,
) -> Result<Tensor> {
    let (n, d) = emb.dims2()?;
    let (c, dw) = weight.dims2()?;
    if d != dw || labels.dims() != [n] {
        return Err(Error::InvalidArgument(format!(
            "cosface_loss: embeddings {:?}, weights {:?}, labels {:?} do not fit",
            emb.dims(),
            weight.dims(),
            labels.dims()
        )));
    }
    let labels = labels.to_dtype(DType::U32)?;
    let lv = labels.to_vec1::<u32>()?;
    if let Some(&bad) = lv.iter().find(|&&l| l as usize >= c) {
        return Err(Error::InvalidArgument(format!(
            "cosface_loss: label {bad} but only {c} classes"
        )));
    }
    let cos = normalize_rows(emb)?.matmul(&normalize_rows(weight)?.t()?)?;
    // Margin on the true class: subtract m at (i, y_i).
    let mut onehot = vec![0f32; n * c];
    for (i, &l) in lv.iter().enumerate() {
        onehot[i * c + l as usize] = margin as f32;
    }
    let onehot = Tensor::from_vec(onehot, (n, c), emb.device())?.to_dtype(cos.dtype())?;
    let logits = ((cos - onehot)? * scale)?;
    Ok(candle_nn::loss::cross_entropy(&logits, &labels)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The loss in f64 with explicit loops.
    fn reference(emb: &[Vec<f64>], w: &[Vec<f64>], labels: &[usize], s: f64, m: f64) -> f64 {
        let unit = |v: &Vec<f64>| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<_>>()
        };
        let mut total = 0.0;
        for (e, &y) in emb.iter().zip(labels) {
            let e = unit(e);
            let logits: Vec<f64> = w
                .iter()
                .enumerate()
                .map(|(j, wj)| {
                    let cos: f64 = unit(wj).iter().zip(&e).map(|(a, b)| a * b).sum();
                    s * (cos - if j == y { m } else { 0.0 })
                })
                .collect();
            let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
            let lse = mx + logits.iter().map(|l| (l - mx).exp()).sum::<f64>().ln();
            total += lse - logits[y];
        }
        total / emb.len() as f64
    }

    fn data() -> (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<usize>) {
        let emb = (0..6)
            .map(|i| {
                (0..4)
                    .map(|k| ((i * 7 + k * 3) as f64 * 0.37).sin())
                    .collect()
            })
            .collect();
        let w = (0..5)
            .map(|j| {
                (0..4)
                    .map(|k| ((j * 5 + k * 11) as f64 * 0.53).cos() * 2.0)
                    .collect()
            })
            .collect();
        (emb, w, vec![0, 0, 3, 3, 4, 1])
    }

    fn tensor(v: &[Vec<f64>]) -> Tensor {
        let flat: Vec<f32> = v.iter().flatten().map(|&x| x as f32).collect();
        Tensor::from_vec(flat, (v.len(), v[0].len()), &Device::Cpu).unwrap()
    }

    fn label_tensor(labels: &[usize]) -> Tensor {
        let v: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        Tensor::from_vec(v, labels.len(), &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_the_loop_reference() {
        let (emb, w, labels) = data();
        let lt = label_tensor(&labels);
        for (s, m) in [(1.0, 0.0), (30.0, 0.2), (16.0, 0.35)] {
            let got = cosface_loss(&tensor(&emb), &tensor(&w), &lt, s, m)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let want = reference(&emb, &w, &labels, s, m);
            assert!(
                (f64::from(got) - want).abs() < 1e-4 * want.max(1.0),
                "s {s} m {m}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (emb, w, labels) = data();
        let lt = label_tensor(&labels);
        let (s, m) = (8.0, 0.2);
        let ev = Var::from_tensor(&tensor(&emb).to_dtype(DType::F64).unwrap()).unwrap();
        let wv = Var::from_tensor(&tensor(&w).to_dtype(DType::F64).unwrap()).unwrap();
        let loss = cosface_loss(ev.as_tensor(), wv.as_tensor(), &lt, s, m).unwrap();
        let g = loss.backward().unwrap();
        let ge = g.get(ev.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let gw = g.get(wv.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let h = 1e-6;
        for (which, grad) in [(0, &ge), (1, &gw)] {
            for i in 0..grad.len() {
                for k in 0..grad[0].len() {
                    let (mut e1, mut w1) = (emb.clone(), w.clone());
                    let (mut e2, mut w2) = (emb.clone(), w.clone());
                    if which == 0 {
                        e1[i][k] += h;
                        e2[i][k] -= h;
                    } else {
                        w1[i][k] += h;
                        w2[i][k] -= h;
                    }
                    let fd = (reference(&e1, &w1, &labels, s, m)
                        - reference(&e2, &w2, &labels, s, m))
                        / (2.0 * h);
                    assert!(
                        (grad[i][k] - fd).abs() < 1e-6,
                        "{} [{i}][{k}]: {} vs {fd}",
                        ["emb", "weight"][which],
                        grad[i][k]
                    );
                }
            }
        }
    }

    #[test]
    fn zero_embedding_gives_no_nan_and_bad_input_is_an_error() {
        let emb = Var::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::ones((4, 3), DType::F32, &Device::Cpu).unwrap();
        let labels = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        let l = cosface_loss(emb.as_tensor(), &w, &labels, 30.0, 0.2).unwrap();
        assert!(l.to_scalar::<f32>().unwrap().is_finite());
        let g = l.backward().unwrap();
        let ge = g.get(emb.as_tensor()).unwrap().flatten_all().unwrap();
        assert!(ge.to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()));
        let emb = emb.as_tensor();
        let bad = Tensor::new(&[1u32, 4], &Device::Cpu).unwrap();
        assert!(cosface_loss(emb, &w, &bad, 30.0, 0.2).is_err());
        assert!(cosface_loss(emb, &w.t().unwrap(), &labels, 30.0, 0.2).is_err());
        assert!(IdLoss {
            margin: 1.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(IdLoss::default().validate().is_ok());
    }
}
