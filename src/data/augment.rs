//! Training-time augmentation on cached sources: random scale, translation and rotation of the
//! crop window, horizontal flip, brightness and contrast jitter, random greyscale (the light
//! augmentation of FaceNet, Schroff et al. 2015, and of facenet-pytorch's training examples;
//! colour jitter and greyscale as in torchvision's `ColorJitter` and `RandomGrayscale`).
//!
//! [`Augment::apply`] works on a source made by
//! [`Preprocess::prepare_source`](crate::image::Preprocess::prepare_source): the recipe's window is the
//! central `out_size` pixels of the source, and the jittered window is sampled around it by
//! bilinear interpolation, so with zero jitter the result is exactly
//! [`Preprocess::from_source`](crate::image::Preprocess::from_source).

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::image::resample::window_bilinear_rotated;
use crate::{Error, Result};

/// Augmentation strengths; every jitter is drawn uniformly in `[−x, +x]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Mirror left–right with probability ½.
    pub flip: bool,
    /// The window side is multiplied by `1 + u`, `u ∈ [−scale_jitter, scale_jitter]`.
    pub scale_jitter: f32,
    /// The window centre moves by `u·out_size` pixels on each axis, `u ∈ [−t, t]`.
    pub translate_jitter: f32,
    /// Values are multiplied by `1 + u`, `u ∈ [−brightness, brightness]`.
    pub brightness: f32,
    /// Values move away from (or towards) the image's mean grey by the factor `1 + u`,
    /// `u ∈ [−contrast, contrast]`.
    pub contrast: f32,
    /// The window turns by `u` degrees about its centre, `u ∈ [−rotate, rotate]` (0–45; absent
    /// in older serialised options: 0).
    #[serde(default)]
    pub rotate: f32,
    /// Probability of turning the view grey (ITU-R 601 luma in all three channels), so the
    /// network does not lean on colour alone (absent in older serialised options: 0).
    #[serde(default)]
    pub grayscale: f32,
}

impl Default for Augment {
    /// Modest augmentation: flip, ±10% scale, ±5% shift, ±20% brightness and contrast.
    fn default() -> Self {
        Augment {
            flip: true,
            scale_jitter: 0.1,
            translate_jitter: 0.05,
            brightness: 0.2,
            contrast: 0.2,
            rotate: 0.0,
            grayscale: 0.0,
        }
    }
}

/// ITU-R 601 luma of an RGB pixel.
fn luma([r, g, b]: [u8; 3]) -> f32 {
    0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32
}

/// Uniform in `[−a, a]`; exactly 0 without touching the generator when `a == 0`.
fn jitter(rng: &mut impl Rng, a: f32) -> f32 {
    if a == 0.0 {
        0.0
    } else {
        (rng.random::<f32>() * 2.0 - 1.0) * a
    }
}

impl Augment {
    /// No augmentation at all: [`apply`](Self::apply) returns the centre window.
    pub fn none() -> Augment {
        Augment {
            flip: false,
            scale_jitter: 0.0,
            translate_jitter: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            rotate: 0.0,
            grayscale: 0.0,
        }
    }

