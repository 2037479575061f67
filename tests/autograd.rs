//! Autograd through the vendored candle-core (`vendor/candle-core`, see `vendor/README.md`):
//! the patch stores a node's first gradient instead of adding it to zeros. These tests check
//! that gradients still sum over every use of a tensor, through views and the crate's custom
//! ops, against closed forms, and that the patch is in effect.

use candle_core::{Device, Tensor, Var};

type Res = candle_core::Result<()>;

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

#[test]
fn the_first_gradient_is_stored_not_added_to_zeros() -> Res {
    let cpu = Device::Cpu;
    let a = Var::new(&[1f32, 2., 3.], &cpu)?;
    let b = Var::new(&[4f32, 5., 6.], &cpu)?;
    let y = (a.as_tensor() + b.as_tensor())?.sum_all()?;
    let grads = y.backward()?;
    let (ga, gb) = (grads.get(&a).unwrap(), grads.get(&b).unwrap());
    close(&ga.to_vec1::<f32>()?, &[1.; 3], "d/da");
    close(&gb.to_vec1::<f32>()?, &[1.; 3], "d/db");
    // Unpatched candle-core adds each gradient to its own zero-filled tensor, so the two
    // inputs of an addition never share one.
    assert_eq!(
        ga.id(),
        gb.id(),
        "the vendored candle-core patch is not in effect (is [patch.crates-io] still in Cargo.toml?)"
    );
    assert!(ga.is_contiguous());
    Ok(())
}

#[test]
fn gradients_sum_over_every_use_through_views_and_broadcasts() -> Res {
    let cpu = Device::Cpu;
    let xv: Vec<f32> = (0..12).map(|i| 0.25 * i as f32 - 1.0).collect();
    let x = Var::from_tensor(&Tensor::from_vec(xv.clone(), (3, 4), &cpu)?)?;
    let bias = Var::new(&[0.5f32, -1., 2., 0.], &cpu)?;
    let xt = x.as_tensor();
    // f = Σ cat(3·x[:, :2], x) + Σ x² + Σ (x + bias) + Σ x[:, 1:3]ᵀ
    let cat = Tensor::cat(&[&(xt.narrow(1, 0, 2)? * 3.)?, xt], 1)?;
    let f = (cat.sum_all()?
        + xt.sqr()?.sum_all()?
        + xt.broadcast_add(bias.as_tensor())?.sum_all()?
        + xt.narrow(1, 1, 2)?.t()?.sum_all()?)?;
    let grads = f.backward()?;
    let want: Vec<f32> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let col = i % 4;
            let narrow3 = if col < 2 { 3. } else { 0. };
            let narrow_t = if (1..3).contains(&col) { 1. } else { 0. };
            narrow3 + 1. + 2. * v + 1. + narrow_t
        })
        .collect();
    let gx = grads.get(&x).unwrap();
    assert!(gx.is_contiguous());
    close(&gx.flatten_all()?.to_vec1::<f32>()?, &want, "d/dx");
    close(
        &grads.get(&bias).unwrap().to_vec1::<f32>()?,
        &[3.; 4],
        "d/dbias",
    );
    Ok(())
}

#[test]
fn gradients_sum_over_a_residual_through_the_custom_convolution() -> Res {
    // y = relu(conv1x1(x, w) + x) with w = 2·I, x > 0 everywhere: y = 3x, so
    // d Σ(y·r) / dx = 3r, and d/dw[o][c] = Σ_{n,p} r[n,o,p]·x[n,c,p].
    let cpu = Device::Cpu;
    let (n, c, hw) = (2, 3, 4);
    let xv: Vec<f32> = (0..n * c * hw).map(|i| 0.1 + 0.05 * i as f32).collect();
    let rv: Vec<f32> = (0..n * c * hw).map(|i| ((i * 7) % 5) as f32 - 2.).collect();
    let x = Var::from_tensor(&Tensor::from_vec(xv.clone(), (n, c, 2, 2), &cpu)?)?;
    let mut wv = vec![0f32; c * c];
    (0..c).for_each(|i| wv[i * c + i] = 2.);
    let w = Var::from_tensor(&Tensor::from_vec(wv, (c, c, 1, 1), &cpu)?)?;
    let r = Tensor::from_vec(rv.clone(), (n, c, 2, 2), &cpu)?;
    let conv = candle_face::ops::conv2d(x.as_tensor(), w.as_tensor(), 1, (0, 0))?;
    let y = candle_face::ops::relu(&(conv + x.as_tensor())?)?;
    let grads = (y * &r)?.sum_all()?.backward()?;
    let want_dx: Vec<f32> = rv.iter().map(|r| 3. * r).collect();
    close(
        &grads.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?,
        &want_dx,
        "d/dx",
    );
    let mut want_dw = vec![0f32; c * c];
    for img in 0..n {
        for o in 0..c {
            for ci in 0..c {
                for p in 0..hw {
                    want_dw[o * c + ci] += rv[(img * c + o) * hw + p] * xv[(img * c + ci) * hw + p];
                }
            }
        }
    }
    close(
        &grads.get(&w).unwrap().flatten_all()?.to_vec1::<f32>()?,
        &want_dw,
        "d/dw",
    );
    Ok(())
}
