use candle_core::backprop::GradStore;
use candle_core::Tensor;

use super::backward::{input_grad, input_grad_bands, weight_grad, weight_grad_bands};
use super::conv2d;
use super::forward::{forward_bands, forward_channels};
use super::gemm::padded_ld;
use super::geom::Geom;
use super::plan::{balanced_group, Bands};
use crate::ops::test_util::{assert_close, to_f64, vals};
use candle_core::{Device, Var, D};

/// Brute-force f64 convolution: the independent reference.
pub(super) fn conv_ref(
    x: &[f64],
    xd: [usize; 4],
    w: &[f64],
    wd: [usize; 4],
    s: usize,
    pad: (usize, usize),
) -> Vec<f64> {
    let [n, c, h, wi] = xd;
    let [o, _, kh, kw] = wd;
    let oh = (h + 2 * pad.0 - kh) / s + 1;
    let ow = (wi + 2 * pad.1 - kw) / s + 1;
    let mut y = vec![0f64; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = 0f64;
                    for ic in 0..c {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let ih = (i * s + ki) as isize - pad.0 as isize;
                                let iw = (j * s + kj) as isize - pad.1 as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wi as isize {
                                    continue;
                                }
                                let xv = x[((b * c + ic) * h + ih as usize) * wi + iw as usize];
                                acc += xv * w[((oc * c + ic) * kh + ki) * kw + kj];
                            }
                        }
                    }
                    y[((b * o + oc) * oh + i) * ow + j] = acc;
                }
            }
        }
    }
    y
}

/// Shapes: (x dims, w dims, stride, padding).
/// x dims, w dims, stride, (pad_h, pad_w).
type Case = ([usize; 4], [usize; 4], usize, (usize, usize));

const CASES: &[Case] = &[
    ([2, 3, 8, 8], [4, 3, 3, 3], 1, (1, 1)),
    ([2, 3, 9, 7], [5, 3, 3, 3], 2, (1, 1)),
    ([3, 4, 6, 6], [6, 4, 1, 1], 1, (0, 0)),
    ([2, 4, 7, 7], [3, 4, 1, 1], 2, (0, 0)),
    ([2, 3, 5, 9], [4, 3, 1, 7], 1, (0, 3)),
    ([2, 3, 9, 5], [4, 3, 7, 1], 1, (3, 0)),
    ([1, 2, 11, 10], [3, 2, 3, 3], 2, (0, 0)),
    ([1, 3, 6, 6], [2, 3, 3, 3], 1, (2, 2)),
    ([5, 2, 4, 4], [3, 2, 2, 2], 2, (0, 1)),
    // Small outputs: several images per GEMM, the last group partial.
    ([7, 3, 3, 3], [4, 3, 1, 1], 1, (0, 0)),
    ([7, 2, 5, 5], [3, 2, 3, 3], 2, (1, 1)),
];

/// candle's built-in convolution, with the padding added by `pad_with_zeros` (candle pads both
/// axes alike).
fn candle_conv2d(x: &Tensor, w: &Tensor, s: usize, pad: (usize, usize)) -> Tensor {
    x.pad_with_zeros(2, pad.0, pad.0)
        .unwrap()
        .pad_with_zeros(3, pad.1, pad.1)
        .unwrap()
        .conv2d(w, 0, s, 1, 1)
        .unwrap()
}

/// Random inputs of a case and its geometry.
fn inputs_and_geometry(
    xd: [usize; 4],
    wd: [usize; 4],
    s: usize,
    pad: (usize, usize),
) -> (Tensor, Tensor, Geom) {
    let (x, w) = inputs(xd, wd);
    (x, w, Geom::new(&xd, &wd, s, pad).unwrap())
}

fn inputs(xd: [usize; 4], wd: [usize; 4]) -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., &xd, &dev).unwrap();
    let w = Tensor::randn(0f32, 1., &wd, &dev).unwrap();
    (x, w)
}

#[test]
fn forward_matches_brute_force_and_candle() {
    for &(xd, wd, s, pad) in CASES {
        let (x, w) = inputs(xd, wd);
        let y = conv2d(&x, &w, s, pad).unwrap();
        let want = conv_ref(&to_f64(&x), xd, &to_f64(&w), wd, s, pad);
        assert_close(
            &to_f64(&y),
            &want,
            1e-5,
            &format!("fwd {xd:?} {wd:?} s{s} p{pad:?}"),
        );
        // candle's built-in (symmetric padding via pad_with_zeros).
        let yc = candle_conv2d(&x, &w, s, pad);
        assert_eq!(y.dims(), yc.dims());
        assert_close(&to_f64(&y), &to_f64(&yc), 1e-4, "fwd vs candle");
    }
}

