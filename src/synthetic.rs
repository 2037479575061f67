//! Synthetic, face-like images with identities, generated from a seed.
//!
//! Used by `candle-face demo` (train and verify with no data at hand) and by the tests, which
//! must not depend on real photographs. Each identity is a fixed set of facial parameters (face
//! shape, skin and hair colour, eye spacing and size, brows, nose, mouth); each image of an
//! identity varies pose (shift, scale, small rotation), lighting, background and noise. They are
//! cartoons, not faces: a model trained on them is only useful to exercise the pipeline.

use crate::{Error, Result};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// The fixed parameters of one synthetic person.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    face_w: f32,
    face_h: f32,
    skin: [f32; 3],
    hair: [f32; 3],
    hairline: f32,
    eye_dx: f32,
    eye_y: f32,
    eye_r: f32,
    iris: [f32; 3],
    brow_tilt: f32,
    brow_thick: f32,
    nose_len: f32,
    nose_w: f32,
    mouth_y: f32,
    mouth_w: f32,
    mouth_curve: f32,
}

impl Identity {
    /// Draws the parameters of person `id` from `seed` (the same pair always gives the same person).
    pub fn new(seed: u64, id: u64) -> Self {
        let mut r = rand::rngs::StdRng::seed_from_u64(
            seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17),
        );
        let mut u = |a: f32, b: f32| a + (b - a) * r.random::<f32>();
        let tone = u(0.25, 0.95);
        Identity {
            face_w: u(0.26, 0.36),
            face_h: u(0.34, 0.44),
            skin: [tone, tone * u(0.7, 0.9), tone * u(0.55, 0.8)],
            hair: [u(0.0, 0.8), u(0.0, 0.6), u(0.0, 0.4)],
            hairline: u(-0.30, -0.12),
            eye_dx: u(0.09, 0.16),
            eye_y: u(-0.10, 0.0),
            eye_r: u(0.025, 0.05),
            iris: [u(0.0, 0.5), u(0.0, 0.6), u(0.0, 0.8)],
            brow_tilt: u(-0.25, 0.25),
            brow_thick: u(0.01, 0.03),
            nose_len: u(0.06, 0.14),
            nose_w: u(0.02, 0.05),
            mouth_y: u(0.15, 0.24),
            mouth_w: u(0.07, 0.15),
            mouth_curve: u(-0.6, 0.6),
        }
    }

    /// Renders one `size`×`size` image of this person; `variation` picks pose, lighting and noise.
    pub fn render(&self, size: u32, variation: u64) -> RgbImage {
        let mut r = rand::rngs::StdRng::seed_from_u64(variation);
        let mut u = |a: f32, b: f32| a + (b - a) * r.random::<f32>();
        let (cx, cy) = (u(-0.04, 0.04), u(-0.04, 0.04));
        let scale = u(0.92, 1.08);
        let angle = u(-0.12, 0.12);
        let light = u(0.75, 1.2);
        let light_dir = u(-0.3, 0.3);
        let bg = [u(0.0, 1.0), u(0.0, 1.0), u(0.0, 1.0)];
        let noise_amp = u(0.0, 0.05);
        let (sa, ca) = angle.sin_cos();
        let mut img = RgbImage::new(size, size);
        let mut noise = rand::rngs::StdRng::seed_from_u64(variation ^ 0xA5A5);
        for py in 0..size {
            for px in 0..size {
                // Image coordinates in [-0.5, 0.5], then into the face frame.
                let x0 = (px as f32 + 0.5) / size as f32 - 0.5 - cx;
                let y0 = (py as f32 + 0.5) / size as f32 - 0.5 - cy;
                let x = (ca * x0 + sa * y0) / scale;
                let y = (-sa * x0 + ca * y0) / scale;
                let mut c = self.shade(x, y, bg);
                let l = light * (1.0 + light_dir * x0);
                let n = noise_amp * (noise.random::<f32>() - 0.5);
                for v in &mut c {
                    *v = (*v * l + n).clamp(0.0, 1.0);
                }
                img.put_pixel(
                    px,
                    py,
                    Rgb([
                        (c[0] * 255.0) as u8,
                        (c[1] * 255.0) as u8,
                        (c[2] * 255.0) as u8,
                    ]),
                );
            }
        }
        img
    }

    /// Colour at face-frame coordinates (x, y).
    fn shade(&self, x: f32, y: f32, bg: [f32; 3]) -> [f32; 3] {
        let e = (x / self.face_w).powi(2) + (y / self.face_h).powi(2);
        let hair_e =
            (x / (self.face_w * 1.12)).powi(2) + ((y + 0.03) / (self.face_h * 1.1)).powi(2);
        if e > 1.0 {
            if hair_e <= 1.0 && y < 0.05 {
                return self.hair;
            }
            return bg;
        }
        if y < self.hairline * self.face_h / 0.34 + 0.02 * (x * 20.0).sin() {
            return self.hair;
        }
        for side in [-1.0f32, 1.0] {
            let ex = x - side * self.eye_dx;
            let ey = y - self.eye_y;
            let d = (ex * ex + (ey * 1.6).powi(2)).sqrt();
            if d < self.eye_r * 0.55 {
                return self.iris;
            }
            if d < self.eye_r {
                return [0.95, 0.95, 0.95];
            }
            let by = self.eye_y - self.eye_r * 1.8 + side * self.brow_tilt * ex;
            if ex.abs() < self.eye_r * 1.6 && (y - by).abs() < self.brow_thick {
                return [self.hair[0] * 0.7, self.hair[1] * 0.7, self.hair[2] * 0.7];
            }
        }
        let ny = y - self.eye_y;
        if ny > 0.0 && ny < self.nose_len && x.abs() < self.nose_w * (ny / self.nose_len) {
            return [self.skin[0] * 0.8, self.skin[1] * 0.75, self.skin[2] * 0.7];
        }
        let my = y - self.mouth_y - self.mouth_curve * (x * x) * 4.0;
        if x.abs() < self.mouth_w && my.abs() < 0.012 {
            return [0.6, 0.15, 0.2];
        }
        self.skin
    }
}

