//! compact64 training and inference throughput: candle's built-in ops against `candle_face::ops`.
//!
//! The network is the fixed reference of `../shared/reference/bench_torch.py`: input 3×64×64,
//! four blocks Conv3×3 (pad 1, no bias) → BatchNorm2d (training mode) → ReLU → MaxPool2d(2) with
//! 32, 64, 128, 256 channels, global average pool, Linear(256 → 128), L2 normalization.
//!
//! Training step: batch 64 of random data, forward, loss, backward, Adam (lr 1e-3) written with
//! candle tensor ops, BatchNorm running-statistics update. The loss is NOT the batch-hard triplet
//! loss of the PyTorch script (not in this crate yet): it is `Σ (e − t)²` against fixed random
//! unit targets, which costs a negligible fraction of the step either way.
//!
//! Configurations run interleaved in one process (one step of each in turn) so machine load
//! affects them alike; the ratio is the figure to quote. Prints one JSON line per result.
//!
//! Run: `cargo bench --bench compact_train` (env `STEPS`, default 12 timed steps after 3 warm-up).

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use candle_face::ops;
use candle_nn::{BatchNorm, BatchNormConfig, VarBuilder, VarMap};

const CHANNELS: [usize; 4] = [32, 64, 128, 256];
const EMBED: usize = 128;
const EPS: f64 = 1e-5;

/// Which kernels a network uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernels {
    /// candle's conv2d, candle-nn's BatchNorm, relu, max_pool2d (whose gradient is wrong).
    Builtin,
    /// `candle_face::ops`: conv2d, batch_norm_train, relu_max_pool2d.
    Custom,
}

impl Kernels {
    fn name(self) -> &'static str {
        match self {
            Kernels::Builtin => "candle-builtin",
            Kernels::Custom => "candle-face-ops",
        }
    }
}

struct Block {
    w: Var,
    bn: BatchNorm,
    gamma: Var,
    beta: Var,
    running_mean: Var,
    running_var: Var,
}

struct Net {
    blocks: Vec<Block>,
    fc_w: Var,
    fc_b: Var,
    kernels: Kernels,
}

impl Net {
    fn new(kernels: Kernels, dev: &Device) -> Result<(Self, VarMap)> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, dev);
        let mut blocks = Vec::new();
        let mut cin = 3;
        for (i, &cout) in CHANNELS.iter().enumerate() {
            let fan_in = (cin * 9) as f64;
            let w = Var::from_tensor(
                &(Tensor::randn(0f32, 1., (cout, cin, 3, 3), dev)? * (2.0 / fan_in).sqrt())?,
            )?;
            let cfg = BatchNormConfig {
                eps: EPS,
                ..Default::default()
            };
            let bn = candle_nn::batch_norm(cout, cfg, vb.pp(format!("bn{i}")))?;
            let data = vm
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("lock".into()))?;
            let get = |n: &str| {
                data.get(&format!("bn{i}.{n}"))
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(n.into()))
            };
            blocks.push(Block {
                w,
                gamma: get("weight")?,
                beta: get("bias")?,
                running_mean: get("running_mean")?,
                running_var: get("running_var")?,
                bn,
            });
            cin = cout;
        }
        let fc_w = Var::from_tensor(
            &(Tensor::randn(0f32, 1., (EMBED, cin), dev)? / (cin as f64).sqrt())?,
        )?;
        let fc_b = Var::zeros(EMBED, DType::F32, dev)?;
        Ok((
            Self {
                blocks,
                fc_w,
                fc_b,
                kernels,
            },
            vm,
        ))
    }

    fn vars(&self) -> Vec<Var> {
        let mut v: Vec<Var> = Vec::new();
        for b in &self.blocks {
            v.extend([b.w.clone(), b.gamma.clone(), b.beta.clone()]);
        }
        v.extend([self.fc_w.clone(), self.fc_b.clone()]);
        v
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for b in &self.blocks {
            x = match self.kernels {
                Kernels::Builtin => x
                    .conv2d(&b.w, 1, 1, 1, 1)?
                    .apply_t(&b.bn, train)?
                    .relu()?
                    .max_pool2d(2)?,
                Kernels::Custom => {
                    let y = ops::conv2d(&x, &b.w, 1, (1, 1))?;
                    let y = if train {
                        let (n, _, h, w) = y.dims4()?;
                        let (y, mean, var) = ops::batch_norm_train(&y, &b.gamma, &b.beta, EPS)?;
                        ops::update_running_stats(
                            &b.running_mean,
                            &b.running_var,
                            &mean,
                            &var,
                            n * h * w,
                            0.1,
                        )?;
                        y
                    } else {
                        let c = b.gamma.dim(0)?;
                        let a =
                            (b.gamma.as_tensor() / (b.running_var.as_tensor() + EPS)?.sqrt()?)?;
                        let shift = (b.beta.as_tensor() - (b.running_mean.as_tensor() * &a)?)?;
                        y.broadcast_mul(&a.reshape((1, c, 1, 1))?)?
                            .broadcast_add(&shift.reshape((1, c, 1, 1))?)?
                    };
                    ops::relu_max_pool2d(&y, 2, 2)?
                }
            };
        }
        let x = x.mean(D::Minus1)?.mean(D::Minus1)?;
        let e = x
            .broadcast_matmul(&self.fc_w.t()?)?
            .broadcast_add(&self.fc_b)?;
        let norm = (e.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
        e.broadcast_div(&norm)
    }
}

