use super::super::forward::forward_with;
use super::super::tests::conv_ref;
use super::*;
use crate::ops::test_util::{assert_close, rand, vals};

/// The direct kernel on `x` (N, C, H, W) and `w` (O, C, 3, 3) with the epilogue `ep`, whatever
/// the channel count (`None` without AVX-512F).
fn direct(x: &[f32], w: &[f32], g: &Geom, ep: &Affine) -> Option<Vec<f32>> {
    if !has_avx512() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        Some(run::forward(x, w, &Layout::new(g), ep))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, ep);
        None
    }
}

/// Checks the direct kernel against the brute-force f64 convolution and the im2col path, with
/// a random affine map and `relu`, on one shape.
fn check(n: usize, c: usize, o: usize, (h, w): (usize, usize), relu: bool, seed: u64) {
    let xd = [n, c, h, w];
    let wd = [o, c, 3, 3];
    let x = vals(&rand(&xd, seed));
    let wt = vals(&rand(&wd, seed + 1));
    let ss = vals(&rand(&[2, o], seed + 2));
    let (scale, shift) = ss.split_at(o);
    let g = Geom::new(&xd, &wd, 1, (1, 1)).unwrap();
    let ep = Affine { scale, shift, relu };
    let what = format!("n {n} c {c} o {o} {h}×{w} relu {relu}");
    let Some(got) = direct(&x, &wt, &g, &ep) else {
        eprintln!("no AVX-512F: direct kernel not tested ({what})");
        return;
    };
    let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let plane = h * w;
    let want: Vec<f64> = conv_ref(&f64s(&x), xd, &f64s(&wt), wd, 1, (1, 1))
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / plane) % o;
            let v = v * scale[ch] as f64 + shift[ch] as f64;
            if relu {
                v.max(0.0)
            } else {
                v
            }
        })
        .collect();
    assert_close(
        &f64s(&got),
        &want,
        1e-5,
        &format!("direct vs reference, {what}"),
    );
    let apply = |y: &mut [f32], s: usize| {
        for (ch, p) in y.chunks_exact_mut(s).enumerate() {
            for v in p {
                let t = *v * scale[ch] + shift[ch];
                *v = if relu { t.max(0.0) } else { t };
            }
        }
    };
    let im2col = forward_with(&x, &wt, &g, Some(&apply));
    assert_close(
        &f64s(&got),
        &f64s(&im2col),
        1e-5,
        &format!("direct vs im2col, {what}"),
    );
}

const SIZES: [(usize, usize); 8] = [
    (1, 1),
    (2, 3),
    (3, 3),
    (7, 7),
    (16, 16),
    (17, 5),
    (5, 17),
    (35, 35),
];

#[test]
fn direct_matches_reference_for_channel_counts_1_to_40() {
    for c in 1..=40 {
        let o = (c * 7) % 40 + 1;
        let size = SIZES[c % SIZES.len()];
        let n = 1 + c % 5;
        check(n, c, o, size, c % 2 == 0, 100 + c as u64);
    }
}

#[test]
fn direct_matches_reference_for_output_channels_1_to_40() {
    for o in 1..=40 {
        let c = (o * 3) % 11 + 1;
        let size = SIZES[(o + 3) % SIZES.len()];
        check(1 + o % 3, c, o, size, o % 3 == 0, 200 + o as u64);
    }
}

#[test]
fn direct_matches_reference_on_the_dlib_layers() {
    check(2, 32, 32, (35, 35), true, 301);
    check(3, 64, 64, (16, 16), false, 302);
    check(5, 128, 128, (7, 7), true, 303);
    check(4, 256, 256, (3, 3), false, 304);
    check(5, 256, 256, (1, 1), true, 305);
}

#[test]
fn direct_matches_reference_on_odd_widths_and_batches() {
    for (i, &(h, w)) in [(1, 17), (4, 15), (9, 33), (2, 1), (6, 47)]
        .iter()
        .enumerate()
    {
        for n in 1..=5 {
            check(
                n,
                5 + i,
                16 + 3 * i,
                (h, w),
                n % 2 == 1,
                400 + (10 * i + n) as u64,
            );
        }
    }
}

#[test]
fn direct_declines_other_convolutions() {
    let ep = Affine {
        scale: &[1.0; 8],
        shift: &[0.0; 8],
        relu: false,
    };
    let x = vec![0.0; 2 * 4 * 6 * 6];
    for (k, stride, pad, o) in [(3, 2, 1, 8), (3, 1, 0, 8), (5, 1, 1, 8), (3, 1, 1, 4)] {
        let g = Geom::new(&[2, 4, 6, 6], &[o, 4, k, k], stride, (pad, pad)).unwrap();
        let w = vec![0.0; o * 4 * k * k];
        assert!(
            forward(&x, &w, &g, &ep).is_none(),
            "{k}×{k}/{stride} pad {pad}"
        );
    }
}