/// Writes a labelled folder `dir/person_XXX/img_YY.png` with `people` × `images` synthetic images.
/// Returns the paths written, grouped by person.
pub fn write_dataset(
    dir: &Path,
    people: usize,
    images: usize,
    size: u32,
    seed: u64,
) -> Result<Vec<Vec<PathBuf>>> {
    let mut out = Vec::with_capacity(people);
    for p in 0..people {
        let id = Identity::new(seed, p as u64);
        let pdir = dir.join(format!("person_{p:03}"));
        std::fs::create_dir_all(&pdir).map_err(|e| Error::io(&pdir, e))?;
        let mut paths = Vec::with_capacity(images);
        for i in 0..images {
            let img = id.render(
                size,
                seed.wrapping_mul(31).wrapping_add((p * 1000 + i) as u64),
            );
            let path = pdir.join(format!("img_{i:02}.png"));
            img.save(&path).map_err(|e| Error::image(&path, e))?;
            paths.push(path);
        }
        out.push(paths);
    }
    Ok(out)
}

/// Writes a model folder for a tiny compact CNN (channels 4 and 8, 8-d embedding, 16×16 input)
/// with freshly initialised, untrained weights and the given threshold; `flip_tta` sets the
/// preprocessing's test-time flip. For tests, fuzz seeds and examples that need a real, loadable
/// model folder quickly; its embeddings mean nothing.
pub fn write_untrained_model(
    dir: &Path,
    threshold: f32,
    flip_tta: bool,
) -> Result<crate::model::ModelConfig> {
    use crate::image::preprocess::Preprocess;
    use crate::model::{save_model, Architecture, CompactCnnConfig, EmbeddingNet, ModelConfig};
    let arch = Architecture::CompactCnn(CompactCnnConfig {
        channels: vec![4, 8],
        embedding_dim: 8,
        image_size: 16,
        ..Default::default()
    });
    let mut cfg = ModelConfig::new(
        arch,
        Preprocess {
            image_size: 16,
            flip_tta,
            ..Preprocess::compact_default()
        },
    );
    cfg.set_threshold(threshold, "untrained demo model");
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(
        &varmap,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    );
    EmbeddingNet::new(&cfg.architecture, vb)?;
    save_model(dir, &cfg, &varmap)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        let a = Identity::new(1, 0).render(32, 5);
        let b = Identity::new(1, 0).render(32, 5);
        assert_eq!(a, b);
        let c = Identity::new(1, 1).render(32, 5);
        assert_ne!(a, c);
        let d = Identity::new(1, 0).render(32, 6);
        assert_ne!(a, d);
    }
}
