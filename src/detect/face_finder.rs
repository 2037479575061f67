//! [`FaceFinder`]: detection + crop in front of an embedding model, for raw photos.

use super::{bundled_mtcnn, Face, FaceCrop, FacePick, Mtcnn};
use crate::image::equalize;
use crate::{Error, Result};
use candle_core::Device;
use image::RgbImage;
use std::path::Path;

/// Finds the main face of a photo (by default the largest MTCNN detection; see
/// [`FaceFinder::with_pick`]) and cuts it out with a [`FaceCrop`] recipe, ready for the model's
/// own preprocessing.
#[derive(Debug, Clone)]
pub struct FaceFinder {
    mtcnn: Mtcnn,
    crop: FaceCrop,
    pick: FacePick,
}

impl FaceFinder {
    /// A finder from a loaded detector and a crop recipe.
    pub fn new(mtcnn: Mtcnn, crop: FaceCrop) -> Result<Self> {
        crop.validate()?;
        Ok(Self {
            mtcnn,
            crop,
            pick: FacePick::Largest,
        })
    }

    /// Chooses the main face of photos with several this way instead of the largest (e.g.
    /// [`FacePick::Central`] for photos centred on their subject, like LFW's).
    pub fn with_pick(mut self, pick: FacePick) -> Self {
        self.pick = pick;
        self
    }

    /// How the main face is chosen.
    pub fn pick(&self) -> FacePick {
        self.pick
    }

    /// The detector built into the crate ([`bundled_mtcnn`]) with `crop`.
    pub fn bundled(crop: FaceCrop, device: &Device) -> Result<Self> {
        Self::new(bundled_mtcnn(device)?, crop)
    }

    /// The crop recipe.
    pub fn crop(&self) -> &FaceCrop {
        &self.crop
    }

    /// The detector.
    pub fn detector(&self) -> &Mtcnn {
        &self.mtcnn
    }

    /// Every face in `img`, largest first, each with its crop.
    pub fn find_all(&self, img: &RgbImage) -> Result<Vec<(Face, RgbImage)>> {
        let faces = self.mtcnn.detect(img)?;
        let crops = self.crop.apply_all(img, &faces)?;
        Ok(faces.into_iter().zip(crops).collect())
    }

    /// The crop of the main face in `img` ([`pick`](Self::pick)); [`Error::NoFace`] naming
    /// `path` when there is none.
    ///
    /// A photo where nothing is found, or only faces smaller than a third of its shorter side,
    /// is searched again inside a black border a quarter of its longer side wide: in a tight
    /// face crop (the face touching the image edges, as in many face datasets) the detector
    /// has no room for the face's box and may find nothing, or only a spurious small face.
    pub fn find(&self, img: &RgbImage, path: &Path) -> Result<RgbImage> {
        let mut faces = self.mtcnn.detect(img)?;
        let small = img.width().min(img.height()) as f32 / 3.0;
        if faces.iter().all(|f| f.width().max(f.height()) < small) {
            let framed = self.detect_in_border(img)?;
            if !framed.is_empty() {
                faces = framed;
            }
        }
        if faces.is_empty() {
            // Faces in deep shadow: search an equalized copy (the crop still comes from `img`).
            faces = self.detect_in_border(&equalize(img))?;
        }
        let face = self
            .pick
            .choose(&faces, img.width(), img.height())
            .ok_or_else(|| Error::NoFace {
                path: path.to_path_buf(),
            })?;
        self.crop.apply(img, face)
    }

    /// Detection on `img` inside a black border, in `img`'s coordinates.
    fn detect_in_border(&self, img: &RgbImage) -> Result<Vec<Face>> {
        let pad = (img.width().max(img.height()) / 4).max(8);
        let mut framed = RgbImage::new(img.width() + 2 * pad, img.height() + 2 * pad);
        image::imageops::replace(&mut framed, img, pad as i64, pad as i64);
        let shift = pad as f32;
        let mut faces = self.mtcnn.detect(&framed)?;
        for f in &mut faces {
            f.bbox.iter_mut().for_each(|v| *v -= shift);
            f.landmarks.iter_mut().flatten().for_each(|v| *v -= shift);
        }
        Ok(faces)
    }
}
