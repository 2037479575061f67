//! The identity-loss head of [`super::TrainOptions::id_loss`]: one CosFace weight vector per
//! training person with enough images, trained with the network under
//! [`TRAINING_ONLY_PREFIX`] (kept in checkpoints, never in the model folder).

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use crate::loss::{cosface_loss, IdLoss};
use crate::model::TRAINING_ONLY_PREFIX;
use crate::{Error, Result};

/// The identity classifier and the class of each training label.
pub(crate) struct IdHead {
    settings: IdLoss,
    /// For each training label (person), its class, or `None` below `min_images`; classes are
    /// numbered in label order.
    classes: Vec<Option<u32>>,
    /// (classes, embedding size) weights, `training_only.id_head.weight`.
    weight: Tensor,
}

impl IdHead {
    /// Creates the head's weights in `vb` (random normal) for the people of
    /// `images_per_person` with at least `settings.min_images` images; an error when fewer than
    /// two people qualify.
    pub fn new(
        settings: &IdLoss,
        images_per_person: &[usize],
        embedding_dim: usize,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let mut next = 0u32;
        let classes: Vec<Option<u32>> = images_per_person
            .iter()
            .map(|&n| {
                (n >= settings.min_images).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        let n_classes = classes.iter().flatten().count();
        if n_classes < 2 {
            return Err(Error::InvalidArgument(format!(
                "--id-loss: {n_classes} training people have {} or more images; the \
                 identity loss needs at least two",
                settings.min_images
            )));
        }
        let weight = vb
            .pp(TRAINING_ONLY_PREFIX.trim_end_matches('.'))
            .pp("id_head")
            .get_with_hints(
                (n_classes, embedding_dim),
                "weight",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?;
        Ok(Self {
            settings: *settings,
            classes,
            weight,
        })
    }

    /// The weighted CosFace loss of the rows of `emb` whose `labels` have a class; `None` when
    /// no row has one.
    pub fn loss(&self, emb: &Tensor, labels: &Tensor, device: &Device) -> Result<Option<Tensor>> {
        let (rows, classes): (Vec<u32>, Vec<u32>) = labels
            .to_vec1::<u32>()?
            .iter()
            .enumerate()
            .filter_map(|(i, &l)| self.classes[l as usize].map(|c| (i as u32, c)))
            .unzip();
        if rows.is_empty() {
            return Ok(None);
        }
        let n = rows.len();
        let emb = emb.index_select(&Tensor::from_vec(rows, n, device)?, 0)?;
        let classes = Tensor::from_vec(classes, n, device)?;
        let s = &self.settings;
        let ce = cosface_loss(&emb, &self.weight, &classes, s.scale, s.margin)?;
        Ok(Some((ce * s.weight)?))
    }
}
