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
        self.step_with(grads, true)
    }

    /// [`step`](Self::step), optionally without the fused CPU path (so tests can compare the
    /// two).
    fn step_with(&mut self, grads: &GradStore, allow_fused: bool) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.cfg.beta1.powi(t);
        let bc2 = 1.0 - self.cfg.beta2.powi(t);
        for s in &self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let decay = if s.decay { self.cfg.weight_decay } else { 0.0 };
            if allow_fused && fused::applies(s, g) {
                fused::step(s, g, self.cfg, decay, (bc1, bc2))?;
            } else {
                tensor_step(s, g, self.cfg, decay, (bc1, bc2))?;
            }
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

/// The update with candle tensor operations (any device and dtype).
fn tensor_step(
    s: &Slot,
    g: &Tensor,
    cfg: AdamWConfig,
    decay: f64,
    (bc1, bc2): (f64, f64),
) -> Result<()> {
    let AdamWConfig {
        lr,
        beta1,
        beta2,
        eps,
        ..
    } = cfg;
    let m = ((s.m.as_tensor() * beta1)? + (g * (1.0 - beta1))?)?;
    let v = ((s.v.as_tensor() * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
    let m_hat = (&m / bc1)?;
    let v_hat = (&v / bc2)?;
    let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
    let theta = s.var.as_tensor();
    let theta = if decay > 0.0 {
        (theta * (1.0 - lr * decay))?
    } else {
        theta.clone()
    };
    s.var.set(&(theta - (update * lr)?)?)?;
    s.m.set(&m)?;
    s.v.set(&v)?;
    Ok(())
}

/// The update on the CPU in three in-place passes over f32 memory (moments, then parameters)
/// instead of a dozen tensor operations that each allocate a parameter-sized result.
mod fused {
    use super::{AdamWConfig, Slot};
    use crate::ops::{f32_data, is_cpu_f32};
    use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor};
    use rayon::prelude::*;

    /// Elements per parallel task.
    const CHUNK: usize = 1 << 15;

    /// Name in error messages.
    const NAME: &str = "adamw";

    /// Whether the fused path can run: everything on the CPU in f32 and contiguous.
    pub(super) fn applies(s: &Slot, g: &Tensor) -> bool {
        [s.var.as_tensor(), s.m.as_tensor(), s.v.as_tensor(), g]
            .iter()
            .all(|t| is_cpu_f32(t) && t.is_contiguous())
    }

    fn data_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
            _ => candle_core::bail!("{NAME}: expects contiguous f32 storage"),
        }
    }

    /// `moment ← β·moment + (1 − β)·g^power` (power 1 or 2).
    struct Moment {
        beta: f32,
        square: bool,
    }

    impl InplaceOp2 for Moment {
        fn name(&self) -> &'static str {
            "candle-face-adamw-moment"
        }
        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<()> {
            let (m, g) = (data_mut(s1, l1)?, f32_data(s2, l2, NAME)?);
            if m.len() != g.len() {
                candle_core::bail!("adamw: moment and gradient sizes differ");
            }
            let (b, c) = (self.beta, 1.0 - self.beta);
            let square = self.square;
            m.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .for_each(|(m, g)| {
                    if square {
                        m.iter_mut()
                            .zip(g)
                            .for_each(|(m, &g)| *m = b * *m + c * (g * g));
                    } else {
                        m.iter_mut().zip(g).for_each(|(m, &g)| *m = b * *m + c * g);
                    }
                });
            Ok(())
        }
    }

    /// `θ ← θ·(1 − lr·decay) − lr·(m/bc1) / (√(v/bc2) + eps)`.
    struct Update {
        lr: f32,
        keep: f32,
        inv_bc1: f32,
        inv_bc2: f32,
        eps: f32,
    }

    impl InplaceOp3 for Update {
        fn name(&self) -> &'static str {
            "candle-face-adamw-update"
        }
        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> candle_core::Result<()> {
            let (w, m, v) = (
                data_mut(s1, l1)?,
                f32_data(s2, l2, NAME)?,
                f32_data(s3, l3, NAME)?,
            );
            if w.len() != m.len() || w.len() != v.len() {
                candle_core::bail!("adamw: parameter and moment sizes differ");
            }
            let Update {
                lr,
                keep,
                inv_bc1,
                inv_bc2,
                eps,
            } = *self;
            w.par_chunks_mut(CHUNK)
                .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
                .for_each(|(w, (m, v))| {
                    for ((w, &m), &v) in w.iter_mut().zip(m).zip(v) {
                        *w = *w * keep - lr * (m * inv_bc1) / ((v * inv_bc2).sqrt() + eps);
                    }
                });
            Ok(())
        }
    }

    /// One AdamW update of slot `s` with gradient `g` (see [`applies`]).
    pub(super) fn step(
        s: &Slot,
        g: &Tensor,
        cfg: AdamWConfig,
        decay: f64,
        (bc1, bc2): (f64, f64),
    ) -> candle_core::Result<()> {
        let (m, v) = (s.m.as_tensor(), s.v.as_tensor());
        m.inplace_op2(
            g,
            &Moment {
                beta: cfg.beta1 as f32,
                square: false,
            },
        )?;
        v.inplace_op2(
            g,
            &Moment {
                beta: cfg.beta2 as f32,
                square: true,
            },
        )?;
        s.var.as_tensor().inplace_op3(
            m,
            v,
            &Update {
                lr: cfg.lr as f32,
                keep: (1.0 - cfg.lr * decay) as f32,
                inv_bc1: (1.0 / bc1) as f32,
                inv_bc2: (1.0 / bc2) as f32,
                eps: cfg.eps as f32,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// An optimizer over `w` (weight decay) and `b` (none).
    fn decayed_w_plain_b(w: &Var, b: &Var, cfg: AdamWConfig) -> AdamW {
        AdamW::new(
            vec![
                ("w".into(), w.clone(), true),
                ("b".into(), b.clone(), false),
            ],
            cfg,
        )
        .unwrap()
    }

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
        let mut opt = decayed_w_plain_b(&w, &b, cfg);
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

    /// The fused CPU update and the tensor-op update against the same formula in f64, over
    /// several steps with decayed and undecayed variables, a sizeable tensor (several parallel
    /// chunks) and a tiny one.
    #[test]
    fn both_update_paths_match_the_formula_in_f64() {
        for fused in [true, false] {
            steps_match_the_formula(fused);
        }
    }

    fn steps_match_the_formula(fused: bool) {
        let dev = Device::Cpu;
        let n = 70_000;
        let init: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0)
            .collect();
        let w = Var::from_vec(init.clone(), n, &dev).unwrap();
        let b = Var::new(&[0.3f32, -1.0], &dev).unwrap();
        let cfg = AdamWConfig {
            lr: 0.01,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = decayed_w_plain_b(&w, &b, cfg);
        // Reference state in f64.
        let mut rw: Vec<f64> = init.iter().map(|&x| x as f64).collect();
        let mut rb = vec![0.3f64, -1.0];
        let (mut mw, mut vw) = (vec![0f64; n], vec![0f64; n]);
        let (mut mb, mut vb) = (vec![0f64; 2], vec![0f64; 2]);
        for t in 1..=5 {
            // loss = Σ w³/3 + Σ b²: dw = w², db = 2b (gradients from the current values).
            let loss = ((w.as_tensor().powf(3.0).unwrap() / 3.0)
                .unwrap()
                .sum_all()
                .unwrap()
                + b.as_tensor().sqr().unwrap().sum_all().unwrap())
            .unwrap();
            let gw: Vec<f64> = w
                .as_tensor()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&x| (x as f64).powi(2))
                .collect();
            let gb: Vec<f64> = b
                .as_tensor()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&x| 2.0 * x as f64)
                .collect();
            opt.step_with(&loss.backward().unwrap(), fused).unwrap();
            let (bc1, bc2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.999f64.powi(t));
            let upd = |p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], wd: f64| {
                for i in 0..p.len() {
                    m[i] = 0.9 * m[i] + 0.1 * g[i];
                    v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                    p[i] = p[i] * (1.0 - 0.01 * wd)
                        - 0.01 * (m[i] / bc1) / ((v[i] / bc2).sqrt() + 1e-8);
                }
            };
            upd(&mut rw, &mut mw, &mut vw, &gw, 0.1);
            upd(&mut rb, &mut mb, &mut vb, &gb, 0.0);
            let got_w = w.as_tensor().to_vec1::<f32>().unwrap();
            for i in (0..n).step_by(997).chain([n - 1]) {
                assert!(
                    (got_w[i] as f64 - rw[i]).abs() < 2e-5,
                    "step {t} w[{i}]: {} vs {}",
                    got_w[i],
                    rw[i]
                );
            }
            let got_b = b.as_tensor().to_vec1::<f32>().unwrap();
            for i in 0..2 {
                assert!((got_b[i] as f64 - rb[i]).abs() < 2e-5, "step {t} b[{i}]");
            }
        }
        // The saved moments are the updated ones.
        let (state, _) = opt.state();
        let m = state["adam.m.w"].to_vec1::<f32>().unwrap();
        assert!((m[123] as f64 - mw[123]).abs() < 1e-5);
    }
}
