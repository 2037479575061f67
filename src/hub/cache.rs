//! The standard Hugging Face cache, the layout Python's `huggingface_hub` reads and writes:
//!
//! ```text
//! <cache>/models--owner--name/            (datasets--owner--name for datasets)
//!     blobs/<etag>                        file contents, named by their ETag
//!     snapshots/<commit>/<file>           relative symlink to ../../blobs/<etag> (a copy where
//!                                         symlinks cannot be made)
//!     refs/<revision>                     the commit a branch or tag pointed to
//!     .no_exist/<commit>/<file>           empty: the Hub answered 404 for the file
//! <cache>/.locks/models--owner--name/<etag>.lock
//! ```

use super::HubRef;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The kind of a Hub repository: it decides the URL prefix and the cache folder name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// `models` or `datasets`: the cache folder prefix and the API path segment.
    pub(super) fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    /// What precedes `owner/name` in a `resolve` URL.
    pub(super) fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        }
    }
}

/// What the cache knows about a file at a revision.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lookup {
    /// Its snapshot path (an existing file).
    Found(PathBuf),
    /// A recorded 404 for it (`.no_exist`).
    Missing,
    /// Nothing.
    Unknown,
}

/// The variable's value, when set and not blank.
pub(super) fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub(super) fn hf_home() -> Option<PathBuf> {
    if let Some(h) = env_nonempty("HF_HOME") {
        return Some(PathBuf::from(h));
    }
    if let Some(x) = env_nonempty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(x).join("huggingface"));
    }
    let home = env_nonempty("HOME").or_else(|| env_nonempty("USERPROFILE"))?;
    Some(PathBuf::from(home).join(".cache").join("huggingface"))
}

/// The cache folder when the options name none: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`,
/// else `<HF_HOME>/hub`.
pub(super) fn default_cache_dir() -> PathBuf {
    env_nonempty("HF_HUB_CACHE")
        .or_else(|| env_nonempty("HUGGINGFACE_HUB_CACHE"))
        .map(PathBuf::from)
        .or_else(|| hf_home().map(|h| h.join("hub")))
        .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"))
}

/// Whether `revision` is a full commit hash (40 hex digits), which needs no `refs/` lookup.
pub(super) fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a name from the server (an ETag, a commit) is safe as one file name: non-empty,
/// letters, digits, `-`, `_`, `.` only, and not starting with `.`.
pub(super) fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One repository's folder in the cache.
pub(super) struct RepoCache {
    /// `<cache>/<kind>--owner--name`.
    pub root: PathBuf,
    /// `<cache>/.locks/<kind>--owner--name`.
    locks: PathBuf,
}

impl RepoCache {
    pub(super) fn new(cache: &Path, kind: RepoKind, r: &HubRef) -> Self {
        let folder = format!("{}--{}", kind.plural(), r.repo.replace('/', "--"));
        Self {
            root: cache.join(&folder),
            locks: cache.join(".locks").join(folder),
        }
    }

    pub(super) fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub(super) fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// `snapshots/<commit>/<file>` (`file` is `/`-separated and already validated).
    pub(super) fn pointer(&self, commit: &str, file: &str) -> PathBuf {
        file.split('/')
            .fold(self.snapshot(commit), |p, part| p.join(part))
    }

    fn no_exist(&self, commit: &str, file: &str) -> PathBuf {
        file.split('/')
            .fold(self.root.join(".no_exist").join(commit), |p, s| p.join(s))
    }

    /// The commit `revision` stands for: itself when it is a commit hash, else the content of
    /// `refs/<revision>` (when that names a plausible commit).
    pub(super) fn commit_of(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        let path = revision
            .split('/')
            .fold(self.root.join("refs"), |p, s| p.join(s));
        let commit = std::fs::read_to_string(path).ok()?.trim().to_string();
        is_safe_name(&commit).then_some(commit)
    }

    /// Records that `revision` points to `commit` (`refs/<revision>`), unless it is a commit.
    pub(super) fn write_ref(&self, revision: &str, commit: &str) -> std::io::Result<()> {
        if revision == commit || is_commit_hash(revision) {
            return Ok(());
        }
        let path = revision
            .split('/')
            .fold(self.root.join("refs"), |p, s| p.join(s));
        write_atomic(&path, commit.as_bytes())
    }

