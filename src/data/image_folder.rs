//! Scanning a labelled image folder laid out as `root/<person>/<image>` (the layout of LFW,
//! VGGFace2 and torchvision's `ImageFolder`), and splitting it into identity-disjoint
//! training and validation sets.
//!
//! Scanning is forgiving, because users point it at folders they did not curate: files that
//! are not images (`.DS_Store`, `Thumbs.db`, notes), hidden entries, files directly in the
//! root and folders nested inside a person's folder are ignored and counted; empty person
//! folders are dropped and counted; entries that cannot be read (dangling symlinks, symlink
//! loops, permission errors) are recorded in [`ImageFolder::skipped`] with the reason. Only a
//! missing root, a root that is not a directory, or a root with no images at all is an error.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::{Error, Result};

/// File extensions (compared case-insensitively) that are treated as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "pgm", "ppm", "gif", "bmp", "webp"];

/// Whether `path` has one of the [`IMAGE_EXTENSIONS`] (any case).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            let e = e.to_ascii_lowercase();
            IMAGE_EXTENSIONS.contains(&e.as_str())
        })
        .unwrap_or(false)
}

/// One identity and its image files (sorted by path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The person's folder name.
    pub name: String,
    /// Image files of this person, sorted.
    pub images: Vec<PathBuf>,
}

/// A labelled image folder: `root/<person>/<image>`.
#[derive(Debug, Clone, Default)]
pub struct ImageFolder {
    /// The folder that was scanned.
    pub root: PathBuf,
    /// People sorted by name; the index in this vector is the person's label.
    pub people: Vec<Person>,
    /// Files that were not images (`.DS_Store`, `Thumbs.db`, text files, ...): counted, not used.
    /// Hidden entries, files directly in the root and folders nested inside a person's folder
    /// count here too.
    pub ignored: usize,
    /// Person folders that held no image and were dropped.
    pub empty_people: usize,
    /// Entries that could not be read (dangling symlink, symlink loop, permission denied, ...)
    /// with the reason; they were skipped, not fatal.
    pub skipped: Vec<(PathBuf, String)>,
}

/// An identity-disjoint split of an [`ImageFolder`] (see [`ImageFolder::split`]).
#[derive(Debug, Clone)]
pub struct Split {
    /// The training people (all people not drawn for validation, one-image people included).
    pub train: ImageFolder,
    /// The validation people: all have at least two images. Empty when the set is too small.
    pub val: ImageFolder,
    /// True when `val` is empty, so a verification threshold can only be calibrated on the
    /// training people (an optimistic estimate).
    pub calibrate_on_train: bool,
    /// A human-readable explanation when the split is degenerate (empty validation).
    pub note: Option<String>,
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

impl ImageFolder {
    /// A folder made of `people` (sorted by name here, images sorted), with no ignored files.
    pub fn from_people(root: impl Into<PathBuf>, mut people: Vec<Person>) -> ImageFolder {
        for p in &mut people {
            p.images.sort();
        }
        people.sort_by(|a, b| a.name.cmp(&b.name));
        ImageFolder {
            root: root.into(),
            people,
            ..Default::default()
        }
    }

    /// Scans `root/<person>/<image>`.
    ///
    /// Symlinks are followed (to a person folder or to an image); since the scan only looks two
    /// levels deep, a symlink loop cannot make it recurse: it shows up as an unreadable entry
    /// in [`skipped`](Self::skipped).
    ///
    /// # Errors
    /// [`Error::Dataset`] naming `root` when it is missing, not a directory, unreadable, or
    /// holds no image in any person folder.
    pub fn scan(root: &Path) -> Result<ImageFolder> {
        let entries = open_root(root)?;
        let mut folder = ImageFolder {
            root: root.to_path_buf(),
            ..Default::default()
        };
        for entry in entries {
            match entry {
                Ok(e) => folder.scan_entry(&e),
                Err(e) => folder.skipped.push((root.to_path_buf(), e.to_string())),
            }
        }
        folder.people.sort_by(|a, b| a.name.cmp(&b.name));
        folder.skipped.sort();
        if folder.people.is_empty() {
            return Err(Error::dataset(root, folder.no_images_reason()));
        }
        Ok(folder)
    }

