use super::super::forward::forward_with;
use super::super::tests::conv_ref;
use super::*;
use crate::ops::test_util::{assert_close, rand, vals};

/// The direct kernel on `x` (N, C, H, W) and `w` (O, C, k, k) with the epilogue `ep`, whatever
/// the channel count: the flat layout below 16 images, [`forward`]'s choice (lanes) from 16 on
/// (`None` without AVX-512F).
fn direct(x: &[f32], w: &[f32], g: &Geom, ep: &Affine) -> Option<Vec<f32>> {
    if !has_avx512() {
        return None;
    }
    if g.n >= 16 {
        assert_eq!(
            mode(),
            Mode::All,
            "CANDLE_FACE_DIRECT_CONV is set: lanes not tested"
        );
        #[cfg(target_arch = "x86_64")]
        if Layout::new(g).is_none() {
            return lanes_only(x, w, g, ep);
        }
        return forward(x, w, g, ep);
    }
    #[cfg(target_arch = "x86_64")]
    {
        Some(run::forward(x, w, g, &Layout::new(g).unwrap(), ep))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, ep);
        None
    }
}

/// [`check_conv`] of a 3×3 convolution with stride 1 and padding 1.
fn check(n: usize, c: usize, o: usize, hw: (usize, usize), relu: bool, seed: u64) {
    check_conv(n, c, o, hw, (3, 1), (relu, false), seed)
}

/// Checks the direct kernel against the brute-force f64 convolution and the im2col path, with
/// a random affine map, a random residual if `residual`, and `relu`, on one shape: a `k×k`
/// kernel with `stride` 1 (padding 1) or 2 (no padding).
fn check_conv(
    n: usize,
    c: usize,
    o: usize,
    hw: (usize, usize),
    (k, stride): (usize, usize),
    act: (bool, bool),
    seed: u64,
) {
    let pad = if stride == 1 { 1 } else { 0 };
    check_padded(n, (c, o), hw, (k, stride, pad), act, seed)
}

/// [`check_conv`] with any padding (the lanes layout takes any, from 16 images on; [`forward`]
/// gives it only the flat layout's shapes).
fn check_padded(
    n: usize,
    (c, o): (usize, usize),
    (h, w): (usize, usize),
    (k, stride, pad): (usize, usize, usize),
    (relu, residual): (bool, bool),
    seed: u64,
) {
    let xd = [n, c, h, w];
    let wd = [o, c, k, k];
    let x = vals(&rand(&xd, seed));
    let wt = vals(&rand(&wd, seed + 1));
    let ss = vals(&rand(&[2, o], seed + 2));
    let (scale, shift) = ss.split_at(o);
    let g = Geom::new(&xd, &wd, stride, (pad, pad)).unwrap();
    let res = vals(&rand(&[n, o, g.oh, g.ow], seed + 3));
    let ep = Affine {
        scale,
        shift,
        residual: residual.then_some(&res[..]),
        relu,
    };
    let what =
        format!("n {n} c {c} o {o} {h}×{w} k {k}/{stride} pad {pad} relu {relu} res {residual}");
    let Some(got) = direct(&x, &wt, &g, &ep) else {
        assert!(!has_avx512(), "the direct kernel declined {what}");
        eprintln!("no AVX-512F: direct kernel not tested ({what})");
        return;
    };
    let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let plane = g.oh * g.ow;
    let want: Vec<f64> = conv_ref(&f64s(&x), xd, &f64s(&wt), wd, stride, (pad, pad))
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / plane) % o;
            let r = if residual { res[i] as f64 } else { 0.0 };
            let v = v * scale[ch] as f64 + shift[ch] as f64 + r;
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
            p.iter_mut().for_each(|v| *v = *v * scale[ch] + shift[ch]);
        }
    };
    let mut im2col = forward_with(&x, &wt, &g, Some(&apply));
    for (v, r) in im2col.iter_mut().zip(&res) {
        let t = if residual { *v + r } else { *v };
        *v = if relu { t.max(0.0) } else { t };
    }
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
fn direct_adds_the_residual_before_the_relu() {
    for (i, &(h, w)) in SIZES.iter().enumerate() {
        let (c, o) = (3 + 4 * i, 8 + 5 * i);
        check_conv(
            1 + i % 4,
            c,
            o,
            (h, w),
            (3, 1),
            (i % 4 != 1, true),
            700 + i as u64,
        );
    }
}

