//! Data preparation for a run: the folder scanned and split by identity, the images decoded into
//! caches, the validation pairs drawn, and the notes that describe the run.

use std::sync::Arc;

use super::events::TrainEvent;
use super::options::TrainOptions;
use super::validate::ValPairs;
use crate::data::augment::Augment;
use crate::data::image_folder::Split;
use crate::data::loader::ImageCache;
use crate::data::ImageFolder;
use crate::image::preprocess::Preprocess;
use crate::Result;

/// Fraction of extra context cached around the crop for augmentation.
pub const CACHE_MARGIN: f32 = 0.15;

/// The images and pairs of a run.
pub(crate) struct TrainData {
    /// The training people's images.
    pub train_cache: Arc<ImageCache>,
    /// The validation people's images (none when no one is held out).
    val_cache: Option<ImageCache>,
    /// Pairs of validation images.
    val_pairs: ValPairs,
    /// Pairs of training images, drawn only when the validation pairs are not usable.
    train_pairs: ValPairs,
    /// True when the threshold is calibrated on training pairs.
    pub calibrate_on_train: bool,
    /// Training images.
    pub train_images: usize,
    /// Training people.
    pub train_people: usize,
    /// Validation people.
    pub val_people: usize,
    /// What the run does differently from the defaults, and what was found in the data.
    pub notes: Vec<String>,
}

impl TrainData {
    /// Scans and splits `opts.data`, decodes the images and draws the validation pairs,
    /// reporting progress and skipped files; ends with [`TrainEvent::Dataset`].
    pub fn prepare(opts: &TrainOptions, on_event: &mut dyn FnMut(TrainEvent)) -> Result<Self> {
        let folder = ImageFolder::scan(&opts.data)?;
        let split = folder.split(opts.val_fraction, opts.seed);
        let mut notes: Vec<String> = split.note.iter().cloned().collect();
        notes.extend(option_notes(opts));
        let (train_cache, val_cache) = build_caches(&split, &opts.preprocess, on_event)?;
        let bad =
            train_cache.failures().len() + val_cache.as_ref().map_or(0, |c| c.failures().len());
        if bad > 0 {
            notes.push(format!(
                "skipped {bad} of {} files that could not be decoded",
                folder.num_images()
            ));
        }
        let mut data = Self {
            train_images: train_cache.images_per_person().iter().sum(),
            train_people: train_cache.num_people(),
            val_people: val_cache.as_ref().map_or(0, |c| c.num_people()),
            train_cache: Arc::new(train_cache),
            val_cache,
            val_pairs: ValPairs::default(),
            train_pairs: ValPairs::default(),
            calibrate_on_train: true,
            notes,
        };
        data.draw_pairs(opts, split.note.is_none());
        on_event(TrainEvent::Dataset {
            summary: folder.summary(),
            train_people: data.train_people,
            train_images: data.train_images,
            val_people: data.val_people,
            val_pairs: data.score_pairs().1.len(),
            notes: data.notes.clone(),
        });
        Ok(data)
    }

    /// Draws the validation pairs, or, when they are not usable, training pairs to calibrate
    /// the threshold on (with a note unless the split already explained why).
    fn draw_pairs(&mut self, opts: &TrainOptions, explain: bool) {
        if let Some(c) = &self.val_cache {
            let p = ValPairs::generate(&c.images_per_person(), opts.val_pairs, opts.seed ^ 0x5eed);
            if p.usable() {
                self.val_pairs = p;
                self.calibrate_on_train = false;
                return;
            }
        }
        if explain {
            self.notes.push(
                "too few validation people with two or more images: the threshold is calibrated on training pairs (optimistic)".into(),
            );
        }
        self.train_pairs = ValPairs::generate(
            &self.train_cache.images_per_person(),
            opts.val_pairs,
            opts.seed ^ 0x7a1,
        );
    }

    /// The images and pairs that validation scores and the threshold is calibrated on: the
    /// validation pairs, or the training pairs when those are not usable.
    pub fn score_pairs(&self) -> (&ImageCache, &ValPairs) {
        match (&self.val_cache, self.calibrate_on_train) {
            (Some(c), false) => (c, &self.val_pairs),
            _ => (&self.train_cache, &self.train_pairs),
        }
    }
}

/// Notes on the options that change what is trained, in the order they are reported.
fn option_notes(opts: &TrainOptions) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(src) = &opts.init {
        notes.push(format!("fine-tuned from {src}"));
    }
    if !opts.freeze.is_empty() {
        notes.push(format!("frozen parameters: {}", opts.freeze.join(", ")));
    }
    if let Some((at, mining)) = opts.mining_switch {
        notes.push(format!(
            "mining: {} until step {at}, {mining} from then on",
            opts.loss.mining
        ));
    }
    if opts.augment != Augment::default() {
        let a = &opts.augment;
        notes.push(if *a == Augment::none() {
            "no augmentation".to_string()
        } else {
            format!(
                "augmentation: flip {}, scale ±{}, shift ±{}, brightness ±{}, contrast ±{}, rotation ±{}°, greyscale p={}",
                a.flip, a.scale_jitter, a.translate_jitter, a.brightness, a.contrast, a.rotate, a.grayscale
            )
        });
    }
    if let Some(id) = &opts.id_loss {
        notes.push(format!(
            "identity loss: CosFace over the training people with {}+ images, scale {}, margin {}, weight {}",
            id.min_images, id.scale, id.margin, id.weight
        ));
    }
    if opts.singletons_per_batch > 0 {
        notes.push(format!(
            "{} of the {} people of each batch have a single image (augmented views of it)",
            opts.singletons_per_batch, opts.people_per_batch
        ));
    }
    notes
}

/// Decodes the training and (when anyone is held out) validation images, reporting progress
/// and each file that could not be used.
fn build_caches(
    split: &Split,
    pre: &Preprocess,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<(ImageCache, Option<ImageCache>)> {
    let mut caching = |done: usize, total: usize| on_event(TrainEvent::Caching { done, total });
    let train_cache = build_cache(&split.train, pre, &mut caching)?;
    let val_cache = if split.val.people.is_empty() {
        None
    } else {
        Some(build_cache(&split.val, pre, &mut caching)?)
    };
    for (path, reason) in train_cache
        .failures()
        .iter()
        .chain(val_cache.iter().flat_map(|c| c.failures().iter()))
    {
        on_event(TrainEvent::Skipped {
            path: path.clone(),
            reason: reason.clone(),
        });
    }
    Ok((train_cache, val_cache))
}

/// Decodes the images of `folder` into a cache, reporting progress as (done, total).
fn build_cache(
    folder: &ImageFolder,
    pre: &Preprocess,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ImageCache> {
    let total = folder.num_images();
    progress(0, total);
    let cache = ImageCache::build(folder, pre, CACHE_MARGIN, None)?;
    progress(total, total);
    Ok(cache)
}
