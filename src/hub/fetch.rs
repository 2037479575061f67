//! Resolving Hub files to local paths in the standard Hugging Face cache, through hf-hub's
//! blocking client (`HFClientSync`): HEAD `{endpoint}/{owner}/{name}/resolve/{revision}/{file}`
//! for the ETag and commit, GET into `blobs/<etag>.incomplete`, rename to `blobs/<etag>`, link
//! `snapshots/<commit>/<file>` to it and record `refs/<revision>`. This is the layout Python's
//! `huggingface_hub` uses, so both share one cache.

use super::progress::DownloadBar;
use super::{HubOptions, HubRef};
use crate::{Error, Result};
use hf_hub::progress::Progress;
use hf_hub::{HFClient, HFClientSync, HFError, HFRepositorySync, RepoType};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    let weights = fetcher.fetch(r, weights_name)?;
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
    let config = match fetcher.fetch_raw(&pinned, CONFIG_FILE) {
        Ok(p) => Some(p),
        Err(HFError::EntryNotFound { .. }) => None,
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
    Fetcher::new(opts)?.fetch(r, file)
}

/// One configured hf-hub client, reused for the files of one request.
struct Fetcher<'a> {
    /// The async client, kept for its resolved endpoint and cache folder.
    config: HFClient,
    /// The blocking client (same configuration) that does the requests.
    client: HFClientSync,
    opts: &'a HubOptions,
}

impl<'a> Fetcher<'a> {
    fn new(opts: &'a HubOptions) -> Result<Self> {
        let mut b = HFClient::builder().user_agent(format!(
            "candle-face/{}; hf-hub/1",
            env!("CARGO_PKG_VERSION")
        ));
        if let Some(ep) = &opts.endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(Error::InvalidArgument(format!(
                    "Hub endpoint {ep:?} must start with http:// or https://"
                )));
            }
            b = b.endpoint(ep.clone());
        }
        if let Some(t) = &opts.token {
            b = b.token(t.clone());
        }
        if let Some(c) = &opts.cache_dir {
            b = b.cache_dir(c.clone());
        }
        if let Some(n) = opts.retries {
            b = b.retry_max_attempts(n);
        }
        let setup = |e: HFError| Error::Hub(format!("cannot set up the Hub client: {}", chain(&e)));
        let config = b.build().map_err(setup)?;
        let client = HFClientSync::from_inner(config.clone()).map_err(setup)?;
        Ok(Self {
            config,
            client,
            opts,
        })
    }

    /// Fetches one file, mapping failures to [`Error::Hub`].
    fn fetch(&self, r: &HubRef, file: &str) -> Result<PathBuf> {
        // The fields are public: re-check a hand-built reference, since the revision becomes a
        // path under `refs/` in the cache.
        HubRef::new(&r.repo, &r.revision)?;
        self.fetch_raw(r, file)
            .map_err(|e| self.describe(r, file, e))
    }

    /// Fetches one file, keeping hf-hub's error for the caller to inspect.
    fn fetch_raw(&self, r: &HubRef, file: &str) -> std::result::Result<PathBuf, HFError> {
        self.fetch_raw_in(&self.client.model(r.owner(), r.name()), r, file)
    }

    /// [`fetch_raw`](Self::fetch_raw) in a repository of any type (model, dataset).
    fn fetch_raw_in<T: RepoType>(
        &self,
        repo: &HFRepositorySync<T>,
        r: &HubRef,
        file: &str,
    ) -> std::result::Result<PathBuf, HFError> {
        validate_file(file).map_err(HFError::InvalidParameter)?;
        let bar = (self.opts.progress && !self.opts.offline)
            .then(|| Arc::new(DownloadBar::stderr(format!("{}/{file}", r.repo))));
        let result = repo
            .download_file()
            .filename(file)
            .revision(r.revision.clone())
            .local_files_only(self.opts.offline)
            .maybe_progress(bar.clone().map(Progress::from))
            .send();
        if let (Err(_), Some(bar)) = (&result, &bar) {
            bar.abandon();
        }
        let path = result?;
        if !path.is_file() {
            return Err(HFError::Other(format!(
                "the cache entry {} is missing or dangling",
                path.display()
            )));
        }
        Ok(path)
    }

    /// Turns an hf-hub error into a message a user can act on.
    fn describe(&self, r: &HubRef, file: &str, e: HFError) -> Error {
        let what = format!("`{file}` of {r}");
        let endpoint = self.config.endpoint();
        let cache = self.config.cache_dir().display().to_string();
        let msg = match &e {
            HFError::InvalidParameter(reason) => {
                return Error::InvalidArgument(format!("{what}: {reason}"));
            }
            HFError::EntryNotFound { .. } if self.opts.offline => format!(
                "{what}: not found (the cache in {cache} records that the Hub answered 404 for it)"
            ),
            HFError::EntryNotFound { .. } => format!(
                "{what}: not found on {endpoint} (HTTP 404): the repository, the revision or the file does not exist"
            ),
            HFError::RepoNotFound { .. } => {
                format!("{what}: repository {} not found on {endpoint}", r.repo)
            }
            HFError::RevisionNotFound { .. } => format!(
                "{what}: revision {:?} not found in {} on {endpoint}",
                r.revision, r.repo
            ),
            HFError::AuthRequired { context }
                if context.error_code.as_deref() == Some("RepoNotFound") =>
            {
                format!(
                    "{what}: repository {} not found on {endpoint} (or it is private or gated: set HF_TOKEN)",
                    r.repo
                )
            }
            HFError::AuthRequired { .. } => format!(
                "{what}: authentication required (HTTP 401): set HF_TOKEN to a token with access to {}",
                r.repo
            ),
            HFError::Forbidden { .. } => format!(
                "{what}: access denied (HTTP 403): for a gated repository, accept its terms on the Hub and set HF_TOKEN ({})",
                chain(&e)
            ),
            HFError::LocalEntryNotFound { .. } => format!(
                "{what}: not in the local cache {cache} and offline mode is on (CANDLE_FACE_OFFLINE / HF_HUB_OFFLINE); run once online to download it"
            ),
            HFError::Request { source, .. } if source.is_connect() || source.is_timeout() => {
                format!(
                    "{what}: cannot reach the Hub at {endpoint} and the file is not in the local cache {cache} ({})",
                    chain(&e)
                )
            }
            HFError::Request { source, .. } if source.is_body() || source.is_decode() => format!(
                "{what}: the download was cut short ({}); nothing was stored under its name in the cache, try again",
                chain(&e)
            ),
            HFError::Http { context } if context.status.is_server_error() => format!(
                "{what}: server error from {endpoint} (HTTP {}) and the file is not in the local cache {cache} ({})",
                context.status,
                chain(&e)
            ),
            HFError::MalformedResponse { .. } => format!(
                "{what}: unexpected answer from {endpoint}, is it a Hugging Face Hub? ({})",
                chain(&e)
            ),
            HFError::Io(_) | HFError::CacheLockTimeout { .. } => {
                format!("{what}: cache error in {cache}: {}", chain(&e))
            }
            _ => format!("{what}: {}", chain(&e)),
        };
        Error::Hub(msg)
    }
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
    let repo = fetcher.client.dataset(r.owner(), r.name());
    let keep = |p: &str| p.ends_with(".parquet") && split.is_none_or(|s| parquet_in_split(p, s));
    let what = format!("dataset {r}");
    let mut paths: Vec<String> = if opts.offline {
        let dir = cached_snapshot(fetcher.config.cache_dir(), "datasets", r).ok_or_else(|| {
            Error::Hub(format!(
                "{what}: not in the local cache {} and offline mode is on; run once online to \
                 download it",
                fetcher.config.cache_dir().display()
            ))
        })?;
        let mut found = Vec::new();
        list_relative(&dir, &dir, &mut found);
        found
    } else {
        let entries = repo
            .list_tree()
            .revision(r.revision.clone())
            .recursive(true)
            .send()
            .map_err(|e| fetcher.describe(r, "(file list)", e))?;
        entries
            .into_iter()
            .filter_map(|e| match e {
                hf_hub::repository::RepoTreeEntry::File { path, .. } => Some(path),
                _ => None,
            })
            .collect()
    };
    paths.retain(|p| keep(p));
    paths.sort();
    if paths.is_empty() {
        return Err(Error::Hub(format!(
            "{what}: no Parquet files{}{}",
            split
                .map(|s| format!(
                    " for split {s:?} (a folder named {s}, or files named {s}-*.parquet)"
                ))
                .unwrap_or_default(),
            if opts.offline {
                " in the local cache"
            } else {
                ""
            }
        )));
    }
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
            .fetch_raw_in(&repo, &pinned, p)
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