    /// One entry of the root: a person folder (scanned), or something ignored or skipped.
    fn scan_entry(&mut self, entry: &std::fs::DirEntry) {
        let path = entry.path();
        if is_hidden(&entry.file_name()) {
            self.ignored += 1;
            return;
        }
        // `fs::metadata` follows symlinks (and fails on dangling ones or loops).
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                self.skipped.push((path, e.to_string()));
                return;
            }
        };
        if !meta.is_dir() {
            // A file directly in the root: not part of any identity.
            self.ignored += 1;
            return;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let images = self.scan_person(&path);
        if images.is_empty() {
            self.empty_people += 1;
        } else {
            self.people.push(Person { name, images });
        }
    }

    /// Why a scan found no images, with what it ignored and skipped.
    fn no_images_reason(&self) -> String {
        let mut reason = String::from(
            "no images found: expected <root>/<person>/<image> with extensions jpg, jpeg, png, pgm, ppm, gif, bmp or webp",
        );
        if self.ignored > 0 || self.empty_people > 0 || !self.skipped.is_empty() {
            reason.push_str(&format!(
                " ({} non-image entries ignored, {} empty person folders, {} unreadable entries)",
                self.ignored,
                self.empty_people,
                self.skipped.len()
            ));
        }
        reason
    }

    /// Lists the images of one person folder, updating the ignored/skipped bookkeeping.
    fn scan_person(&mut self, dir: &Path) -> Vec<PathBuf> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.skipped.push((dir.to_path_buf(), e.to_string()));
                return Vec::new();
            }
        };
        let mut images = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.skipped.push((dir.to_path_buf(), e.to_string()));
                    continue;
                }
            };
            let path = entry.path();
            if is_hidden(&entry.file_name()) {
                self.ignored += 1;
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.skipped.push((path, e.to_string()));
                    continue;
                }
            };
            if meta.is_file() && has_image_extension(&path) {
                images.push(path);
            } else {
                // Non-image files, nested folders, sockets, ...
                self.ignored += 1;
            }
        }
        images.sort();
        images
    }

    /// Total number of images over all people.
    pub fn num_images(&self) -> usize {
        self.people.iter().map(|p| p.images.len()).sum()
    }

    /// Number of people (labels).
    pub fn num_people(&self) -> usize {
        self.people.len()
    }

    /// Number of images of each person, in label order.
    pub fn images_per_person(&self) -> Vec<usize> {
        self.people.iter().map(|p| p.images.len()).collect()
    }

    /// A one-line description, e.g. `"12 people, 110 images (3 non-image files ignored)"`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {}, {} {}",
            self.people.len(),
            if self.people.len() == 1 {
                "person"
            } else {
                "people"
            },
            self.num_images(),
            if self.num_images() == 1 {
                "image"
            } else {
                "images"
            }
        );
        let mut extras = Vec::new();
        if self.ignored > 0 {
            extras.push(format!(
                "{} non-image {} ignored",
                self.ignored,
                if self.ignored == 1 { "file" } else { "files" }
            ));
        }
        if self.empty_people > 0 {
            extras.push(format!(
                "{} empty {} dropped",
                self.empty_people,
                if self.empty_people == 1 {
                    "folder"
                } else {
                    "folders"
                }
            ));
        }
        if !self.skipped.is_empty() {
            extras.push(format!(
                "{} unreadable {} skipped",
                self.skipped.len(),
                if self.skipped.len() == 1 {
                    "entry"
                } else {
                    "entries"
                }
            ));
        }
        if !extras.is_empty() {
            s.push_str(&format!(" ({})", extras.join(", ")));
        }
        s
    }

    /// Splits the people into identity-disjoint training and validation folders.
    ///
    /// Validation people are drawn only from people with at least two images (a one-image
    /// person cannot form a positive pair; those always stay in training). The number drawn is
    /// `round(val_fraction × eligible people)`, raised to 2 and capped so that training keeps at
    /// least two people with two or more images. When that is impossible (`val_fraction ≤ 0`
    /// or not finite, or fewer than 4 eligible people) the validation folder is empty,
    /// `calibrate_on_train` is true and `note` says why.
    ///
    /// The draw is a shuffle of the eligible people with `StdRng::seed_from_u64(seed)`, so the
    /// same folder, fraction and seed always give the same split. Both halves keep `root`;
    /// the scan bookkeeping (`ignored`, `empty_people`, `skipped`) stays with `train`.
    pub fn split(&self, val_fraction: f32, seed: u64) -> Split {
        let eligible: Vec<usize> = self
            .people
            .iter()
            .enumerate()
            .filter(|(_, p)| p.images.len() >= 2)
            .map(|(i, _)| i)
            .collect();
        let n_elig = eligible.len();

        let degenerate = |note: String| Split {
            train: self.clone(),
            val: ImageFolder {
                root: self.root.clone(),
                ..Default::default()
            },
            calibrate_on_train: true,
            note: Some(note),
        };
        if !val_fraction.is_finite() || val_fraction <= 0.0 {
            return degenerate(format!(
                "no validation split requested (val_fraction {val_fraction}); the threshold is calibrated on the training people"
            ));
        }
        if n_elig < 4 {
            return degenerate(format!(
                "only {n_elig} people with 2 or more images: an identity-disjoint validation split needs at least 4 \
                 (2 for validation, 2 for training); the threshold is calibrated on the training people"
            ));
        }
        let wanted = (val_fraction as f64 * n_elig as f64).round() as usize;
        let n_val = wanted.clamp(2, n_elig - 2);

        let mut order = eligible;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        order.shuffle(&mut rng);
        let mut is_val = vec![false; self.people.len()];
        for &i in &order[..n_val] {
            is_val[i] = true;
        }
        let mut train_people = Vec::new();
        let mut val_people = Vec::new();
        for (i, p) in self.people.iter().enumerate() {
            if is_val[i] {
                val_people.push(p.clone());
            } else {
                train_people.push(p.clone());
            }
        }
        Split {
            train: ImageFolder {
                root: self.root.clone(),
                people: train_people,
                ignored: self.ignored,
                empty_people: self.empty_people,
                skipped: self.skipped.clone(),
            },
            val: ImageFolder {
                root: self.root.clone(),
                people: val_people,
                ..Default::default()
            },
            calibrate_on_train: false,
            note: None,
        }
    }
}

