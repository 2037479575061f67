//! 2-D point transforms from `dlib/geometry/point_transforms.h`, in closed form.
//!
//! dlib solves these with an SVD (`find_similarity_transform`, Umeyama 1991) and a
//! pseudo-inverse (`find_affine_transform`); for the 2-D cases used here the optimum has a
//! closed form, which agrees with dlib's to rounding error (~1e-15 relative).

/// `point_transform_affine`: `p -> m * p + b`, with `m` row-major.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Affine {
    pub m: [[f64; 2]; 2],
    pub b: [f64; 2],
}

impl Affine {
    /// Applies the transform (dlib computes `m*p` then adds `b`).
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        let x = self.m[0][0] * p[0] + self.m[0][1] * p[1];
        let y = self.m[1][0] * p[0] + self.m[1][1] * p[1];
        [x + self.b[0], y + self.b[1]]
    }
}

/// `find_similarity_transform(from, to)`: least-squares rotation + uniform scale +
/// translation (Umeyama, eqs. 34-43), restricted to proper rotations as dlib does.
///
/// For 2-D, `c*R = [[A, -B], [B, A]] / sigma_from` with `A = cov00 + cov11` and
/// `B = cov10 - cov01`, where `cov = mean((to - mean_to) (from - mean_from)^T)`.
pub(crate) fn find_similarity_transform(from: &[[f64; 2]], to: &[[f64; 2]]) -> Affine {
    let n = from.len().min(to.len());
    if n == 0 {
        return Affine {
            m: [[1.0, 0.0], [0.0, 1.0]],
            b: [0.0, 0.0],
        };
    }
    let mean = |pts: &[[f64; 2]]| {
        let s = pts[..n]
            .iter()
            .fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
        [s[0] / n as f64, s[1] / n as f64]
    };
    let (mf, mt) = (mean(from), mean(to));
    let mut sigma_from = 0.0;
    let mut cov = [[0.0f64; 2]; 2];
    for (f, t) in from[..n].iter().zip(&to[..n]) {
        let (fx, fy) = (f[0] - mf[0], f[1] - mf[1]);
        let (tx, ty) = (t[0] - mt[0], t[1] - mt[1]);
        sigma_from += fx * fx + fy * fy;
        cov[0][0] += tx * fx;
        cov[0][1] += tx * fy;
        cov[1][0] += ty * fx;
        cov[1][1] += ty * fy;
    }
    let nf = n as f64;
    sigma_from /= nf;
    let a = (cov[0][0] + cov[1][1]) / nf;
    let b = (cov[1][0] - cov[0][1]) / nf;
    let (ca, cb) = if sigma_from != 0.0 {
        (a / sigma_from, b / sigma_from)
    } else {
        // dlib: scale 1, rotation only.
        let norm = a.hypot(b);
        if norm > 0.0 {
            (a / norm, b / norm)
        } else {
            (1.0, 0.0)
        }
    };
    let m = [[ca, -cb], [cb, ca]];
    let t = [
        mt[0] - (m[0][0] * mf[0] + m[0][1] * mf[1]),
        mt[1] - (m[1][0] * mf[0] + m[1][1] * mf[1]),
    ];
    Affine { m, b: t }
}

/// `find_affine_transform` for the 3-point case `(0,0)->p0, (sx,0)->p1, (0,sy)->p2`
/// expressed directly: `m = [(p1-p0)/sx, (p2-p0)/sy]`, `b = p0`. A zero extent gives a zero
/// column (the minimum-norm solution dlib's pseudo-inverse would pick).
pub(crate) fn affine_from_axes(
    p0: [f64; 2],
    p1: [f64; 2],
    p2: [f64; 2],
    sx: f64,
    sy: f64,
) -> Affine {
    let col = |p: [f64; 2], s: f64| {
        if s == 0.0 {
            [0.0, 0.0]
        } else {
            [(p[0] - p0[0]) / s, (p[1] - p0[1]) / s]
        }
    };
    let (c0, c1) = (col(p1, sx), col(p2, sy));
    Affine {
        m: [[c0[0], c1[0]], [c0[1], c1[1]]],
        b: p0,
    }
}

/// `rotate_point(center, p, angle)`: rotates `p` about `center` (dlib's `point_rotator`).
pub(crate) fn rotate_point(center: [f64; 2], p: [f64; 2], angle: f64) -> [f64; 2] {
    let (s, c) = angle.sin_cos();
    let (dx, dy) = (p[0] - center[0], p[1] - center[1]);
    [c * dx - s * dy + center[0], s * dx + c * dy + center[1]]
}

/// dlib's double-to-`long` point conversion: `floor(v + 0.5)`.
pub(crate) fn round_dlib(v: f64) -> f64 {
    (v + 0.5).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_known_transform() {
        let (s, ang, t) = (2.5f64, 0.3f64, [10.0, -4.0]);
        let from = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]];
        let to: Vec<[f64; 2]> = from
            .iter()
            .map(|p| {
                let r = rotate_point([0.0, 0.0], *p, ang);
                [s * r[0] + t[0], s * r[1] + t[1]]
            })
            .collect();
        let a = find_similarity_transform(&from, &to);
        let p = a.apply([5.0, 7.0]);
        let r = rotate_point([0.0, 0.0], [5.0, 7.0], ang);
        assert!((p[0] - (s * r[0] + t[0])).abs() < 1e-12);
        assert!((p[1] - (s * r[1] + t[1])).abs() < 1e-12);
    }
}
