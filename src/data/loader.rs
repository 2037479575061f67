//! The training data path: an in-memory cache of decoded sources and a prefetching loader that
//! turns P×K samples into augmented, standardized tensors on a background thread.
//!
//! Decoding a JPEG and resizing it cost far more than augmenting a small u8 image, so each
//! image is decoded and cropped once ([`ImageCache::build`], in parallel) into a source of
//! `cache_size = image_size·(1 + margin)` pixels (64 px and margin 0.15 → 74×74×3 ≈ 16 KB;
//! 10k images ≈ 160 MB). Every training step then only samples windows from memory.
//!
//! Reproducibility: batch `step` is the `step`-th draw of a [`PkSampler`] seeded with `seed`,
//! and sample `i` of it is augmented with an RNG seeded from `(seed, step, i)`, so the stream
//! does not depend on thread timing and a run resumed at `start_step` sees the same batches
//! as one that never stopped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use image::RgbImage;
use rand::SeedableRng;
use rayon::prelude::*;

use super::augment::Augment;
use super::image_folder::ImageFolder;
use super::sampler::PkSampler;
use crate::image::load_image;
use crate::image::preprocess::Preprocess;
use crate::{Error, Result};

/// Decoded, cropped sources of every readable image of a folder, grouped by person.
#[derive(Debug, Clone)]
pub struct ImageCache {
    names: Vec<String>,
    paths: Vec<Vec<PathBuf>>,
    images: Vec<Vec<RgbImage>>,
    failures: Vec<(PathBuf, String)>,
    pre: Preprocess,
    margin: f32,
}

impl ImageCache {
    /// Decodes all images of `folder` in parallel into sources
    /// ([`Preprocess::prepare_source`] with `margin`).
    ///
    /// Unreadable images are skipped and listed in [`failures`](Self::failures); a person left
    /// with no image is dropped, so labels here (indices into [`names`](Self::names)) may differ
    /// from the folder's. `progress(done, total)` is called from worker threads as images
    /// finish.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid recipe; [`Error::Dataset`] if no image at all
    /// could be decoded.
    pub fn build(
        folder: &ImageFolder,
        pre: &Preprocess,
        margin: f32,
        progress: Option<&(dyn Fn(usize, usize) + Sync)>,
    ) -> Result<ImageCache> {
        pre.validate()?;
        if !(margin.is_finite() && (0.0..=1.0).contains(&margin)) {
            return Err(Error::InvalidArgument(format!(
                "cache margin must be in [0, 1], got {margin}"
            )));
        }
        let jobs: Vec<(usize, &PathBuf)> = folder
            .people
            .iter()
            .enumerate()
            .flat_map(|(l, p)| p.images.iter().map(move |path| (l, path)))
            .collect();
        let total = jobs.len();
        let decoded = decode_all(&jobs, pre, margin, progress);
        let mut cache = ImageCache {
            names: Vec::new(),
            paths: Vec::new(),
            images: Vec::new(),
            failures: Vec::new(),
            pre: pre.clone(),
            margin,
        };
        cache.group(folder, jobs, decoded);
        if cache.images.is_empty() {
            let first = cache
                .failures
                .first()
                .map(|(p, r)| format!(" (first failure: {}: {r})", p.display()))
                .unwrap_or_default();
            return Err(Error::dataset(
                &folder.root,
                format!("none of the {total} images could be decoded{first}"),
            ));
        }
        Ok(cache)
    }

    /// Files the decoded images under their people (people without one left out) and the
    /// failures with their reasons.
    fn group(
        &mut self,
        folder: &ImageFolder,
        jobs: Vec<(usize, &PathBuf)>,
        decoded: Vec<Result<RgbImage>>,
    ) {
        let n = folder.people.len();
        let mut paths: Vec<Vec<PathBuf>> = vec![Vec::new(); n];
        let mut images: Vec<Vec<RgbImage>> = vec![Vec::new(); n];
        for ((label, path), r) in jobs.into_iter().zip(decoded) {
            match r {
                Ok(img) => {
                    paths[label].push(path.clone());
                    images[label].push(img);
                }
                Err(e) => self.failures.push((path.clone(), error_reason(&e))),
            }
        }
        for ((person, p), imgs) in folder.people.iter().zip(paths).zip(images) {
            if !imgs.is_empty() {
                self.names.push(person.name.clone());
                self.paths.push(p);
                self.images.push(imgs);
            }
        }
    }

    /// Person names; the index is the label used by [`get`](Self::get) and the loader.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of people (labels).
    pub fn num_people(&self) -> usize {
        self.names.len()
    }

    /// Number of cached images.
    pub fn num_images(&self) -> usize {
        self.images.iter().map(Vec::len).sum()
    }

