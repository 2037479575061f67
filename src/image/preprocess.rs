//! The preprocessing recipe: a named value stored in a model's `config.json`, never an
//! implicit default (facenet-pytorch's users were bitten by defaults that differed between
//! detection and embedding).
//!
//! Pipeline: centre square crop whose side is `crop_fraction` × the shorter image side, resize
//! to `image_size × image_size` with a triangle (anti-aliased bilinear) filter, RGB, then
//! `(x − mean) / std` per channel; with `mean = 127.5, std = 128` this is facenet-pytorch's
//! `fixed_image_standardization`.
//!
//! Training caches each image once as a slightly larger *source* ([`Preprocess::prepare_source`]):
//! the same crop enlarged by a margin, at `cache_size = image_size + 2·round(image_size·margin/2)`
//! pixels, so the recipe's window is exactly the central `image_size` pixels of the source
//! (same sample positions and filter width as [`Preprocess::prepare`]). Validation takes that
//! central window ([`Preprocess::from_source`]); augmentation takes jittered windows around it.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::image::load_image;
use crate::image::resample::{window_bilinear, window_triangle};
use crate::{Error, Result};

/// How an image becomes a network input (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Side of the square network input, in pixels.
    pub image_size: u32,
    /// Side of the centre crop as a fraction of the image's shorter side (1.0 = the whole
    /// shorter side).
    pub crop_fraction: f32,
    /// Subtracted from every 0–255 channel value (unless [`channel_mean`](Self::channel_mean) is
    /// set).
    pub mean: f32,
    /// Per-channel values subtracted from R, G and B instead of [`mean`](Self::mean) (dlib's
    /// networks: 122.782, 117.001, 104.298).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_mean: Option<[f32; 3]>,
    /// Divides the centred value.
    pub std: f32,
    /// Whether embeddings average the image and its horizontal mirror (test-time augmentation),
    /// renormalised to unit length. This moves the distances: a threshold calibrated without it
    /// does not hold (dlib's ResNet, whose 0.6 is for its raw descriptors, falls to 63% at 0.6
    /// on `faceapi_bbt` with it, best threshold 0.41): recalibrate after turning it on.
    pub flip_tta: bool,
}

impl Preprocess {
    /// The compact CNN's recipe: 64×64 from the central half of the image.
    ///
    /// On LFW deep-funneled images (250×250, face roughly centred) the face sits in about the
    /// central 120–150 px, so `crop_fraction = 0.5` (a 125 px crop) keeps the face and little
    /// background, at a size a small CPU-trained network can afford.
    pub fn compact_default() -> Preprocess {
        Preprocess {
            image_size: 64,
            crop_fraction: 0.5,
            mean: 127.5,
            std: 128.0,
            flip_tta: false,
            channel_mean: None,
        }
    }

    /// facenet-pytorch's InceptionResnetV1 recipe: 160×160, the whole image (which is expected
    /// to be a face crop already, e.g. MTCNN output), fixed standardization.
    pub fn facenet() -> Preprocess {
        Preprocess {
            image_size: 160,
            crop_fraction: 1.0,
            mean: 127.5,
            std: 128.0,
            flip_tta: false,
            channel_mean: None,
        }
    }

    /// dlib's face-recognition recipe: the whole 150×150 face chip, `(x − mean_c) / 256` with
    /// the network's per-channel means (R, G, B).
    pub fn dlib(image_size: u32, mean_rgb: [f32; 3]) -> Preprocess {
        Preprocess {
            image_size,
            crop_fraction: 1.0,
            mean: (mean_rgb[0] + mean_rgb[1] + mean_rgb[2]) / 3.0,
            std: 256.0,
            flip_tta: false,
            channel_mean: Some(mean_rgb),
        }
    }

