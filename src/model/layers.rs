//! Small building blocks shared by the models: L2 normalisation and a max-pool with a correct
//! gradient.
//!
//! candle 0.11's `max_pool2d` backward is wrong (a unique maximum of a 2×2 window receives a quarter
//! of its gradient), so the 2×2 pool here is built from a reshape and a `max` reduction, whose
//! gradient goes to the maximum in full.

use candle_core::{Result, Tensor, D};

/// Smallest squared norm used by [`l2_normalize`], so a zero vector gives zeros, not NaN.
pub const L2_EPS: f64 = 1e-12;

/// L2-normalises the rows of a (N, D) tensor: `x / sqrt(max(‖x‖², eps))`.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .clamp(L2_EPS, f64::MAX)?
        .sqrt()?;
    x.broadcast_div(&norm)
}

/// 2×2 max-pooling with stride 2 (floor mode: an odd last row/column is dropped), with the gradient
/// sent to the maximum of each window (to every maximum when several tie).
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    let x = if h % 2 != 0 || w % 2 != 0 {
        x.narrow(2, 0, ho * 2)?.narrow(3, 0, wo * 2)?
    } else {
        x.clone()
    };
    x.contiguous()?
        .reshape((n, c, ho, 2, wo, 2))?
        .max(5)?
        .max(3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn l2_normalize_unit_rows_and_zero_row() {
        let x = Tensor::new(&[[3f32, 4.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let y = l2_normalize(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, vec![vec![0.6, 0.8], vec![0.0, 0.0]]);
    }

    #[test]
    fn max_pool_value_and_full_gradient() {
        // The candle 0.11 bug gives d/dx = [0, 0, 0, 0.25] here; the correct gradient is [0, 0, 0, 1].
        let x = Var::new(&[[[[1f32, 2.0], [3.0, 4.0]]]], &Device::Cpu).unwrap();
        let y = max_pool2x2(x.as_tensor()).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![4.0]
        );
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(gx, vec![0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn max_pool_matches_brute_force() {
        let (n, c, h, w) = (2, 3, 6, 5);
        let data: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 7919) % 101) as f32 - 50.0)
            .collect();
        let x = Tensor::from_vec(data.clone(), (n, c, h, w), &Device::Cpu).unwrap();
        let y = max_pool2x2(&x).unwrap();
        assert_eq!(y.dims4().unwrap(), (n, c, 3, 2));
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut k = 0;
        for b in 0..n * c {
            for i in 0..3 {
                for j in 0..2 {
                    let at = |di: usize, dj: usize| data[b * h * w + (2 * i + di) * w + 2 * j + dj];
                    let m = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                    assert_eq!(y[k], m);
                    k += 1;
                }
            }
        }
    }
}
