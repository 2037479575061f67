//! The detection models built into the crate, so detection works with no download.
//!
//! `models/mtcnn/{pnet,rnet,onet}.safetensors` are facenet-pytorch 2.6.0's `data/{p,r,o}net.pt`
//! (MIT licence, © Timothy Esler; the networks of Zhang et al., 2016) converted with
//! [`crate::convert::convert_mtcnn_pt`], tensors unchanged. About 2 MB in all.

use super::hog_detector::DlibFrontalDetector;
use super::mtcnn::{Mtcnn, MtcnnConfig};
use super::shape_predictor::ShapePredictor;
use crate::{Error, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// Where the bundled detector weights come from, for `--help` texts and model cards.
pub const BUNDLED_MTCNN_NOTICE: &str = "MTCNN weights from facenet-pytorch 2.6.0 (MIT licence, \
    (c) Timothy Esler), converted to safetensors unchanged";

const PNET: &[u8] = include_bytes!("../../models/mtcnn/pnet.safetensors");
const RNET: &[u8] = include_bytes!("../../models/mtcnn/rnet.safetensors");
const ONET: &[u8] = include_bytes!("../../models/mtcnn/onet.safetensors");

const LANDMARKS5: &[u8] =
    include_bytes!("../../models/dlib-landmarks5/shape_predictor_5_face_landmarks.dat");

/// Where the bundled landmark model comes from.
pub const BUNDLED_LANDMARKS_NOTICE: &str = "dlib's shape_predictor_5_face_landmarks.dat \
    (Davis King, public domain / CC0), unchanged";

/// dlib's 5-point landmark model (`models/dlib-landmarks5/shape_predictor_5_face_landmarks.dat`,
/// public domain), parsed once on first use.
pub fn bundled_landmarks() -> Result<&'static ShapePredictor> {
    static SP: std::sync::OnceLock<std::result::Result<ShapePredictor, String>> =
        std::sync::OnceLock::new();
    SP.get_or_init(|| ShapePredictor::from_dlib_bytes(LANDMARKS5).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::weights("<bundled shape_predictor_5_face_landmarks.dat>", e))
}

const HOG_FRONTAL: &[u8] =
    include_bytes!("../../models/dlib-hog-frontal/frontal_face_detector.svm");

/// Where the bundled HOG face detector comes from.
pub const BUNDLED_HOG_NOTICE: &str = "dlib 20.0.1's get_frontal_face_detector() weights \
    (Davis King, Boost Software License 1.0), saved by dlib unchanged";

/// dlib's HOG frontal face detector (`models/dlib-hog-frontal/frontal_face_detector.svm`, Boost
/// Software License), parsed once on first use.
pub fn bundled_hog_detector() -> Result<&'static DlibFrontalDetector> {
    static DET: std::sync::OnceLock<std::result::Result<DlibFrontalDetector, String>> =
        std::sync::OnceLock::new();
    DET.get_or_init(|| DlibFrontalDetector::from_dlib_bytes(HOG_FRONTAL).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::weights("<bundled frontal_face_detector.svm>", e))
}

/// The bundled MTCNN detector on `device`, with facenet-pytorch's default settings.
pub fn bundled_mtcnn(device: &Device) -> Result<Mtcnn> {
    let vb = |bytes: &[u8], name: &str| {
        VarBuilder::from_buffered_safetensors(bytes.to_vec(), DType::F32, device)
            .map_err(|e| Error::weights(format!("<bundled {name}>"), e))
    };
    Mtcnn::from_varbuilders(
        vb(PNET, "pnet.safetensors")?,
        vb(RNET, "rnet.safetensors")?,
        vb(ONET, "onet.safetensors")?,
        MtcnnConfig::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_detector_loads_and_finds_nothing_in_a_flat_image() {
        let m = bundled_mtcnn(&Device::Cpu).unwrap();
        let img = image::RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
        assert!(m.detect(&img).unwrap().is_empty());
    }

    #[test]
    fn bundled_hog_detector_parses_and_finds_nothing_in_a_flat_image() {
        let det = bundled_hog_detector().unwrap();
        assert_eq!(det.num_filters(), 5);
        let img = image::RgbImage::from_pixel(120, 100, image::Rgb([128, 128, 128]));
        assert!(det.detect(&img, 1).is_empty());
    }

    #[test]
    fn bundled_landmark_model_parses() {
        assert_eq!(bundled_landmarks().unwrap().num_parts(), 5);
    }
}