    /// Cached images per label.
    pub fn images_per_person(&self) -> Vec<usize> {
        self.images.iter().map(Vec::len).collect()
    }

    /// The source of image `idx` of person `label`.
    ///
    /// # Panics
    /// If `label` or `idx` is out of range (indices come from this cache's own counts).
    pub fn get(&self, label: usize, idx: usize) -> &RgbImage {
        &self.images[label][idx]
    }

    /// The file the source of `(label, idx)` was decoded from.
    pub fn path(&self, label: usize, idx: usize) -> &PathBuf {
        &self.paths[label][idx]
    }

    /// Images that could not be decoded, with the reason.
    pub fn failures(&self) -> &[(PathBuf, String)] {
        &self.failures
    }

    /// The recipe the sources were prepared for.
    pub fn preprocess(&self) -> &Preprocess {
        &self.pre
    }

    /// The margin the sources were prepared with.
    pub fn margin(&self) -> f32 {
        self.margin
    }

    fn check_recipe(&self, pre: &Preprocess) -> Result<()> {
        if pre.image_size != self.pre.image_size || pre.crop_fraction != self.pre.crop_fraction {
            return Err(Error::InvalidArgument(format!(
                "the image cache was built for image_size {} / crop_fraction {}, not {} / {}",
                self.pre.image_size, self.pre.crop_fraction, pre.image_size, pre.crop_fraction
            )));
        }
        Ok(())
    }

    fn check_item(&self, label: usize, idx: usize) -> Result<()> {
        match self.images.get(label) {
            Some(v) if idx < v.len() => Ok(()),
            _ => Err(Error::InvalidArgument(format!(
                "no cached image ({label}, {idx}): {} people",
                self.images.len()
            ))),
        }
    }
}

/// The reason part of an error (without repeating the path).
fn error_reason(e: &Error) -> String {
    match e {
        Error::Image { reason, .. } => reason.clone(),
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// One training batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `(N, 3, S, S)` f32, standardized by the recipe.
    pub images: Tensor,
    /// `(N,)` u32 labels (indices into [`ImageCache::names`]), P groups of K equal labels.
    pub labels: Tensor,
}

/// Standardized `(N, 3, S, S)` tensor of the deterministic centre windows of `items`
/// (`(label, idx)` pairs of `cache`), for validation and evaluation.
///
/// # Errors
/// If an item is out of range, `pre` does not match the cache, or `items` is empty.
pub fn eval_tensor(
    cache: &ImageCache,
    pre: &Preprocess,
    items: &[(usize, usize)],
    device: &Device,
) -> Result<Tensor> {
    cache.check_recipe(pre)?;
    for &(l, i) in items {
        cache.check_item(l, i)?;
    }
    let imgs: Vec<RgbImage> = items
        .par_iter()
        .map(|&(l, i)| pre.from_source(cache.get(l, i), cache.margin))
        .collect();
    pre.to_tensor(&imgs, device)
}

/// SplitMix64 finaliser: a well-mixed 64-bit value from `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The seed of sample `i` of batch `step` of a run seeded with `seed`.
pub fn sample_seed(seed: u64, step: u64, i: u64) -> u64 {
    mix(mix(mix(seed) ^ step) ^ i)
}

/// Builds batch `step` from the sampler's draw (shared by the thread and by tests).
fn make_batch(
    cache: &ImageCache,
    pre: &Preprocess,
    augment: &Augment,
    items: &[(usize, usize)],
    seed: u64,
    step: u64,
    device: &Device,
) -> Result<Batch> {
    let size = pre.image_size;
    let imgs: Vec<RgbImage> = items
        .par_iter()
        .enumerate()
        .map(|(i, &(l, idx))| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(sample_seed(seed, step, i as u64));
            augment.apply(cache.get(l, idx), size, &mut rng)
        })
        .collect();
    let images = pre.to_tensor(&imgs, device)?;
    let labels: Vec<u32> = items.iter().map(|&(l, _)| l as u32).collect();
    let labels = Tensor::from_vec(labels, items.len(), device)?;
    Ok(Batch { images, labels })
}

/// Prefetching P×K loader: a background thread samples, augments (in parallel) and builds
/// tensors, a few batches ahead. Dropping it stops the thread.
#[derive(Debug)]
pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    p: usize,
    k: usize,
    batches_per_epoch: usize,
    step: u64,
}

/// Batches prepared ahead of the consumer.
pub const PREFETCH: usize = 3;