/// Plain Adam (PyTorch defaults, no weight decay) from candle tensor ops.
struct Adam {
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
    lr: f64,
}

impl Adam {
    fn new(vars: Vec<Var>, lr: f64) -> Result<Self> {
        let m = vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            vars,
            m,
            v,
            t: 0,
            lr,
        })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            self.m[i] = ((&self.m[i] * b1)? + (g * (1.0 - b1))?)?;
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let upd = ((&self.m[i] / c1)? / ((&self.v[i] / c2)?.sqrt()? + eps)?)?;
            var.set(&(var.as_tensor() - (upd * self.lr)?)?)?;
        }
        Ok(())
    }
}

struct Trainer {
    net: Net,
    _vm: VarMap,
    opt: Adam,
}

impl Trainer {
    fn new(kernels: Kernels, dev: &Device) -> Result<Self> {
        let (net, vm) = Net::new(kernels, dev)?;
        let opt = Adam::new(net.vars(), 1e-3)?;
        Ok(Self { net, _vm: vm, opt })
    }

    fn step(&mut self, x: &Tensor, target: &Tensor) -> Result<f32> {
        let e = self.net.forward(x, true)?;
        let loss = (e - target)?.sqr()?.sum_all()?;
        let grads = loss.backward()?;
        self.opt.step(&grads)?;
        loss.to_scalar::<f32>()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    // Keep large activation buffers in the heap instead of mmap/munmap on every step
    // (measured ~2× for candle's built-ins, see ../shared/CANDLE-NOTES.md).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
    let dev = Device::Cpu;
    let steps: usize = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let warmup = 3;
    let threads = candle_core::utils::get_num_threads();
    let kinds = [Kernels::Builtin, Kernels::Custom];

    // Training, interleaved.
    let batch = 64;
    let x = Tensor::randn(0f32, 1., (batch, 3, 64, 64), &dev)?;
    let t = Tensor::randn(0f32, 1., (batch, EMBED), &dev)?;
    let target = t.broadcast_div(&t.sqr()?.sum_keepdim(1)?.sqrt()?)?;
    let mut trainers = kinds
        .iter()
        .map(|&k| Trainer::new(k, &dev))
        .collect::<Result<Vec<_>>>()?;
    // Same starting weights everywhere, so the first losses must agree (a sanity check).
    let start = trainers[0].net.vars();
    for tr in &trainers[1..] {
        for (dst, src) in tr.net.vars().iter().zip(&start) {
            dst.set(src.as_tensor())?;
        }
    }
    let mut first_losses = Vec::new();
    let mut times = vec![Vec::new(); kinds.len()];
    let load_before = load();
    for step in 0..warmup + steps {
        for (i, tr) in trainers.iter_mut().enumerate() {
            let t0 = Instant::now();
            let loss = tr.step(&x, &target)?;
            let dt = t0.elapsed().as_secs_f64();
            if !loss.is_finite() {
                candle_core::bail!("{}: non-finite loss", kinds[i].name())
            }
            if step >= warmup {
                times[i].push(dt);
            }
            if step == 0 {
                first_losses.push(loss);
            }
        }
    }
    println!("{{\"bench\":\"compact64-train\",\"first_step_losses\":{first_losses:?}}}");
    let meds: Vec<f64> = times.into_iter().map(median).collect();
    for (k, &s) in kinds.iter().zip(&meds) {
        println!(
            "{{\"bench\":\"compact64-train\",\"impl\":\"{}\",\"batch\":{batch},\"threads\":{threads},\"steps\":{steps},\"step_s\":{s:.4},\"images_per_s\":{:.1},\"loadavg_before\":\"{load_before}\",\"loadavg_after\":\"{}\"}}",
            k.name(),
            batch as f64 / s,
            load()
        );
    }
    println!(
        "{{\"bench\":\"compact64-train\",\"speedup_ops_over_builtin\":{:.2}}}",
        meds[0] / meds[1]
    );

    // Inference: batch-1 latency and batch-32 throughput, eval mode, interleaved.
    let x1 = Tensor::randn(0f32, 1., (1, 3, 64, 64), &dev)?;
    let x32 = Tensor::randn(0f32, 1., (32, 3, 64, 64), &dev)?;
    let nets: Vec<&Net> = trainers.iter().map(|t| &t.net).collect();
    let (mut lat, mut thr) = (vec![Vec::new(); kinds.len()], vec![Vec::new(); kinds.len()]);
    for step in 0..warmup + 4 * steps {
        for (i, net) in nets.iter().enumerate() {
            let t0 = Instant::now();
            net.forward(&x1, false)?.to_vec2::<f32>()?;
            let dt = t0.elapsed().as_secs_f64();
            if step >= warmup {
                lat[i].push(dt);
            }
            if step % 4 == 0 {
                let t0 = Instant::now();
                net.forward(&x32, false)?.to_vec2::<f32>()?;
                let dt = t0.elapsed().as_secs_f64();
                if step >= warmup {
                    thr[i].push(dt);
                }
            }
        }
    }
    for (i, k) in kinds.iter().enumerate() {
        println!(
            "{{\"bench\":\"compact64-infer\",\"impl\":\"{}\",\"threads\":{threads},\"batch1_latency_ms\":{:.2},\"batch32_images_per_s\":{:.1},\"loadavg_after\":\"{}\"}}",
            k.name(),
            1000.0 * median(lat[i].clone()),
            32.0 / median(thr[i].clone()),
            load()
        );
    }
    Ok(())
}
