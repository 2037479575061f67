//! The public entry points: a model's files, one file, a dataset's Parquet files. The protocol
//! and the cache layout are in the `client` and `cache` modules.

use super::cache::{list_relative, RepoKind};
use super::client::Fetcher;
use super::{HubOptions, HubRef};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The weights file [`fetch_model`] downloads unless told otherwise.
pub const DEFAULT_WEIGHTS_FILE: &str = "model.safetensors";

/// The model configuration file [`fetch_model`] downloads when the repository has one.
pub const CONFIG_FILE: &str = "config.json";

/// Local paths of a model's files, inside the Hub cache
/// (`<cache>/models--owner--name/snapshots/<commit>/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFiles {
    /// `config.json`, when the repository has one at that commit.
    pub config: Option<PathBuf>,
    /// The weights file.
    pub weights: PathBuf,
    /// The commit the files belong to (the snapshot folder's name).
    pub commit: Option<String>,
}

/// Downloads `weights_file` (default [`DEFAULT_WEIGHTS_FILE`]) and, when the repository has one,
/// `config.json` from the same commit; offline, finds both in the cache.
///
/// A missing `config.json` (HTTP 404, or a cached record of one) gives `config: None`; every
/// other failure is an error. Errors are [`Error::Hub`] naming the repository and file, except
/// an invalid file name ([`Error::InvalidArgument`]).
pub fn fetch_model(r: &HubRef, weights_file: Option<&str>, opts: &HubOptions) -> Result<HubFiles> {
    let weights_name = weights_file.unwrap_or(DEFAULT_WEIGHTS_FILE);
    let fetcher = Fetcher::new(opts)?;
    // `fetch` validates `r`; the pinned reference below differs only by a commit hash.
    let weights = fetcher.fetch(RepoKind::Model, r, weights_name)?;
    let commit = snapshot_commit(&weights, weights_name);
    // Pin config.json to the weights' commit, so a branch moving between the two requests
    // cannot pair files from different commits.
    let pinned = match &commit {
        Some(c) => HubRef {
            repo: r.repo.clone(),
            revision: c.clone(),
        },
        None => r.clone(),
    };
    let config = match fetcher.fetch_raw(RepoKind::Model, &pinned, CONFIG_FILE) {
        Ok(p) => Some(p),
        Err(e) if e.is_entry_not_found() => None,
        Err(e) => return Err(fetcher.describe(r, CONFIG_FILE, e)),
    };
    Ok(HubFiles {
        config,
        weights,
        commit,
    })
}

/// Downloads `file` (a path inside the repository, `/`-separated) from the Hub, or finds it in
/// the cache when offline (or when the Hub cannot be reached), and returns its local path.
///
/// Errors are [`Error::Hub`] naming the repository, revision and file: not found (404), server
/// error (5xx), unreachable Hub with nothing cached, offline with nothing cached, a download cut
/// short (nothing is stored under the final cache name then). An invalid file name is
/// [`Error::InvalidArgument`].
pub fn fetch_file(r: &HubRef, file: &str, opts: &HubOptions) -> Result<PathBuf> {
    Fetcher::new(opts)?.fetch(RepoKind::Model, r, file)
}

/// Local copies of a Hub dataset's Parquet files ([`fetch_dataset_parquet`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFiles {
    /// The Parquet files, in repository path order, inside the Hub cache
    /// (`<cache>/datasets--owner--name/snapshots/<commit>/...`).
    pub files: Vec<PathBuf>,
    /// Their paths in the repository.
    pub paths: Vec<String>,
    /// The commit they belong to.
    pub commit: Option<String>,
}

/// Whether the repository path `path` (a `.parquet` file) belongs to `split`: a folder named
/// `split` (`default/train/0000.parquet`), or a file named `split.parquet` or `split-*`
/// (`data/train-00000-of-00001.parquet`).
pub fn parquet_in_split(path: &str, split: &str) -> bool {
    let mut segments: Vec<&str> = path.split('/').collect();
    let file = segments.pop().unwrap_or("");
    let stem = file.strip_suffix(".parquet").unwrap_or(file);
    segments.contains(&split) || stem == split || stem.starts_with(&format!("{split}-"))
}