    /// Checks that every strength is finite, non-negative and below 1, `rotate` within 0–45
    /// degrees and `grayscale` a probability.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("scale_jitter", self.scale_jitter),
            ("translate_jitter", self.translate_jitter),
            ("brightness", self.brightness),
            ("contrast", self.contrast),
        ] {
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return Err(Error::InvalidArgument(format!(
                    "augment.{name} must be in [0, 1), got {v}"
                )));
            }
        }
        if !(self.rotate.is_finite() && (0.0..=45.0).contains(&self.rotate)) {
            return Err(Error::InvalidArgument(format!(
                "augment.rotate must be 0–45 degrees, got {}",
                self.rotate
            )));
        }
        if !(self.grayscale.is_finite() && (0.0..=1.0).contains(&self.grayscale)) {
            return Err(Error::InvalidArgument(format!(
                "augment.grayscale must be a probability in [0, 1], got {}",
                self.grayscale
            )));
        }
        Ok(())
    }

    /// A randomly jittered `out_size × out_size` view of `src` (see the module documentation).
    ///
    /// Random numbers are drawn in a fixed order (scale, x shift, y shift, flip, rotation,
    /// brightness, contrast, grey; a zero strength draws nothing), so a seeded `rng` gives a
    /// reproducible result.
    /// Values are clamped to 0–255.
    pub fn apply(&self, src: &RgbImage, out_size: u32, rng: &mut impl Rng) -> RgbImage {
        let out_size = out_size.max(1);
        let (w, h) = src.dimensions();
        let side = (out_size as f32 * (1.0 + jitter(rng, self.scale_jitter))).max(1.0);
        let dx = jitter(rng, self.translate_jitter) * out_size as f32;
        let dy = jitter(rng, self.translate_jitter) * out_size as f32;
        let mirror = self.flip && rng.random_bool(0.5);
        let angle = jitter(rng, self.rotate).to_radians();
        let x0 = (w as f32 - side) / 2.0 + dx;
        let y0 = (h as f32 - side) / 2.0 + dy;
        let mut img = window_bilinear_rotated(src, x0, y0, side, out_size, mirror, angle);

        let b = 1.0 + jitter(rng, self.brightness);
        let c = 1.0 + jitter(rng, self.contrast);
        if b != 1.0 || c != 1.0 {
            // Brightness, then contrast around the mean grey (ITU-R 601 luma) of the
            // brightened image, as torchvision's ColorJitter does.
            let n = (img.width() * img.height()).max(1) as f32;
            let grey: f32 = img.pixels().map(|p| luma(p.0)).sum::<f32>() * b / n;
            for v in img.iter_mut() {
                let x = *v as f32 * b;
                let x = (x - grey) * c + grey;
                *v = x.round().clamp(0.0, 255.0) as u8;
            }
        }
        if self.grayscale > 0.0 && rng.random::<f32>() < self.grayscale {
            for p in img.pixels_mut() {
                p.0 = [luma(p.0).round().clamp(0.0, 255.0) as u8; 3];
            }
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Preprocess;
    use rand::SeedableRng;

    fn source(pre: &Preprocess) -> RgbImage {
        let img = RgbImage::from_fn(120, 100, |x, y| {
            image::Rgb([
                (x * 2) as u8,
                (y * 2) as u8,
                ((x * 13 + y * 29) % 256) as u8,
            ])
        });
        pre.prepare_source(&img, 0.15)
    }

    #[test]
    fn zero_jitter_equals_from_source() {
        let pre = Preprocess::compact_default();
        let src = source(&pre);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let a = Augment::none().apply(&src, pre.image_size, &mut rng);
        assert_eq!(a, pre.from_source(&src, 0.15));
    }

    #[test]
    fn flip_flips() {
        let pre = Preprocess::compact_default();
        let src = source(&pre);
        let only_flip = Augment {
            flip: true,
            ..Augment::none()
        };
        let centre = pre.from_source(&src, 0.15);
        let mirrored = image::imageops::flip_horizontal(&centre);
        let (mut seen_flip, mut seen_plain) = (false, false);
        for seed in 0..20 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let a = only_flip.apply(&src, 64, &mut rng);
            if a == mirrored {
                seen_flip = true;
            } else {
                assert_eq!(a, centre);
                seen_plain = true;
            }
        }
        assert!(seen_flip && seen_plain);
    }

    #[test]
    fn jitter_changes_and_is_seeded() {
        let pre = Preprocess::compact_default();
        let src = source(&pre);
        let aug = Augment::default();
        let run = |seed| aug.apply(&src, 64, &mut rand::rngs::StdRng::seed_from_u64(seed));
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        assert_ne!(run(3), pre.from_source(&src, 0.15));
        assert_eq!(run(3).dimensions(), (64, 64));
    }

    #[test]
    fn strong_brightness_saturates_within_range() {
        // Values are u8 so 0..=255 holds by type; check saturation is a clamp, not a wrap.
        let src = RgbImage::from_pixel(74, 74, image::Rgb([250, 5, 128]));
        let aug = Augment {
            brightness: 0.9,
            ..Augment::none()
        };
        for seed in 0..50 {
            let a = aug.apply(&src, 64, &mut rand::rngs::StdRng::seed_from_u64(seed));
            let p = a.get_pixel(10, 10).0;
            // Brightening never makes 250 smaller than it gets darker; R ≥ G always.
            assert!(p[0] >= p[2] && p[2] >= p[1], "{p:?}");
            // A bright draw saturates R at 255 rather than wrapping to a small value.
            if p[2] > 128 {
                assert!(p[0] == 255 || p[0] > 250);
            }
        }
    }

    #[test]
    fn validate_rejects_bad_strengths() {
        assert!(Augment::default().validate().is_ok());
        assert!(Augment {
            contrast: -0.1,
            ..Augment::default()
        }
        .validate()
        .is_err());
        assert!(Augment {
            brightness: f32::NAN,
            ..Augment::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn rotation_and_grey_follow_their_closed_forms() {
        let pre = Preprocess::compact_default();
        let src = source(&pre);
        let (w, h) = src.dimensions();
        let side = pre.image_size as f32;
        let (x0, y0) = ((w as f32 - side) / 2.0, (h as f32 - side) / 2.0);
        // Rotation only: the draw is the angle; the view is the rotated window of that angle.
        let rot = Augment {
            rotate: 10.0,
            ..Augment::none()
        };
        let mut seen = Vec::new();
        for seed in 0..8 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let got = rot.apply(&src, pre.image_size, &mut rng);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let deg = (rng.random::<f32>() * 2.0 - 1.0) * 10.0;
            assert!(deg.abs() <= 10.0);
            let want = window_bilinear_rotated(
                &src,
                x0,
                y0,
                side,
                pre.image_size,
                false,
                deg.to_radians(),
            );
            assert_eq!(got, want, "seed {seed}");
            seen.push(got);
        }
        assert_ne!(seen[0], seen[1]);
        // Grey with probability 1: every pixel is the luma of the plain view.
        let grey = Augment {
            grayscale: 1.0,
            ..Augment::none()
        };
        let plain = pre.from_source(&src, 0.15);
        let g = grey.apply(
            &src,
            pre.image_size,
            &mut rand::rngs::StdRng::seed_from_u64(1),
        );
        for (p, q) in plain.pixels().zip(g.pixels()) {
            let y = 0.299 * p.0[0] as f32 + 0.587 * p.0[1] as f32 + 0.114 * p.0[2] as f32;
            assert_eq!(q.0, [y.round() as u8; 3]);
        }
        // Probability ½ greys some views and leaves the others exactly plain.
        let half = Augment {
            grayscale: 0.5,
            ..Augment::none()
        };
        let (mut n_grey, mut n_plain) = (0, 0);
        for seed in 0..40 {
            let v = half.apply(
                &src,
                pre.image_size,
                &mut rand::rngs::StdRng::seed_from_u64(seed),
            );
            if v == plain {
                n_plain += 1;
            } else {
                assert_eq!(v, g);
                n_grey += 1;
            }
        }
        assert!(n_grey > 5 && n_plain > 5, "{n_grey} grey, {n_plain} plain");
        // Out-of-range strengths are refused by name.
        for bad in [
            Augment {
                rotate: 50.0,
                ..Augment::none()
            },
            Augment {
                rotate: f32::NAN,
                ..Augment::none()
            },
            Augment {
                grayscale: 1.5,
                ..Augment::none()
            },
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("rotate") || e.contains("grayscale"), "{e}");
        }
        // Options serialised before these fields existed still load, with both off.
        let old: Augment = serde_json::from_str(
            r#"{"flip":true,"scale_jitter":0.1,"translate_jitter":0.05,"brightness":0.2,"contrast":0.2}"#,
        )
        .unwrap();
        assert_eq!(old, Augment::default());
    }
}
