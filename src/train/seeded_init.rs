//! Reproducible initial weights: a [`VarBuilder`] backend that draws each new variable's random
//! initial values from the run's seed and the variable's name.
//!
//! candle's own `Init::var` draws from an unseeded thread-local generator, so two training runs
//! with the same `--seed` started from different weights. Here every variable gets its own
//! generator, seeded by the run's seed and a hash of its full name, so the values do not depend
//! on the order in which the model creates its variables either. The distributions are those of
//! `Init`: constants, normal, uniform, and Kaiming (normal or uniform, fan-in or fan-out, with the
//! non-linearity's gain).

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};

/// A [`VarMap`] whose new variables are initialised from a seed (see the module docs).
pub struct SeededVarMap {
    map: VarMap,
    seed: u64,
}

impl SeededVarMap {
    /// Wraps `map`; variables it already holds are returned as they are.
    pub fn new(map: VarMap, seed: u64) -> Self {
        Self { map, seed }
    }

    /// A [`VarBuilder`] that creates its variables in the wrapped map.
    pub fn var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn generator(&self, name: &str) -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(self.seed ^ fnv1a64(name).rotate_left(23))
    }

    fn initial_value(
        &self,
        shape: &Shape,
        name: &str,
        init: &Init,
        dev: &Device,
    ) -> Result<Tensor> {
        let n = shape.elem_count();
        let mut rng = self.generator(name);
        let values: Vec<f32> = match init {
            Init::Const(c) => vec![*c as f32; n],
            Init::Uniform { lo, up } => uniform(&mut rng, n, *lo, *up),
            Init::Randn { mean, stdev } => normal(&mut rng, n, *mean, *stdev),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        uniform(&mut rng, n, -bound, bound)
                    }
                    NormalOrUniform::Normal => normal(&mut rng, n, 0.0, std),
                }
            }
        };
        Tensor::from_vec(values, shape.clone(), dev)
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if self.map.data().lock().unwrap().contains_key(name) {
            return self.map.get(s, name, h, dtype, dev);
        }
        let value = self.initial_value(&s, name, &h, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&value)?;
        let tensor = var.as_tensor().clone();
        self.map
            .data()
            .lock()
            .unwrap()
            .insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.map.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.contains_tensor(name)
    }
}

fn uniform(rng: &mut impl Rng, n: usize, lo: f64, up: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
        .collect()
}

/// Normal samples by the Box–Muller transform.
fn normal(rng: &mut impl Rng, n: usize, mean: f64, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((mean + std * r * t.cos()) as f32);
        out.push((mean + std * r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::init::{FanInOut, NonLinearity};

    fn build(seed: u64, names: &[&str]) -> Vec<Vec<f32>> {
        let vb = SeededVarMap::new(VarMap::new(), seed).var_builder(DType::F32, &Device::Cpu);
        names
            .iter()
            .map(|n| {
                let t = vb.get_with_hints((64, 32), n, candle_nn::init::DEFAULT_KAIMING_NORMAL);
                t.unwrap().flatten_all().unwrap().to_vec1().unwrap()
            })
            .collect()
    }

    #[test]
    fn same_seed_same_values_whatever_the_order() {
        let a = build(7, &["x.weight", "y.weight"]);
        let b = build(7, &["y.weight", "x.weight"]);
        assert_eq!(a[0], b[1]);
        assert_eq!(a[1], b[0]);
        assert_ne!(a[0], a[1]);
        assert_ne!(build(8, &["x.weight"])[0], a[0]);
    }

    #[test]
    fn distributions_have_the_requested_moments() {
        let map = SeededVarMap::new(VarMap::new(), 3);
        let dev = Device::Cpu;
        let shape = Shape::from((256, 64, 3, 3));
        let kaiming = Init::Kaiming {
            dist: NormalOrUniform::Normal,
            fan: FanInOut::FanIn,
            non_linearity: NonLinearity::ReLU,
        };
        let v: Vec<f32> = map
            .initial_value(&shape, "k", &kaiming, &dev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let want = 2.0 / (64.0 * 9.0); // gain² / fan_in
        assert!(mean.abs() < 0.003, "mean {mean}");
        assert!(
            (var / want - 1.0).abs() < 0.03,
            "variance {var} want {want}"
        );
        let u = map
            .initial_value(&shape, "u", &Init::Uniform { lo: -0.5, up: 2.0 }, &dev)
            .unwrap();
        let u: Vec<f32> = u.flatten_all().unwrap().to_vec1().unwrap();
        assert!(u.iter().all(|&x| (-0.5..2.0).contains(&x)));
        let umean = u.iter().map(|&x| x as f64).sum::<f64>() / n;
        assert!((umean - 0.75).abs() < 0.01, "uniform mean {umean}");
    }

    #[test]
    fn existing_variables_are_kept() {
        let vm = VarMap::new();
        let first = build_in(&vm, 1);
        let second = build_in(&vm, 2);
        assert_eq!(first, second);
    }

    fn build_in(vm: &VarMap, seed: u64) -> Vec<f32> {
        let vb = SeededVarMap::new(vm.clone(), seed).var_builder(DType::F32, &Device::Cpu);
        vb.get_with_hints(
            16,
            "b",
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )
        .unwrap()
        .to_vec1()
        .unwrap()
    }
}