/// The snapshot folder a cached revision points to: `<cache>/<kind>--owner--name/snapshots/<commit>`
/// with the commit read from `refs/<revision>` (or the revision itself when it is a commit).
fn cached_snapshot(cache: &Path, kind: &str, r: &HubRef) -> Option<PathBuf> {
    let root = cache.join(format!("{kind}--{}", r.repo.replace('/', "--")));
    let commit = std::fs::read_to_string(root.join("refs").join(&r.revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| r.revision.clone());
    let dir = root.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}

/// Files under `dir`, as `/`-separated paths relative to `root`.
fn list_relative(root: &Path, dir: &Path, out: &mut Vec<String>) {
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

/// Rejects file names that are empty, absolute, or could leave the snapshot folder.
fn validate_file(file: &str) -> std::result::Result<(), String> {
    if file.is_empty() {
        return Err("empty file name".into());
    }
    if file.starts_with('/') || file.contains('\\') {
        return Err(format!(
            "file name {file:?} must be a relative, '/'-separated path in the repository"
        ));
    }
    if file
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "file name {file:?} has an empty, '.' or '..' path segment"
        ));
    }
    Ok(())
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

/// An error and its sources, joined with `: ` (skipping a source already quoted by its parent).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_checked() {
        for ok in ["config.json", "sub/dir/model.safetensors", "a.b-c_d"] {
            assert!(validate_file(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\\b",
            "a/",
        ] {
            assert!(validate_file(bad).is_err(), "{bad}");
        }
    }

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
