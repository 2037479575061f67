//! Scanning a labelled image folder laid out as `root/<person>/<image>`.

use std::path::PathBuf;

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
    pub ignored: usize,
}