    /// Checks that the recipe's numbers are usable.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.image_size == 0 || self.image_size > 4096 {
            return Err(Error::InvalidArgument(format!(
                "preprocess.image_size must be in 1..=4096, got {}",
                self.image_size
            )));
        }
        if !(self.crop_fraction.is_finite()
            && self.crop_fraction > 0.0
            && self.crop_fraction <= 4.0)
        {
            return Err(Error::InvalidArgument(format!(
                "preprocess.crop_fraction must be in (0, 4], got {}",
                self.crop_fraction
            )));
        }
        let channels_ok = self
            .channel_mean
            .is_none_or(|m| m.iter().all(|v| v.is_finite()));
        if !(self.mean.is_finite() && channels_ok && self.std.is_finite() && self.std > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "preprocess.mean must be finite and preprocess.std positive, got mean {} std {}",
                self.mean, self.std
            )));
        }
        Ok(())
    }

    /// Side of the cached source image for `margin` (e.g. 0.15):
    /// `image_size + 2·round(image_size·margin/2)`, so the recipe's window is centred on whole
    /// pixels. A negative or non-finite margin counts as 0.
    pub fn cache_size(&self, margin: f32) -> u32 {
        let m = if margin.is_finite() {
            margin.max(0.0)
        } else {
            0.0
        };
        let pad = (self.image_size as f32 * m / 2.0).round() as u32;
        self.image_size + 2 * pad
    }

    /// Centre square window of `img` whose side is `crop_fraction × shorter side × factor`.
    fn centre_window(&self, img: &RgbImage, factor: f64) -> (f64, f64, f64) {
        let (w, h) = img.dimensions();
        let side = self.crop_fraction as f64 * w.min(h) as f64 * factor;
        ((w as f64 - side) / 2.0, (h as f64 - side) / 2.0, side)
    }

    /// Crop and resize: the `image_size × image_size` 8-bit RGB image the network sees.
    pub fn prepare(&self, img: &RgbImage) -> RgbImage {
        let (x0, y0, side) = self.centre_window(img, 1.0);
        window_triangle(img, x0, y0, side, self.image_size)
    }

    /// The cached source for training: the recipe's crop enlarged by `margin` on the same
    /// scale, `cache_size(margin)` pixels square (windows past the image border repeat edge
    /// pixels).
    pub fn prepare_source(&self, img: &RgbImage, margin: f32) -> RgbImage {
        let cs = self.cache_size(margin);
        let factor = cs as f64 / self.image_size.max(1) as f64;
        let (x0, y0, side) = self.centre_window(img, factor);
        window_triangle(img, x0, y0, side, cs)
    }

    /// The deterministic centre window of a source made by [`prepare_source`](Self::prepare_source)
    /// with the same `margin`: equal to [`prepare`](Self::prepare) on the original image up to
    /// rounding, and to [`Augment::apply`](crate::data::Augment::apply) with zero jitter.
    /// A source of another size is resampled proportionally.
    pub fn from_source(&self, src: &RgbImage, margin: f32) -> RgbImage {
        let s = self.image_size;
        let cs = self.cache_size(margin);
        let (w, h) = src.dimensions();
        if w == cs && h == cs {
            let pad = (cs - s) / 2;
            return image::imageops::crop_imm(src, pad, pad, s, s).to_image();
        }
        let side = w.min(h) as f32 * s as f32 / cs as f32;
        window_bilinear(
            src,
            (w as f32 - side) / 2.0,
            (h as f32 - side) / 2.0,
            side,
            s,
            false,
        )
    }

    /// Decodes `path` ([`load_image`]) and [`prepare`](Self::prepare)s it.
    ///
    /// # Errors
    /// As [`load_image`].
    pub fn load(&self, path: &Path) -> Result<RgbImage> {
        Ok(self.prepare(&load_image(path)?))
    }

    /// Stacks prepared images into an `(N, 3, S, S)` f32 tensor standardized as
    /// `(x − mean) / std`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `imgs` is empty or an image is not `S × S`.
    pub fn to_tensor(&self, imgs: &[RgbImage], device: &Device) -> Result<Tensor> {
        if imgs.is_empty() {
            return Err(Error::InvalidArgument(
                "to_tensor: no images given".to_string(),
            ));
        }
        let s = self.image_size as usize;
        let plane = s * s;
        let mut data = vec![0f32; imgs.len() * 3 * plane];
        let inv = 1.0 / self.std;
        let mean = self.channel_mean.unwrap_or([self.mean; 3]);
        for (n, img) in imgs.iter().enumerate() {
            if img.dimensions() != (self.image_size, self.image_size) {
                return Err(Error::InvalidArgument(format!(
                    "to_tensor: image {n} is {}×{}, expected {s}×{s} (run Preprocess::prepare first)",
                    img.width(),
                    img.height()
                )));
            }
            let base = n * 3 * plane;
            for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
                for c in 0..3 {
                    data[base + c * plane + i] = (px[c] as f32 - mean[c]) * inv;
                }
            }
        }
        Ok(Tensor::from_vec(data, (imgs.len(), 3, s, s), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A 4×2 image with distinct values: pixel (x, y) = (10x + 100y, 2x + 50y, 200 − 30x − 7y).
    fn four_by_two() -> RgbImage {
        RgbImage::from_fn(4, 2, |x, y| {
            Rgb([
                (10 * x + 100 * y) as u8,
                (2 * x + 50 * y) as u8,
                (200 - 30 * x - 7 * y) as u8,
            ])
        })
    }

    #[test]
    fn hand_computed_values() {
        let img = four_by_two();
        let pre = Preprocess {
            image_size: 2,
            crop_fraction: 1.0,
            mean: 127.5,
            std: 128.0,
            flip_tta: false,
            channel_mean: None,
        };
        // Crop: the shorter side is 2, so the centre 2×2 window is columns 1..=2; resizing
        // 2→2 is the identity. Pixel (0,0) of the output is source (1,0) = (10, 2, 170).
        let p = pre.prepare(&img);
        assert_eq!(p.dimensions(), (2, 2));
        assert_eq!(p.get_pixel(0, 0).0, [10, 2, 170]);
        assert_eq!(p.get_pixel(1, 1).0, [120, 54, 133]);
        let t = pre.to_tensor(&[p], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 2, 2]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Channel-major: R plane (10, 20, 110, 120), G plane, B plane.
        let expect = [
            10., 20., 110., 120., 2., 4., 52., 54., 170., 140., 163., 133.,
        ]
        .map(|x: f32| (x - 127.5) / 128.0);
        for (a, b) in v.iter().zip(expect.iter()) {
            assert!((a - b).abs() < 1e-6, "{v:?} vs {expect:?}");
        }
        assert!((v[0] - (-0.91796875)).abs() < 1e-7);

        // To 1×1: the window [1,3)×[0,2) at support 2 weighs columns 0..=3 by (1,3,3,1)/8 and
        // rows 0,1 by ½ each (the out-of-image rows −1 and 2 repeat rows 0 and 1).
        let pre1 = Preprocess {
            image_size: 1,
            ..pre.clone()
        };
        let q = pre1.prepare(&img);
        // R: ½(0+100)·⅛ + ½(10+110)·⅜ + ½(20+120)·⅜ + ½(30+130)·⅛ = 65
        // G: ½(0+50)·⅛ + ½(2+52)·⅜ + ½(4+54)·⅜ + ½(6+56)·⅛ = 28
        // B: ½(200+193)·⅛ + ½(170+163)·⅜ + ½(140+133)·⅜ + ½(110+103)·⅛ = 151.5 → 152
        assert_eq!(q.get_pixel(0, 0).0, [65, 28, 152]);
    }

    #[test]
    fn crop_fraction_selects_centre() {
        // 100×60 image, crop 0.5 → a 30×30 window at (35, 15); resize 30→30 is exact.
        let img = RgbImage::from_fn(100, 60, |x, y| Rgb([x as u8, y as u8, 0]));
        let pre = Preprocess {
            image_size: 30,
            crop_fraction: 0.5,
            ..Preprocess::compact_default()
        };
        let p = pre.prepare(&img);
        assert_eq!(p.get_pixel(0, 0).0, [35, 15, 0]);
        assert_eq!(p.get_pixel(29, 29).0, [64, 44, 0]);
    }

    #[test]
    fn source_centre_window_matches_prepare() {
        let img = RgbImage::from_fn(250, 250, |x, y| {
            Rgb([
                ((x * 7 + y * 3) % 256) as u8,
                ((x * y) % 251) as u8,
                (((x as f32 / 9.0).sin() * 100.0 + 128.0) as u8),
            ])
        });
        for pre in [Preprocess::compact_default(), Preprocess::facenet()] {
            for margin in [0.0f32, 0.15, 0.3] {
                let src = pre.prepare_source(&img, margin);
                let cs = pre.cache_size(margin);
                assert_eq!(src.dimensions(), (cs, cs));
                let a = pre.from_source(&src, margin);
                let b = pre.prepare(&img);
                let worst = a
                    .as_raw()
                    .iter()
                    .zip(b.as_raw())
                    .map(|(x, y)| (*x as i32 - *y as i32).abs())
                    .max()
                    .unwrap();
                assert!(worst <= 1, "margin {margin}: max diff {worst}");
            }
        }
        assert_eq!(Preprocess::compact_default().cache_size(0.15), 74);
        assert_eq!(Preprocess::facenet().cache_size(0.15), 184);
    }

    #[test]
    fn to_tensor_rejects_wrong_size_and_tiny_images_work() {
        let pre = Preprocess::compact_default();
        let e = pre
            .to_tensor(&[RgbImage::new(10, 10)], &Device::Cpu)
            .unwrap_err();
        assert!(e.to_string().contains("expected 64×64"), "{e}");
        // A 1×1 image is simply upscaled.
        let one = RgbImage::from_pixel(1, 1, Rgb([9, 8, 7]));
        let p = pre.prepare(&one);
        assert!(p.pixels().all(|q| q.0 == [9, 8, 7]));
        assert!(pre.validate().is_ok());
        assert!(Preprocess {
            crop_fraction: 0.0,
            ..pre.clone()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn serde_round_trip() {
        let pre = Preprocess::facenet();
        let s = serde_json::to_string(&pre).unwrap();
        let back: Preprocess = serde_json::from_str(&s).unwrap();
        assert_eq!(pre, back);
    }
}