/// Downloads the Parquet files of the Hub dataset `r` (a `datasets/` repository), keeping those of
/// `split` when given (see [`parquet_in_split`]); offline, lists them from the cached snapshot.
///
/// The listing is the Hub's tree API (`GET {endpoint}/api/datasets/{owner}/{name}/tree/{rev}
/// ?recursive=true`); every file is pinned to the commit of the first download, so a branch
/// moving in between cannot mix commits.
///
/// # Errors
/// [`Error::Hub`] naming the dataset: not found, no Parquet files (for that split), offline
/// with nothing cached, or any download failure (as [`fetch_file`]).
pub fn fetch_dataset_parquet(
    r: &HubRef,
    split: Option<&str>,
    opts: &HubOptions,
) -> Result<DatasetFiles> {
    HubRef::new(&r.repo, &r.revision)?;
    let fetcher = Fetcher::new(opts)?;
    let (mut paths, from_cache) = dataset_listing(&fetcher, r, opts.offline)?;
    paths.retain(|p| p.ends_with(".parquet") && split.is_none_or(|s| parquet_in_split(p, s)));
    paths.sort();
    if paths.is_empty() {
        return Err(no_parquet_error(r, split, from_cache));
    }
    // Once the listing came from the cache, so do the files: no request per file.
    let offline_opts = HubOptions {
        offline: true,
        ..opts.clone()
    };
    let fetcher = if from_cache && !opts.offline {
        Fetcher::new(&offline_opts)?
    } else {
        fetcher
    };
    let mut files = Vec::with_capacity(paths.len());
    let mut commit: Option<String> = None;
    for p in &paths {
        let pinned = match &commit {
            Some(c) => HubRef {
                repo: r.repo.clone(),
                revision: c.clone(),
            },
            None => r.clone(),
        };
        let f = fetcher
            .fetch_raw(RepoKind::Dataset, &pinned, p)
            .map_err(|e| fetcher.describe(r, p, e))?;
        if commit.is_none() {
            commit = snapshot_commit(&f, p);
        }
        files.push(f);
    }
    Ok(DatasetFiles {
        files,
        paths,
        commit,
    })
}

/// The dataset's file paths, and whether they came from the cache: offline, or online when the
/// listing request fails in a way that lets a cached snapshot of the revision stand in.
fn dataset_listing(fetcher: &Fetcher, r: &HubRef, offline: bool) -> Result<(Vec<String>, bool)> {
    let cached = || {
        let cache = super::cache::RepoCache::new(fetcher.cache_dir(), RepoKind::Dataset, r);
        let dir = cache.snapshot(&cache.commit_of(&r.revision)?);
        let mut found = Vec::new();
        list_relative(&dir, &dir, &mut found);
        dir.is_dir().then_some(found)
    };
    if offline {
        return cached().map(|p| (p, true)).ok_or_else(|| {
            Error::Hub(format!(
                "dataset {r}: not in the local cache {} and offline mode is on; run once online \
                 to download it",
                fetcher.cache_dir().display()
            ))
        });
    }
    match fetcher.list_files(RepoKind::Dataset, r) {
        Ok(paths) => Ok((paths, false)),
        Err(e) if e.allows_fallback() => match cached() {
            Some(paths) => Ok((paths, true)),
            None => Err(fetcher.describe(r, "(file list)", e)),
        },
        Err(e) => Err(fetcher.describe(r, "(file list)", e)),
    }
}

/// The error for a dataset without Parquet files (for `split`).
fn no_parquet_error(r: &HubRef, split: Option<&str>, from_cache: bool) -> Error {
    Error::Hub(format!(
        "dataset {r}: no Parquet files{}{}",
        split
            .map(|s| format!(" for split {s:?} (a folder named {s}, or files named {s}-*.parquet)"))
            .unwrap_or_default(),
        if from_cache {
            " in the local cache"
        } else {
            ""
        }
    ))
}

/// The commit a cached file belongs to: the name of the folder under `snapshots/` that holds it.
fn snapshot_commit(path: &Path, file: &str) -> Option<String> {
    let mut dir = path;
    for _ in 0..file.split('/').count() {
        dir = dir.parent()?;
    }
    if dir.parent()?.file_name()? != "snapshots" {
        return None;
    }
    dir.file_name()?.to_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_is_read_from_the_snapshot_folder() {
        let c = "0123456789abcdef0123456789abcdef01234567";
        let p = PathBuf::from(format!("/c/models--o--n/snapshots/{c}/model.safetensors"));
        assert_eq!(snapshot_commit(&p, "model.safetensors").as_deref(), Some(c));
        let p = PathBuf::from(format!("/c/models--o--n/snapshots/{c}/sub/w.safetensors"));
        assert_eq!(snapshot_commit(&p, "sub/w.safetensors").as_deref(), Some(c));
        let p = PathBuf::from("/somewhere/else/w.safetensors");
        assert_eq!(snapshot_commit(&p, "w.safetensors"), None);
    }

    #[test]
    fn hand_built_reference_is_validated() {
        let r = HubRef {
            repo: "o/n".into(),
            revision: "../../escape".into(),
        };
        let err = fetch_file(&r, "config.json", &HubOptions::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }

    #[test]
    fn bad_endpoint_is_rejected_before_any_request() {
        let opts = HubOptions {
            endpoint: Some("localhost:1234".into()),
            ..HubOptions::default()
        };
        let r: HubRef = "hf:o/n".parse().unwrap();
        let err = fetch_file(&r, "config.json", &opts).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains("http://"), "{err}");
    }
}