#[test]
fn direct_stride_2_matches_reference() {
    let sizes = [(35, 35), (16, 16), (7, 7), (3, 3), (4, 5), (6, 9), (2, 2)];
    for (i, &(h, w)) in sizes.iter().enumerate() {
        for k in [1, 2, 3, 4] {
            if k > h || k > w {
                continue;
            }
            let n = 1 + (i + k) % 4;
            let (c, o) = (3 + 5 * i + k, 8 + 7 * ((i + k) % 5));
            let act = ((i + k) % 2 == 0, i % 3 == 0);
            check_conv(n, c, o, (h, w), (k, 2), act, 500 + (10 * i + k) as u64);
        }
    }
}

#[test]
fn direct_matches_reference_on_dlib_stem_and_downsampling() {
    check_conv(2, 3, 32, (150, 150), (7, 2), (true, false), 601);
    check_conv(1, 3, 16, (21, 20), (7, 2), (false, false), 602);
    check_conv(3, 32, 64, (35, 35), (3, 2), (true, false), 603);
    check_conv(2, 64, 128, (16, 16), (3, 2), (true, false), 604);
    check_conv(2, 128, 256, (7, 7), (3, 2), (true, false), 605);
    check_conv(3, 256, 256, (3, 3), (3, 2), (true, false), 606);
}

#[test]
fn direct_declines_other_convolutions() {
    let ep = Affine {
        scale: &[1.0; 8],
        shift: &[0.0; 8],
        residual: None,
        relu: false,
    };
    let x = vec![0.0; 2 * 4 * 6 * 6];
    let shapes = [
        (3, 2, 1, 8),
        (3, 1, 0, 8),
        (5, 1, 1, 8),
        (3, 1, 1, 4),
        (3, 3, 0, 8),
    ];
    for (k, stride, pad, o) in shapes {
        let g = Geom::new(&[2, 4, 6, 6], &[o, 4, k, k], stride, (pad, pad)).unwrap();
        let w = vec![0.0; o * 4 * k * k];
        assert!(
            forward(&x, &w, &g, &ep).is_none(),
            "{k}×{k}/{stride} pad {pad}"
        );
    }
    // Nor from 16 images on, where the lanes layout could take them.
    let x16 = vec![0.0; 16 * 4 * 6 * 6];
    let g = Geom::new(&[16, 4, 6, 6], &[8, 4, 3, 3], 1, (0, 0)).unwrap();
    assert!(forward(&x16, &[0.0; 288], &g, &ep).is_none());
    // Too few output positions: 2 images of 2×1 pixels.
    let g = Geom::new(&[2, 4, 2, 1], &[8, 4, 3, 3], 1, (1, 1)).unwrap();
    assert!(forward(&x[..16], &[0.0; 288], &g, &ep).is_none());
}

#[test]
fn lanes_match_reference_on_the_dlib_layers() {
    check_conv(16, 32, 32, (35, 35), (3, 1), (true, true), 801);
    check_conv(32, 64, 64, (9, 9), (3, 1), (false, true), 802);
    check_conv(17, 128, 128, (8, 8), (3, 1), (true, false), 803);
    check_conv(16, 256, 256, (3, 3), (3, 1), (true, true), 804);
    check_conv(18, 256, 256, (1, 1), (3, 1), (false, false), 805);
}

#[test]
fn lanes_match_reference_on_dlib_stem_and_downsampling() {
    check_conv(16, 3, 32, (40, 37), (7, 2), (true, false), 811);
    check_conv(17, 32, 64, (35, 35), (3, 2), (true, false), 812);
    check_conv(16, 128, 256, (8, 8), (3, 2), (true, false), 813);
    check_conv(20, 256, 256, (3, 3), (3, 2), (false, false), 814);
}

/// Batches that are not a multiple of 16: the rest in the flat layout, or in a partial group
/// of lanes when the flat layout does not take it (too few positions, or its padding).
#[test]
fn lanes_split_batches_past_full_groups() {
    for (i, n) in [16, 17, 23, 31, 32, 33, 47].into_iter().enumerate() {
        let size = SIZES[i % SIZES.len()];
        let (c, o) = (3 + 2 * i, 8 + 3 * i);
        let act = (i % 2 == 0, i % 3 != 1);
        check_conv(n, c, o, size, (3, 1), act, 820 + i as u64);
    }
    // 17 images of 1×2 pixels: the single rest image has too few positions for the flat layout.
    check_conv(17, 4, 9, (1, 2), (3, 1), (true, true), 830);
}

#[test]
fn lanes_take_any_padding_and_square_kernel() {
    let shapes = [
        (3, 1, 0),
        (5, 1, 2),
        (1, 1, 0),
        (3, 2, 1),
        (4, 2, 1),
        (5, 2, 2),
    ];
    for (i, (k, stride, pad)) in shapes.into_iter().enumerate() {
        let act = (i % 2 == 1, i % 3 == 0);
        check_padded(
            16 + i,
            (5, 9 + i),
            (9, 11),
            (k, stride, pad),
            act,
            840 + i as u64,
        );
    }
}