#[test]
fn forward_works_for_batch_smaller_and_larger_than_threads() {
    // Batch 1 takes the in-GEMM parallel path, batch 7 the across-batch path.
    for n in [1, 7] {
        let xd = [n, 3, 10, 10];
        let wd = [8, 3, 3, 3];
        let (x, w) = inputs(xd, wd);
        let y = conv2d(&x, &w, 1, (1, 1)).unwrap();
        let want = conv_ref(&to_f64(&x), xd, &to_f64(&w), wd, 1, (1, 1));
        assert_close(&to_f64(&y), &want, 1e-5, "fwd batch");
    }
}

/// An epilogue that depends on the channel and the pixel position within its block, so a
/// band or channel block handed the wrong offsets shows: `v·(1 + ch) + 0.5·ch`.
fn channel_epilogue(y: &mut [f32], s: usize) {
    for (ch, plane) in y.chunks_exact_mut(s).enumerate() {
        plane
            .iter_mut()
            .for_each(|v| *v = *v * (1 + ch) as f32 + 0.5 * ch as f32);
    }
}

fn f64s(a: &[f32]) -> Vec<f64> {
    a.iter().map(|&v| v as f64).collect()
}

fn channel_epilogue_ref(y: &mut [f64], o: usize, p: usize) {
    for (i, v) in y.iter_mut().enumerate() {
        let ch = (i / p) % o;
        *v = *v * (1 + ch) as f64 + 0.5 * ch as f64;
    }
}

#[test]
fn banded_and_channel_split_forward_match_brute_force() {
    // The batch-1 latency paths, forced with explicit cuts so they run whatever the
    // machine's thread count; uneven last band and last channel block included.
    let epilogue: &(dyn Fn(&mut [f32], usize) + Sync) = &channel_epilogue;
    let cases = [
        ([1, 3, 20, 18], [5, 3, 3, 3], 1, (1, 2)),
        ([2, 4, 23, 17], [7, 4, 3, 3], 2, (0, 0)),
        ([1, 3, 9, 13], [6, 3, 1, 7], 1, (0, 3)),
        ([2, 6, 3, 3], [9, 6, 1, 1], 1, (0, 0)),
    ];
    for (xd, wd, s, pad) in cases {
        let (x, w, g) = inputs_and_geometry(xd, wd, s, pad);
        let (xv, wv) = (vals(&x), vals(&w));
        let plain = conv_ref(&to_f64(&x), xd, &to_f64(&w), wd, s, pad);
        let mut with_epi = plain.clone();
        channel_epilogue_ref(&mut with_epi, g.o, g.p());
        let what = format!("{xd:?} {wd:?} s{s} p{pad:?}");
        for rows in 1..=g.oh.min(4) {
            let bands = Bands {
                rows,
                per_image: g.oh.div_ceil(rows),
            };
            for (epi, want) in [(None, &plain), (Some(epilogue), &with_epi)] {
                let mut y = vec![f32::NAN; g.n * g.o * g.p()];
                forward_bands(&xv, &wv, &g, &mut y, &bands, &epi);
                assert_close(
                    &f64s(&y),
                    want,
                    1e-5,
                    &format!("bands of {rows} rows {what}"),
                );
            }
        }
        for rows in [1, 2, g.o - 1] {
            for (epi, want) in [(None, &plain), (Some(epilogue), &with_epi)] {
                let mut y = vec![f32::NAN; g.n * g.o * g.p()];
                forward_channels(&xv, &wv, &g, &mut y, rows, &epi);
                assert_close(&f64s(&y), want, 1e-5, &format!("{rows} channels {what}"));
            }
        }
    }
}