/// The entries of the dataset root, or a clear error if it is missing, not a folder or
/// unreadable.
fn open_root(root: &Path) -> Result<std::fs::ReadDir> {
    let meta = std::fs::metadata(root).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::dataset(root, "dataset folder does not exist")
        } else {
            Error::dataset(root, format!("cannot read dataset folder: {e}"))
        }
    })?;
    if !meta.is_dir() {
        return Err(Error::dataset(
            root,
            "not a directory: expected a folder laid out as <root>/<person>/<image>",
        ));
    }
    std::fs::read_dir(root)
        .map_err(|e| Error::dataset(root, format!("cannot list dataset folder: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    fn people_folder(counts: &[usize]) -> ImageFolder {
        let people = counts
            .iter()
            .enumerate()
            .map(|(i, &n)| Person {
                name: format!("p{i:03}"),
                images: (0..n)
                    .map(|j| PathBuf::from(format!("p{i:03}/{j}.jpg")))
                    .collect(),
            })
            .collect();
        ImageFolder::from_people("/data", people)
    }

    #[test]
    fn scan_sorts_filters_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("bob/b2.JPG"));
        touch(&r.join("bob/b1.png"));
        touch(&r.join("bob/notes.txt"));
        touch(&r.join("bob/.DS_Store"));
        touch(&r.join("bob/Thumbs.db"));
        touch(&r.join("bob/nested/deep.jpg"));
        touch(&r.join("alice/a.JpEg"));
        touch(&r.join("alice/._a.jpg"));
        touch(&r.join("carol/c.webp"));
        touch(&r.join("carol/c.pgm"));
        touch(&r.join("carol/c.bmp"));
        touch(&r.join("carol/c.gif"));
        touch(&r.join("carol/c.ppm"));
        touch(&r.join("README.md"));
        touch(&r.join(".hidden/x.jpg"));
        fs::create_dir_all(r.join("empty")).unwrap();
        touch(&r.join("onlytext/t.txt"));

        let f = ImageFolder::scan(r).unwrap();
        let names: Vec<_> = f.people.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
        assert_eq!(
            f.people[1].images,
            vec![r.join("bob/b1.png"), r.join("bob/b2.JPG")]
        );
        assert_eq!(f.people[2].images.len(), 5);
        assert_eq!(f.num_images(), 8);
        // bob: notes.txt, .DS_Store, Thumbs.db, nested/ ; alice: ._a.jpg ; root: README.md,
        // .hidden ; onlytext: t.txt
        assert_eq!(f.ignored, 8);
        assert_eq!(f.empty_people, 2);
        assert!(f.skipped.is_empty());
        assert_eq!(
            f.summary(),
            "3 people, 8 images (8 non-image files ignored, 2 empty folders dropped)"
        );
    }

    #[cfg(unix)]
    #[test]
    fn scan_survives_symlink_loops_and_dangling_links() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("real/x.jpg"));
        // A person folder reached through a symlink is followed.
        std::os::unix::fs::symlink(r.join("real"), r.join("alias")).unwrap();
        // A loop at person level and at image level, and a dangling image link.
        std::os::unix::fs::symlink(r.join("loop"), r.join("loop")).unwrap();
        std::os::unix::fs::symlink(r.join("real/self.jpg"), r.join("real/self.jpg")).unwrap();
        std::os::unix::fs::symlink(r.join("nowhere.jpg"), r.join("real/dangling.jpg")).unwrap();
        // A folder that contains a link back up to the root (would loop a recursive walker).
        std::os::unix::fs::symlink(r, r.join("real/up")).unwrap();

        let f = ImageFolder::scan(r).unwrap();
        let names: Vec<_> = f.people.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alias", "real"]);
        assert_eq!(f.people[0].images, vec![r.join("alias/x.jpg")]);
        // loop, real/self.jpg, real/dangling.jpg (and the same two through alias/).
        assert_eq!(f.skipped.len(), 5, "{:?}", f.skipped);
        assert!(f.skipped.iter().any(|(p, _)| p == &r.join("loop")));
        assert!(f.summary().contains("5 unreadable entries skipped"));
    }

    #[test]
    fn scan_errors_name_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = ImageFolder::scan(&missing).unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("does not exist"), "{e}");

        let file = dir.path().join("file.jpg");
        touch(&file);
        let e = ImageFolder::scan(&file).unwrap_err().to_string();
        assert!(
            e.contains("file.jpg") && e.contains("not a directory"),
            "{e}"
        );

        let empty = dir.path().join("empty");
        touch(&empty.join("p/readme.txt"));
        let e = ImageFolder::scan(&empty).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("no images found"), "{e}");
    }

    #[test]
    fn split_is_identity_disjoint_and_deterministic() {
        // 20 eligible people and 10 one-image people.
        let mut counts = vec![3usize; 20];
        counts.extend(vec![1usize; 10]);
        let f = people_folder(&counts);
        let s = f.split(0.25, 7);
        assert!(!s.calibrate_on_train);
        assert!(s.note.is_none());
        assert_eq!(s.val.people.len(), 5);
        assert_eq!(s.train.people.len(), 25);
        assert!(s.val.people.iter().all(|p| p.images.len() >= 2));
        // All one-image people stay in training.
        assert_eq!(
            s.train
                .people
                .iter()
                .filter(|p| p.images.len() == 1)
                .count(),
            10
        );
        // Disjoint and complete.
        let mut all: Vec<_> = s
            .train
            .people
            .iter()
            .chain(&s.val.people)
            .map(|p| p.name.clone())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 30);
        // Sorted within each half.
        assert!(s.val.people.windows(2).all(|w| w[0].name < w[1].name));
        // Same seed, same split; another seed, (almost surely) another split.
        let again = f.split(0.25, 7);
        assert_eq!(again.val.people, s.val.people);
        let other = f.split(0.25, 8);
        assert_ne!(other.val.people, s.val.people);
    }

    #[test]
    fn split_keeps_two_and_leaves_two() {
        let f = people_folder(&[2, 2, 2, 2, 2, 1]);
        // Tiny fraction: still 2 validation people.
        let s = f.split(0.01, 1);
        assert_eq!(s.val.people.len(), 2);
        // Huge fraction: training keeps 2 eligible people (+ the one-image person).
        let s = f.split(0.99, 1);
        assert_eq!(s.val.people.len(), 3);
        assert_eq!(
            s.train
                .people
                .iter()
                .filter(|p| p.images.len() >= 2)
                .count(),
            2
        );
    }

    #[test]
    fn split_degenerate_cases_explain() {
        let f = people_folder(&[5, 5, 5, 1, 1]);
        let s = f.split(0.5, 1);
        assert!(s.val.people.is_empty());
        assert!(s.calibrate_on_train);
        assert!(s.note.as_deref().unwrap().contains("only 3 people"));
        assert_eq!(s.train.people.len(), 5);

        let f = people_folder(&[5; 10]);
        for frac in [0.0, -1.0, f32::NAN] {
            let s = f.split(frac, 1);
            assert!(s.val.people.is_empty() && s.calibrate_on_train);
            assert!(s.note.unwrap().contains("no validation split"));
        }
    }
}