    /// Records a 404 for `file` at `commit`, and `revision` → `commit`. Best effort: the
    /// record only saves a request later, so failures to write it are ignored.
    pub(super) fn record_missing(&self, revision: &str, commit: &str, file: &str) {
        let path = self.no_exist(commit, file);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir).and_then(|()| File::create(&path));
        }
        let _ = self.write_ref(revision, commit);
    }

    /// What the cache holds for `file` at `revision`, without any request.
    pub(super) fn lookup(&self, revision: &str, file: &str) -> Lookup {
        let Some(commit) = self.commit_of(revision) else {
            return Lookup::Unknown;
        };
        let pointer = self.pointer(&commit, file);
        if pointer.is_file() {
            Lookup::Found(pointer)
        } else if self.no_exist(&commit, file).is_file() {
            Lookup::Missing
        } else {
            Lookup::Unknown
        }
    }

    /// An exclusive lock on `etag` (`.locks/.../<etag>.lock`), held until the file is dropped,
    /// so that two processes never write the same blob at once.
    pub(super) fn lock(&self, etag: &str) -> std::io::Result<File> {
        std::fs::create_dir_all(&self.locks)?;
        let f = File::create(self.locks.join(format!("{etag}.lock")))?;
        f.lock()?;
        Ok(f)
    }

    /// Makes `snapshots/<commit>/<file>` point to `blobs/<etag>`: a relative symlink, or a copy
    /// where symlinks cannot be made. An existing pointer that resolves is left alone.
    pub(super) fn link(&self, commit: &str, file: &str, etag: &str) -> std::io::Result<PathBuf> {
        let pointer = self.pointer(commit, file);
        if pointer.is_file() {
            return Ok(pointer);
        }
        let dir = pointer.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)?;
        // A dangling link (its blob was deleted) is replaced.
        if pointer.symlink_metadata().is_ok() {
            std::fs::remove_file(&pointer)?;
        }
        // From snapshots/<commit>/<a>/<b>/file up to the repository folder, then into blobs.
        let depth = file.split('/').count() + 1;
        let target = (0..depth)
            .fold(PathBuf::new(), |p, _| p.join(".."))
            .join("blobs")
            .join(etag);
        match symlink(&target, &pointer) {
            Ok(()) => Ok(pointer),
            Err(_) if pointer.is_file() => Ok(pointer),
            Err(_) => {
                let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
                std::io::copy(&mut File::open(self.blob(etag))?, tmp.as_file_mut())?;
                tmp.persist(&pointer).map_err(|e| e.error)?;
                Ok(pointer)
            }
        }
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

#[cfg(not(any(unix, windows)))]
fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees a half-written file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Files under `dir`, as `/`-separated paths relative to `root`.
pub(super) fn list_relative(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            list_relative(root, &p, out);
        } else if p.is_file() {
            if let Ok(rel) = p.strip_prefix(root) {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "0123456789abcdef0123456789abcdef01234567";

    fn repo(dir: &Path) -> RepoCache {
        RepoCache::new(dir, RepoKind::Model, &"hf:o/n".parse().unwrap())
    }

    #[test]
    fn layout_matches_huggingface_hub() {
        let c = repo(Path::new("/c"));
        assert_eq!(c.root, Path::new("/c/models--o--n"));
        assert_eq!(
            c.pointer(C, "a/b.bin"),
            Path::new(&format!("/c/models--o--n/snapshots/{C}/a/b.bin"))
        );
        let d = RepoCache::new(
            Path::new("/c"),
            RepoKind::Dataset,
            &"hf:o/n".parse().unwrap(),
        );
        assert_eq!(d.root, Path::new("/c/datasets--o--n"));
    }

    #[test]
    fn refs_links_and_missing_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = repo(dir.path());
        assert_eq!(c.lookup("main", "x.bin"), Lookup::Unknown);
        std::fs::create_dir_all(c.root.join("blobs")).unwrap();
        std::fs::write(c.blob("e1"), b"data").unwrap();
        let p = c.link(C, "sub/x.bin", "e1").unwrap();
        c.write_ref("refs/pr/1", C).unwrap();
        assert_eq!(c.lookup("refs/pr/1", "sub/x.bin"), Lookup::Found(p.clone()));
        assert_eq!(c.lookup(C, "sub/x.bin"), Lookup::Found(p.clone()));
        assert_eq!(std::fs::read(&p).unwrap(), b"data");
        #[cfg(unix)]
        assert_eq!(
            std::fs::read_link(&p).unwrap(),
            Path::new("../../../blobs/e1")
        );
        c.record_missing("main", C, "config.json");
        assert_eq!(c.lookup("main", "config.json"), Lookup::Missing);
        assert_eq!(c.commit_of("main").as_deref(), Some(C));
    }

    #[test]
    fn server_names_are_checked_before_use_as_file_names() {
        assert!(is_safe_name(C) && is_safe_name("abc-1_2.x"));
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "a b"] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
        assert!(is_commit_hash(C) && !is_commit_hash("main"));
    }
}