#[test]
fn groups_keep_the_threads_evenly_loaded() {
    // InceptionResnetV1's 8×8 layers at batch 32 on 2 threads: 3 per group would load one
    // thread with 18 images, 4 gives 16 each.
    assert_eq!(balanced_group(32, 2, 3, 16), 4);
    // compact64's 4×4 layer at batch 64: 12 → 16 (8 and 16 balance equally; larger wins).
    assert_eq!(balanced_group(64, 2, 12, 32), 16);
    // Already balanced sizes stay; one thread takes whatever the window allows.
    assert_eq!(balanced_group(32, 2, 16, 16), 16);
    assert_eq!(balanced_group(7, 1, 3, 7), 3);
    // Against an explicit search of the window: list the groups, give the busiest thread
    // the first ceil(groups / threads) of them, keep the least loaded size, then the
    // closest to the target, then the larger.
    for n in 1..40usize {
        for nt in 1..5 {
            let per_thread = n.div_ceil(nt);
            for target in 1..=per_thread {
                let (lo, hi) = ((target / 2).max(1), (2 * target).min(per_thread));
                let mut best: Option<(usize, usize)> = None;
                for nb in lo..=hi.max(lo) {
                    let groups: Vec<usize> = (0..n).step_by(nb).map(|i| nb.min(n - i)).collect();
                    let load: usize = groups.iter().take(groups.len().div_ceil(nt)).sum();
                    let better = match best {
                        None => true,
                        Some((b, bl)) => {
                            (load, nb.abs_diff(target)) < (bl, b.abs_diff(target))
                                || (load == bl && nb.abs_diff(target) == b.abs_diff(target))
                        }
                    };
                    if better {
                        best = Some((nb, load));
                    }
                }
                let want = best.unwrap().0;
                assert_eq!(
                    balanced_group(n, nt, target, per_thread),
                    want,
                    "n {n} threads {nt} target {target}"
                );
            }
        }
    }
}

#[test]
fn banded_gradients_match_the_whole_image_gradients() {
    // The memory-bound path (full batches of few-channel, large layers), forced with
    // explicit bands; the whole-image gradients are checked against candle and finite
    // differences below.
    let cases: &[Case] = &[
        ([3, 3, 12, 11], [4, 3, 3, 3], 1, (1, 1)),
        ([2, 2, 13, 9], [3, 2, 3, 3], 2, (0, 1)),
        ([3, 2, 7, 12], [5, 2, 1, 7], 1, (0, 3)),
    ];
    for &(xd, wd, s, pad) in cases {
        let (x, w, g) = inputs_and_geometry(xd, wd, s, pad);
        assert!(
            Bands::for_cache(&g).is_none(),
            "small enough for the plain path"
        );
        let dy = Tensor::randn(0f32, 1., (g.n, g.o, g.oh, g.ow), &Device::Cpu).unwrap();
        let (xv, wv, dyv) = (vals(&x), vals(&w), vals(&dy));
        let want_dx = f64s(&input_grad(&dyv, &wv, &g));
        let want_dw = f64s(&weight_grad(&xv, &dyv, &g));
        for rows in 1..=g.oh.min(3) {
            let bands = Bands {
                rows,
                per_image: g.oh.div_ceil(rows),
            };
            let what = format!("bands of {rows} rows {xd:?} {wd:?} s{s} p{pad:?}");
            let mut dx = vec![0f32; g.n * g.in_len()];
            input_grad_bands(&dyv, &wv, &g, &mut dx, &bands);
            assert_close(&f64s(&dx), &want_dx, 1e-5, &format!("dx, {what}"));
            let dw = weight_grad_bands(&xv, &dyv, &g, &bands);
            assert_close(&f64s(&dw), &want_dw, 1e-5, &format!("dw, {what}"));
        }
    }
}

/// A case's random inputs as variables, a random projection `r` of the op's output, and the
/// gradients of `Σ conv2d(x, w)·r`.
fn projection_gradients(
    xd: [usize; 4],
    wd: [usize; 4],
    s: usize,
    pad: (usize, usize),
) -> (Var, Var, Tensor, GradStore) {
    let (x0, w0) = inputs(xd, wd);
    let (x, w) = (
        Var::from_tensor(&x0).unwrap(),
        Var::from_tensor(&w0).unwrap(),
    );
    let y = conv2d(&x, &w, s, pad).unwrap();
    let r = Tensor::randn(0f32, 1., y.dims(), &Device::Cpu).unwrap();
    let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    (x, w, r, g)
}

