//! Face crops for a whole labelled folder: `root/<person>/<image>` in, the same tree of PNG face
//! crops out, cut the way a model expects ([`FaceCrop`](crate::detect::FaceCrop)). This is how raw
//! photos become training data: train on the prepared folder, then verify with detection on
//! (`--detect`), so training and inference see the same crops.
//!
//! ```no_run
//! # fn main() -> candle_face::Result<()> {
//! use candle_face::data::{prepare_folder, PrepareOptions};
//! use candle_face::detect::{FaceCrop, FaceFinder};
//! let finder = FaceFinder::bundled(FaceCrop::lfw_aligned(), &candle_core::Device::Cpu)?;
//! let report = prepare_folder("photos".as_ref(), "crops".as_ref(), &finder, &PrepareOptions::default())?;
//! println!("{} written, {} without a face", report.written, report.no_face.len());
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::data::image_folder::ImageFolder;
use crate::detect::FaceFinder;
use crate::image::load_image;
use crate::{Error, Result};

/// Options of [`prepare_folder`].
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// Write crops again even where the output file exists (otherwise existing crops are kept,
    /// so an interrupted run continues where it stopped).
    pub overwrite: bool,
    /// Called after each image with (images done, images in all); for progress display.
    pub progress: Option<fn(usize, usize)>,
}

/// What [`prepare_folder`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrepareReport {
    /// People in the source folder.
    pub people: usize,
    /// Images in the source folder.
    pub images: usize,
    /// Crops written in this run.
    pub written: usize,
    /// Crops already present and kept.
    pub kept: usize,
    /// Images in which no face was found (skipped).
    pub no_face: Vec<PathBuf>,
    /// Images that could not be read or cropped, with the reason (skipped).
    pub failed: Vec<(PathBuf, String)>,
    /// Entries of the source folder the scan could not read (skipped).
    pub unreadable: Vec<(PathBuf, String)>,
}

/// `path` made absolute with symlinks resolved, also when it does not exist yet: its nearest
/// existing ancestor canonicalized, the rest appended.
fn resolve(path: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = cur.canonicalize() {
            return Some(rest.iter().rev().fold(c, |p, part| p.join(part)));
        }
        rest.push(cur.file_name()?.to_os_string());
        cur = cur.parent()?;
    }
}

/// The output path of `image` (under `root`) in `out`: same person folder, same file stem,
/// `.png`.
fn output_path(out: &Path, person: &str, image: &Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    out.join(person).join(format!("{stem}.png"))
}

/// Detects the main face (as `finder` picks it: by default the largest, as `--detect` does at
/// inference; [`FaceFinder::with_pick`]) of every image of `root/<person>/<image>` and writes its crop to
/// `out/<person>/<stem>.png`.
///
/// Images without a face, unreadable images and images that fail to crop are reported in the
/// [`PrepareReport`] and skipped, never fatal. Each crop is written under a temporary name and
/// renamed, so an interrupted run leaves only whole files; a second run keeps them (unless
/// [`PrepareOptions::overwrite`]). Two images of one person with the same stem (`a.jpg`,
/// `a.png`) would map to one output: that is an error before anything is written.
///
/// # Errors
/// [`Error::Dataset`] when `root` cannot be scanned (see [`ImageFolder::scan`]), when `out` lies
/// inside `root` or equals it, or on clashing stems; [`Error::Io`] when the output folder
/// cannot be created.
pub fn prepare_folder(
    root: &Path,
    out: &Path,
    finder: &FaceFinder,
    opts: &PrepareOptions,
) -> Result<PrepareReport> {
    let folder = ImageFolder::scan(root)?;
    check_outside(root, out)?;
    let jobs = plan_jobs(&folder, out)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let total = jobs.len();
    let done = AtomicUsize::new(0);
    let outcomes: Vec<Outcome> = jobs
        .par_iter()
        .map(|(src, dst)| {
            let outcome = prepare_one(finder, opts, src, dst);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(progress) = opts.progress {
                progress(n, total);
            }
            outcome
        })
        .collect();

    let mut report = PrepareReport {
        people: folder.num_people(),
        images: total,
        unreadable: folder.skipped.clone(),
        ..Default::default()
    };
    for o in outcomes {
        match o {
            Outcome::Written => report.written += 1,
            Outcome::Kept => report.kept += 1,
            Outcome::NoFace(p) => report.no_face.push(p),
            Outcome::Failed(p, why) => report.failed.push((p, why)),
        }
    }
    Ok(report)
}

/// Refuses an output folder inside the source folder `root`.
fn check_outside(root: &Path, out: &Path) -> Result<()> {
    if let (Ok(r), Some(o)) = (root.canonicalize(), resolve(out)) {
        if o.starts_with(&r) {
            return Err(Error::dataset(
                out,
                format!(
                    "the output folder lies inside the source folder {}: crops would be scanned \
                     as training images",
                    root.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Every `(source image, output crop)` pair; two images of one person with the same file stem
/// are an error.
fn plan_jobs(folder: &ImageFolder, out: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut jobs = Vec::with_capacity(folder.num_images());
    for person in &folder.people {
        let mut seen = std::collections::HashMap::new();
        for image in &person.images {
            let dst = output_path(out, &person.name, image);
            if let Some(prev) = seen.insert(dst.clone(), image.clone()) {
                return Err(Error::dataset(
                    image,
                    format!(
                        "same file stem as {}: both would be written to {}",
                        prev.display(),
                        dst.display()
                    ),
                ));
            }
            jobs.push((image.clone(), dst));
        }
    }
    Ok(jobs)
}

/// What became of one image.
enum Outcome {
    Written,
    Kept,
    NoFace(PathBuf),
    Failed(PathBuf, String),
}

/// Crops `src` into `dst` (or keeps an existing `dst` unless `opts.overwrite`).
fn prepare_one(finder: &FaceFinder, opts: &PrepareOptions, src: &PathBuf, dst: &Path) -> Outcome {
    if !opts.overwrite && dst.is_file() {
        return Outcome::Kept;
    }
    match crop_one(finder, src, dst) {
        Ok(()) => Outcome::Written,
        Err(Error::NoFace { path }) => Outcome::NoFace(path),
        // The reason without the path (the report pairs them).
        Err(Error::Image { path, reason }) if &path == src => Outcome::Failed(src.clone(), reason),
        Err(Error::Io { path, source }) if &path == src => {
            Outcome::Failed(src.clone(), source.to_string())
        }
        Err(e) => Outcome::Failed(src.clone(), e.to_string()),
    }
}

/// Reads `src`, crops its main face and writes it to `dst` as PNG (atomically).
fn crop_one(finder: &FaceFinder, src: &Path, dst: &Path) -> Result<()> {
    let img = load_image(src)?;
    let crop = finder.find(&img, src)?;
    crate::fsutil::write_atomic_with(dst, |tmp| {
        crop.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::Image {
                path: dst.to_path_buf(),
                reason: format!("cannot write PNG: {e}"),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_keep_person_and_stem() {
        let p = output_path(Path::new("/o"), "Ann", Path::new("/r/Ann/x.y.jpg"));
        assert_eq!(p, Path::new("/o/Ann/x.y.png"));
    }
}