impl Loader {
    /// Starts the loader at batch `start_step` of the stream defined by `seed`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the sampler cannot be built (see [`PkSampler::new`]), the
    /// recipe does not match the cache, or the augmentation is invalid.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cache: Arc<ImageCache>,
        pre: Preprocess,
        augment: Augment,
        p: usize,
        k: usize,
        seed: u64,
        start_step: u64,
        device: Device,
    ) -> Result<Loader> {
        let sampler = PkSampler::new(&cache.images_per_person(), p, k, seed)?;
        Self::from_sampler(cache, pre, augment, sampler, seed, start_step, device)
    }

    /// Like [`new`](Self::new) with a sampler built by the caller (e.g. with
    /// [`PkSampler::with_singletons`]); `sampler` must be fresh (no batch drawn) and built
    /// over `cache.images_per_person()` with the same `seed`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the recipe does not match the cache or the augmentation
    /// is invalid.
    pub fn from_sampler(
        cache: Arc<ImageCache>,
        pre: Preprocess,
        augment: Augment,
        mut sampler: PkSampler,
        seed: u64,
        start_step: u64,
        device: Device,
    ) -> Result<Loader> {
        cache.check_recipe(&pre)?;
        augment.validate()?;
        sampler.skip(start_step);
        let (p, k, bpe) = (sampler.p(), sampler.k(), sampler.batches_per_epoch());
        let (tx, rx): (SyncSender<Result<Batch>>, _) = std::sync::mpsc::sync_channel(PREFETCH);
        let handle = std::thread::Builder::new()
            .name("candle-face-loader".into())
            .spawn(move || {
                let mut step = start_step;
                loop {
                    let items = sampler.next_batch();
                    let batch = make_batch(&cache, &pre, &augment, &items, seed, step, &device);
                    let failed = batch.is_err();
                    // The receiver is gone: the Loader was dropped.
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                    step += 1;
                }
            })
            .map_err(|e| Error::Msg(format!("cannot start the data loader thread: {e}")))?;
        Ok(Loader {
            rx: Some(rx),
            handle: Some(handle),
            p,
            k,
            batches_per_epoch: bpe,
            step: start_step,
        })
    }

    /// The next batch (blocks until it is ready).
    ///
    /// # Errors
    /// An error raised while building the batch, or [`Error::Msg`] if the loader thread has
    /// stopped.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let rx = self
            .rx
            .as_ref()
            .ok_or_else(|| Error::Msg("the data loader was stopped".into()))?;
        match rx.recv() {
            Ok(b) => {
                self.step += 1;
                b
            }
            Err(_) => Err(Error::Msg(
                "the data loader thread stopped unexpectedly".into(),
            )),
        }
    }

    /// People per batch (possibly reduced, see [`PkSampler::p`]).
    pub fn p(&self) -> usize {
        self.p
    }

    /// Images per person.
    pub fn k(&self) -> usize {
        self.k
    }

    /// See [`PkSampler::batches_per_epoch`].
    pub fn batches_per_epoch(&self) -> usize {
        self.batches_per_epoch
    }

    /// The step of the batch the next call to [`next_batch`](Self::next_batch) returns.
    pub fn step(&self) -> u64 {
        self.step
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel makes the thread's pending or next `send` fail, so it returns.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Decodes and prepares every `(label, path)` job on the thread pool, reporting progress.
fn decode_all(
    jobs: &[(usize, &PathBuf)],
    pre: &Preprocess,
    margin: f32,
    progress: Option<&(dyn Fn(usize, usize) + Sync)>,
) -> Vec<Result<RgbImage>> {
    let (total, done) = (jobs.len(), AtomicUsize::new(0));
    jobs.par_iter()
        .map(|(_, path)| {
            let r = load_image(path).map(|img| pre.prepare_source(&img, margin));
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(f) = progress {
                f(d, total);
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Person;

    fn write_png(path: &std::path::Path, seed: u32) {
        let img = RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([
                ((x * 5 + seed * 31) % 256) as u8,
                ((y * 7 + seed * 17) % 256) as u8,
                ((x + y + seed * 3) % 256) as u8,
            ])
        });
        img.save(path).unwrap();
    }

    fn fixture(dir: &std::path::Path, counts: &[usize]) -> ImageFolder {
        let mut people = Vec::new();
        for (i, &n) in counts.iter().enumerate() {
            let name = format!("person{i}");
            std::fs::create_dir_all(dir.join(&name)).unwrap();
            let images = (0..n)
                .map(|j| {
                    let p = dir.join(&name).join(format!("{j}.png"));
                    write_png(&p, (i * 10 + j) as u32);
                    p
                })
                .collect();
            people.push(Person { name, images });
        }
        ImageFolder::from_people(dir, people)
    }

    fn small_pre() -> Preprocess {
        Preprocess {
            image_size: 16,
            crop_fraction: 0.8,
            ..Preprocess::compact_default()
        }
    }

    #[test]
    fn cache_skips_bad_images_and_empty_people() {
        let dir = tempfile::tempdir().unwrap();
        let mut folder = fixture(dir.path(), &[3, 2, 1]);
        // A corrupt file in person0 and a person whose only image is corrupt.
        let bad = dir.path().join("person0/bad.jpg");
        std::fs::write(&bad, [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F']).unwrap();
        folder.people[0].images.push(bad.clone());
        std::fs::create_dir_all(dir.path().join("zed")).unwrap();
        let only_bad = dir.path().join("zed/x.png");
        std::fs::write(&only_bad, b"").unwrap();
        folder.people.push(Person {
            name: "zed".into(),
            images: vec![only_bad.clone()],
        });

        let calls = AtomicUsize::new(0);
        let progress = |done: usize, total: usize| {
            assert!(done <= total && total == 8);
            calls.fetch_add(1, Ordering::Relaxed);
        };
        let cache = ImageCache::build(&folder, &small_pre(), 0.15, Some(&progress)).unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 8);
        assert_eq!(cache.names(), ["person0", "person1", "person2"]);
        assert_eq!(cache.images_per_person(), vec![3, 2, 1]);
        assert_eq!(cache.failures().len(), 2);
        let reasons: Vec<_> = cache
            .failures()
            .iter()
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect();
        assert!(
            reasons.iter().any(|(p, r)| p == &bad && r.contains("JPEG")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|(p, r)| p == &only_bad && r == "empty file"),
            "{reasons:?}"
        );
        let cs = small_pre().cache_size(0.15);
        assert_eq!(cache.get(1, 1).dimensions(), (cs, cs));
        // The cached source is the prepared source of the decoded file.
        let direct = small_pre().prepare_source(&load_image(cache.path(1, 1)).unwrap(), 0.15);
        assert_eq!(cache.get(1, 1), &direct);
    }

    #[test]
    fn loader_batches_are_deterministic_and_resumable() {
        let dir = tempfile::tempdir().unwrap();
        let folder = fixture(dir.path(), &[3, 2, 4, 1, 2]);
        let pre = small_pre();
        let cache = Arc::new(ImageCache::build(&folder, &pre, 0.15, None).unwrap());
        let run = |start: u64, n: usize| {
            let mut l = Loader::new(
                cache.clone(),
                pre.clone(),
                Augment::default(),
                3,
                2,
                42,
                start,
                Device::Cpu,
            )
            .unwrap();
            assert_eq!(l.p(), 3);
            (0..n)
                .map(|_| {
                    let b = l.next_batch().unwrap();
                    (
                        b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        b.labels.to_vec1::<u32>().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let a = run(0, 6);
        let b = run(0, 6);
        assert_eq!(a, b);
        let resumed = run(4, 2);
        assert_eq!(resumed[..], a[4..6]);
        // Shape and value range: 6 samples of 3×16×16 standardized from u8.
        assert_eq!(a[0].0.len(), 6 * 3 * 16 * 16);
        assert!(a[0]
            .0
            .iter()
            .all(|&v| (-127.5 / 128.0..=127.5 / 128.0).contains(&v)));
        // Labels come in groups of K = 2 and never the one-image person (label 3).
        for (_, labels) in &a {
            assert!(labels.chunks(2).all(|g| g[0] == g[1]));
            assert!(!labels.contains(&3));
        }
    }

    #[test]
    fn loader_drop_does_not_hang_and_eval_tensor_is_centre() {
        let dir = tempfile::tempdir().unwrap();
        let folder = fixture(dir.path(), &[2, 2]);
        let pre = small_pre();
        let cache = Arc::new(ImageCache::build(&folder, &pre, 0.15, None).unwrap());
        for _ in 0..5 {
            // Dropped with a full prefetch queue and a thread blocked in send.
            let mut l = Loader::new(
                cache.clone(),
                pre.clone(),
                Augment::default(),
                2,
                2,
                1,
                0,
                Device::Cpu,
            )
            .unwrap();
            l.next_batch().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let t = eval_tensor(&cache, &pre, &[(1, 0)], &Device::Cpu).unwrap();
        let want = pre
            .to_tensor(
                &[pre.prepare(&load_image(cache.path(1, 0)).unwrap())],
                &Device::Cpu,
            )
            .unwrap();
        let diff = (t - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff <= 1.0 / 128.0 + 1e-6, "diff {diff}");
        assert!(eval_tensor(&cache, &pre, &[(5, 0)], &Device::Cpu).is_err());
        let other = Preprocess::facenet();
        assert!(eval_tensor(&cache, &other, &[(0, 0)], &Device::Cpu).is_err());
        assert!(Loader::new(cache, other, Augment::none(), 2, 2, 0, 0, Device::Cpu).is_err());
    }
}