#[test]
fn gradients_match_candle_autograd() {
    for &(xd, wd, s, pad) in CASES {
        // candle 0.11's own conv2d backward returns an input gradient of the wrong shape
        // when the strided windows leave input rows/columns unread (e.g. 10 wide, k 3,
        // stride 2): compare only where candle is right; finite differences cover the rest.
        if (xd[2] + 2 * pad.0 - wd[2]) % s != 0 || (xd[3] + 2 * pad.1 - wd[3]) % s != 0 {
            continue;
        }
        let (x, w, r, g) = projection_gradients(xd, wd, s, pad);
        let yc = candle_conv2d(&x, &w, s, pad);
        let gc = (yc * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let what = format!("{xd:?} {wd:?} s{s} p{pad:?}");
        for v in [&x, &w] {
            let got = to_f64(g.get(v).unwrap());
            let want = to_f64(gc.get(v).unwrap());
            assert_close(&got, &want, 1e-4, &format!("grad vs candle {what}"));
        }
    }
}

/// Central finite differences of `L = Σ conv_ref(x, w) · r` (f64 brute force), against the
/// op's analytic gradients.
#[test]
fn gradients_match_finite_differences() {
    for &(xd, wd, s, pad) in CASES {
        let (x, w, r, g) = projection_gradients(xd, wd, s, pad);
        let (xv, wv, rv) = (to_f64(&x), to_f64(&w), to_f64(&r));
        let loss = |xv: &[f64], wv: &[f64]| -> f64 {
            conv_ref(xv, xd, wv, wd, s, pad)
                .iter()
                .zip(&rv)
                .map(|(a, b)| a * b)
                .sum()
        };
        let eps = 1e-3;
        let fd = |v: &[f64], is_x: bool| -> Vec<f64> {
            (0..v.len())
                .map(|i| {
                    let (mut p, mut m) = (v.to_vec(), v.to_vec());
                    p[i] += eps;
                    m[i] -= eps;
                    let (lp, lm) = if is_x {
                        (loss(&p, &wv), loss(&m, &wv))
                    } else {
                        (loss(&xv, &p), loss(&xv, &m))
                    };
                    (lp - lm) / (2. * eps)
                })
                .collect()
        };
        let what = format!("{xd:?} {wd:?} s{s} p{pad:?}");
        assert_close(
            &to_f64(g.get(&x).unwrap()),
            &fd(&xv, true),
            1e-4,
            &format!("dx fd {what}"),
        );
        assert_close(
            &to_f64(g.get(&w).unwrap()),
            &fd(&wv, false),
            1e-4,
            &format!("dw fd {what}"),
        );
    }
}

#[test]
fn input_gradient_skipped_for_plain_tensors() {
    let (x, w0) = inputs([2, 3, 6, 6], [4, 3, 3, 3]);
    let w = Var::from_tensor(&w0).unwrap();
    let y = conv2d(&x, &w, 1, (1, 1)).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(&x).is_none());
    // dW of Σy is Σ over images and positions of the input patch: check one entry by hand.
    let xv = to_f64(&x);
    let mut want = 0f64;
    for b in 0..2 {
        for i in 0..6 {
            for j in 0..6 {
                // kernel entry (o=0, c=1, ki=0, kj=2) reads x[b, 1, i-1, j+1]
                if i >= 1 && j + 1 < 6 {
                    want += xv[((b * 3 + 1) * 6 + i - 1) * 6 + j + 1];
                }
            }
        }
    }
    let dw = g
        .get(&w)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let got = dw[11] as f64; // (o=0, c=1, ki=0, kj=2) in (4, 3, 3, 3)
    assert!(
        (got - want).abs() < 1e-4 * want.abs().max(1.),
        "{got} vs {want}"
    );
}

/// The weight gradient's unfolded rows are padded to an odd number of 64-byte lines, never
/// shorter than the row; the gradient tests above run through the padded layout (their
/// padding is NaN in test builds, so reading it would show).
#[test]
fn padded_rows_are_an_odd_number_of_lines() {
    for cols in [1, 15, 16, 17, 64, 192, 256, 289, 1024, 4096, 6241] {
        let ld = padded_ld(cols);
        assert!(ld >= cols && ld < cols + 32, "{cols} → {ld}");
        assert!(
            ld.is_multiple_of(16) && !(ld / 16).is_multiple_of(2),
            "{cols} → {ld}"
        );
    }
    assert_eq!(padded_ld(4096), 4112);
    assert_eq!(padded_ld(289), 304);
}

#[test]
fn rejects_bad_shapes() {
    let (x, w) = inputs([1, 3, 4, 4], [2, 2, 3, 3]);
    assert!(conv2d(&x, &w, 1, (1, 1)).is_err());
    let (x, w) = inputs([1, 3, 2, 2], [2, 3, 5, 5]);
    assert!(conv2d(&x, &w, 1, (0, 0)).is_err());
    let (x, w) = inputs([1, 3, 4, 4], [2, 3, 3, 3]);
    assert!(conv2d(&x, &w, 0, (1, 1)).is_err());
    assert!(conv2d(
        &x.sum_keepdim(D::Minus1).unwrap().squeeze(3).unwrap(),
        &w,
        1,
        (1, 1)
    )
    .is_err());
}
