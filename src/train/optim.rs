//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019) with state that
//! can be saved and restored, so training resumes exactly where a checkpoint left it.
//!
//! candle-nn's `AdamW` keeps its moments private (so they cannot be checkpointed) and decays every
//! variable by default; here weight decay applies only to the variables chosen by the caller
//! (convolution and linear weights, not BatchNorm γ/β or biases), and BatchNorm running statistics
//! are never touched because they are not passed in.

use crate::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Learning rate (the schedule overrides it step by step).
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay for the decayed variables.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 5e-4,
        }
    }
}

/// One trainable variable with its moments.
#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    m: Var,
    v: Var,
    decay: bool,
}

/// AdamW over named variables.
#[derive(Debug)]
pub struct AdamW {
    slots: Vec<Slot>,
    cfg: AdamWConfig,
    step: u64,
}

impl AdamW {
    /// Creates the optimizer for `vars` (name, variable, whether weight decay applies).
    pub fn new(vars: Vec<(String, Var, bool)>, cfg: AdamWConfig) -> Result<Self> {
        let mut slots = Vec::with_capacity(vars.len());
        for (name, var, decay) in vars {
            let m = Var::zeros(var.shape(), var.dtype(), var.device())?;
            let v = Var::zeros(var.shape(), var.dtype(), var.device())?;
            slots.push(Slot {
                name,
                var,
                m,
                v,
                decay,
            });
        }
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            slots,
            cfg,
            step: 0,
        })
    }

    /// The number of updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Counts a step without updating anything (a step skipped because its loss was not finite),
    /// so the optimizer's step count stays equal to the training step.
    pub fn skip_step(&mut self) {
        self.step += 1;
    }

    /// Sets the learning rate used by the next [`step`](Self::step).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    /// Applies one update from the gradients in `grads`. Variables without a gradient are left
    /// unchanged (their moments too).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let t = self.step as i32;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2 = 1.0 - beta2.powi(t);
        for s in &self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let m = ((s.m.as_tensor() * beta1)? + (g * (1.0 - beta1))?)?;
            let v = ((s.v.as_tensor() * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&m / bc1)?;
            let v_hat = (&v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
            let theta = s.var.as_tensor();
            let theta = if s.decay && weight_decay > 0.0 {
                (theta * (1.0 - lr * weight_decay))?
            } else {
                theta.clone()
            };
            s.var.set(&(theta - (update * lr)?)?)?;
            s.m.set(&m)?;
            s.v.set(&v)?;
        }
        Ok(())
    }

    /// The optimizer state as named tensors (`adam.m.{name}`, `adam.v.{name}`) plus the step count.
    pub fn state(&self) -> (HashMap<String, Tensor>, u64) {
        let mut map = HashMap::with_capacity(self.slots.len() * 2);
        for s in &self.slots {
            map.insert(format!("adam.m.{}", s.name), s.m.as_tensor().clone());
            map.insert(format!("adam.v.{}", s.name), s.v.as_tensor().clone());
        }
        (map, self.step)
    }

    /// Restores a state produced by [`state`](Self::state).
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &self.slots {
            for (kind, var) in [("m", &s.m), ("v", &s.v)] {
                let key = format!("adam.{kind}.{}", s.name);
                let t = tensors.get(&key).ok_or_else(|| {
                    Error::Msg(format!("checkpoint has no optimizer tensor {key}"))
                })?;
                if t.shape() != var.shape() {
                    return Err(Error::Msg(format!(
                        "checkpoint optimizer tensor {key} has shape {:?}, expected {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                var.set(&t.to_device(var.device())?)?;
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One AdamW step against the closed form: with zero moments, the first update is
    /// `lr * g / (|g| + eps')` = `lr * sign(g)` (up to eps), plus decoupled decay.
    #[test]
    fn first_step_matches_closed_form() {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, -2.0, 0.5], &dev).unwrap();
        let b = Var::new(&[1.0f32, -2.0, 0.5], &dev).unwrap();
        let cfg = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.5,
            ..Default::default()
        };
        let mut opt = AdamW::new(
            vec![
                ("w".into(), w.clone(), true),
                ("b".into(), b.clone(), false),
            ],
            cfg,
        )
        .unwrap();
        // loss = sum(3 w) + sum(b^2): dw = 3, db = 2b.
        let loss = ((w.as_tensor() * 3.0).unwrap().sum_all().unwrap()
            + b.as_tensor().sqr().unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads).unwrap();
        let w1 = w.as_tensor().to_vec1::<f32>().unwrap();
        let b1 = b.as_tensor().to_vec1::<f32>().unwrap();
        for (i, &w0) in [1.0f32, -2.0, 0.5].iter().enumerate() {
            let expect_w = w0 * (1.0 - 0.1 * 0.5) - 0.1;
            assert!((w1[i] - expect_w).abs() < 1e-5, "{} vs {}", w1[i], expect_w);
            let expect_b = w0 - 0.1 * w0.signum();
            assert!((b1[i] - expect_b).abs() < 1e-5, "{} vs {}", b1[i], expect_b);
        }
        assert_eq!(opt.step_count(), 1);
    }

    #[test]
    fn state_round_trip() {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, 2.0], &dev).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), w.clone(), true)], Default::default()).unwrap();
        let grads = w
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&grads).unwrap();
        let (state, step) = opt.state();
        let w2 = Var::new(&[1.0f32, 2.0], &dev).unwrap();
        let mut opt2 = AdamW::new(vec![("w".into(), w2, true)], Default::default()).unwrap();
        opt2.load_state(&state, step).unwrap();
        let (state2, step2) = opt2.state();
        assert_eq!(step2, 1);
        for (k, v) in &state {
            assert_eq!(
                v.to_vec1::<f32>().unwrap(),
                state2[k].to_vec1::<f32>().unwrap()
            );
        }
    }
}
