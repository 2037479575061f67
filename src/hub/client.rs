//! One file, or one repository listing, from the Hub into the standard cache, the way
//! `huggingface_hub`'s `hf_hub_download` does it:
//!
//! 1. `HEAD {endpoint}/[datasets/]{owner}/{name}/resolve/{revision}/{file}` without following
//!    the CDN redirect: the commit is `X-Repo-Commit`, the blob name `X-Linked-Etag` (LFS files)
//!    or `ETag`, quotes stripped, the size `X-Linked-Size` or `Content-Length`;
//! 2. `snapshots/<commit>/<file>` already there: done (no download);
//! 3. otherwise `GET` the same URL, following redirects, into `blobs/<etag>.incomplete` under a
//!    lock (resuming a previous partial download with `Range`), check the size, rename to
//!    `blobs/<etag>`, link the snapshot entry to it and record `refs/<revision>`.
//!
//! A 404 for the file is recorded as `.no_exist/<commit>/<file>`. When the `HEAD` fails for any
//! other reason (unreachable Hub, server error, ...), a copy already cached for the revision is
//! used; offline, only the cache is read.

use super::cache::{is_commit_hash, is_safe_name, Lookup, RepoCache, RepoKind};
use super::errors::{describe, Context, FetchError};
use super::http::{encode, header, Http, HttpError};
use super::progress::DownloadBar;
use super::{HubOptions, HubRef};
use crate::{Error, Result};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

/// What the `HEAD` of a file says about it.
#[derive(Debug)]
struct Metadata {
    commit: String,
    etag: String,
    size: Option<u64>,
    /// The `resolve` URL, which the `GET` follows to the file.
    url: String,
}

/// One configured client and cache, reused for the files of one request.
pub(super) struct Fetcher<'a> {
    http: Http,
    cache_dir: PathBuf,
    opts: &'a HubOptions,
}

impl<'a> Fetcher<'a> {
    /// A client for `opts`; the cache folder is the options' one, else the standard one.
    pub(super) fn new(opts: &'a HubOptions) -> Result<Self> {
        Ok(Self {
            http: Http::new(opts)?,
            cache_dir: opts
                .cache_dir
                .clone()
                .unwrap_or_else(super::cache::default_cache_dir),
            opts,
        })
    }

    /// The cache folder files go to.
    pub(super) fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Words a failure about `file` of `r` for the user.
    pub(super) fn describe(&self, r: &HubRef, file: &str, e: FetchError) -> Error {
        let cx = Context {
            endpoint: &self.http.endpoint,
            cache: self.cache_dir.display().to_string(),
            token_sent: self.http.has_token(),
        };
        describe(&cx, r, file, e)
    }

    /// Fetches `file` of `r`, mapping failures to [`Error::Hub`].
    pub(super) fn fetch(&self, kind: RepoKind, r: &HubRef, file: &str) -> Result<PathBuf> {
        // The fields are public: re-check a hand-built reference, since the revision becomes a
        // path under `refs/` in the cache.
        HubRef::new(&r.repo, &r.revision)?;
        self.fetch_raw(kind, r, file)
            .map_err(|e| self.describe(r, file, e))
    }

    /// Fetches `file` of `r` (see the module documentation), keeping the failure's cause.
    pub(super) fn fetch_raw(
        &self,
        kind: RepoKind,
        r: &HubRef,
        file: &str,
    ) -> std::result::Result<PathBuf, FetchError> {
        validate_file(file).map_err(FetchError::InvalidFile)?;
        let cache = RepoCache::new(&self.cache_dir, kind, r);
        let cached = cache.lookup(&r.revision, file);
        if self.opts.offline {
            return match cached {
                Lookup::Found(p) => Ok(p),
                Lookup::Missing => Err(FetchError::RecordedMissing),
                Lookup::Unknown => Err(FetchError::NotCached),
            };
        }
        // A commit's files never change: a cached one needs no request.
        if let (true, Lookup::Found(p)) = (is_commit_hash(&r.revision), &cached) {
            return Ok(p.clone());
        }
        let meta = match self.metadata(kind, r, file, &cache) {
            Ok(m) => m,
            Err(e) => {
                return match cached {
                    Lookup::Found(p) if e.allows_fallback() => Ok(p),
                    _ => Err(e),
                }
            }
        };
        let pointer = cache.pointer(&meta.commit, file);
        if !pointer.is_file() {
            if !cache.blob(&meta.etag).is_file() {
                self.download(&cache, &meta, &format!("{}/{file}", r.repo))?;
            }
            cache
                .link(&meta.commit, file, &meta.etag)
                .map_err(|e| FetchError::cache("linking the snapshot entry", e))?;
        }
        cache
            .write_ref(&r.revision, &meta.commit)
            .map_err(|e| FetchError::cache("recording the revision's commit", e))?;
        Ok(pointer)
    }

    /// Step 1: `HEAD` the file's `resolve` URL and read its commit, ETag and size.
    fn metadata(
        &self,
        kind: RepoKind,
        r: &HubRef,
        file: &str,
        cache: &RepoCache,
    ) -> std::result::Result<Metadata, FetchError> {
        let url = format!(
            "{}/{}{}/resolve/{}/{}",
            self.http.endpoint,
            kind.url_prefix(),
            r.repo,
            encode(&r.revision, false),
            encode(file, true)
        );
        let resp = match self.http.head(&url) {
            Ok(resp) => resp,
            Err(HttpError::Status(f)) => {
                if let Some(commit) = f.commit.as_deref().filter(|c| is_safe_name(c)) {
                    if f.is_entry_not_found() {
                        cache.record_missing(&r.revision, commit, file);
                    }
                }
                return Err(FetchError::Http(HttpError::Status(f)));
            }
            Err(e) => return Err(FetchError::Http(e)),
        };
        let commit = header(&resp, "x-repo-commit")
            .filter(|c| is_safe_name(c))
            .ok_or_else(|| FetchError::Malformed(format!("no usable X-Repo-Commit for {url}")))?;
        let etag = header(&resp, "x-linked-etag")
            .or_else(|| header(&resp, "etag"))
            .map(|e| normalize_etag(&e))
            .filter(|e| is_safe_name(e))
            .ok_or_else(|| FetchError::Malformed(format!("no usable ETag for {url}")))?;
        let size = header(&resp, "x-linked-size")
            .or_else(|| header(&resp, "content-length"))
            .and_then(|s| s.parse().ok());
        Ok(Metadata {
            commit,
            etag,
            size,
            url,
        })
    }

    /// Step 3: the file's bytes into `blobs/<etag>`, through `<etag>.incomplete` and a rename,
    /// under the blob's lock; a download cut short is resumed while retries remain.
    fn download(
        &self,
        cache: &RepoCache,
        meta: &Metadata,
        label: &str,
    ) -> std::result::Result<(), FetchError> {
        let blob = cache.blob(&meta.etag);
        let io = |what: &'static str| move |e| FetchError::cache(what, e);
        std::fs::create_dir_all(cache.root.join("blobs")).map_err(io("creating blobs/"))?;
        let _lock = cache.lock(&meta.etag).map_err(io("locking the blob"))?;
        if blob.is_file() {
            // Another process finished it while this one waited for the lock.
            return Ok(());
        }
        let part = blob.with_file_name(format!("{}.incomplete", meta.etag));
        let mut bar = DownloadBar::stderr(label.to_string());
        let retries = self.opts.retries.unwrap_or(5);
        let mut attempt = 0;
        loop {
            let result = self.download_once(meta, &part, &mut bar);
            match result {
                Ok(()) => break,
                Err(FetchError::CutShort(_)) if attempt < retries => attempt += 1,
                Err(e) => {
                    bar.abandon();
                    return Err(e);
                }
            }
            bar.abandon();
        }
        bar.finish();
        std::fs::rename(&part, &blob).map_err(io("renaming the finished download"))
    }

    /// One `GET` into `part`, appending when the server honours the `Range` of a resume.
    fn download_once(
        &self,
        meta: &Metadata,
        part: &Path,
        bar: &mut DownloadBar,
    ) -> std::result::Result<(), FetchError> {
        let io = |what: &'static str| move |e| FetchError::cache(what, e);
        let have = std::fs::metadata(part).map_or(0, |m| m.len());
        let from = if meta.size.is_some_and(|s| have < s) {
            have
        } else {
            0
        };
        let resp = self.http.get(&meta.url, from).map_err(FetchError::Http)?;
        let resumed = from > 0 && resp.status().as_u16() == 206;
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(part)
            .map_err(io("opening the partial download"))?;
        let mut done = if resumed { from } else { 0 };
        if self.opts.progress {
            bar.start(meta.size, done);
        }
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(FetchError::CutShort(format!("after {done} bytes: {e}"))),
            };
            file.write_all(&buf[..n])
                .map_err(io("writing the partial download"))?;
            done += n as u64;
            bar.set_position(done);
        }
        file.sync_all()
            .map_err(io("writing the partial download"))?;
        match meta.size {
            Some(size) if done != size => {
                if done > size {
                    let _ = std::fs::remove_file(part);
                }
                Err(FetchError::CutShort(format!(
                    "{done} of {size} bytes arrived"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The files of `r` at its revision, from the Hub's tree API
    /// (`GET {endpoint}/api/{models|datasets}/{owner}/{name}/tree/{revision}?recursive=true`,
    /// following `Link: rel="next"` pages).
    pub(super) fn list_files(
        &self,
        kind: RepoKind,
        r: &HubRef,
    ) -> std::result::Result<Vec<String>, FetchError> {
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(rename = "type")]
            kind: String,
            path: String,
        }
        let mut url = Some(format!(
            "{}/api/{}/{}/tree/{}?recursive=true",
            self.http.endpoint,
            kind.plural(),
            r.repo,
            encode(&r.revision, false)
        ));
        let mut seen = std::collections::HashSet::new();
        let mut files = Vec::new();
        while let Some(u) = url.take() {
            if !seen.insert(u.clone()) {
                return Err(FetchError::Malformed(format!(
                    "the listing pages loop at {u}"
                )));
            }
            let (body, next) = self.http.get_page(&u).map_err(FetchError::Http)?;
            let entries: Vec<Entry> = serde_json::from_slice(&body).map_err(|e| {
                FetchError::Malformed(format!("the listing at {u} is not a JSON file list: {e}"))
            })?;
            files.extend(
                entries
                    .into_iter()
                    .filter(|e| e.kind == "file")
                    .map(|e| e.path),
            );
            url = next;
        }
        Ok(files)
    }
}

/// An ETag without its weak marker and quotes: `W/"abc"` → `abc`.
fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// Rejects file names that are empty, absolute, or could leave the snapshot folder.
pub(super) fn validate_file(file: &str) -> std::result::Result<(), String> {
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

    /// A loopback server answering each connection with the next scripted reply (raw HTTP),
    /// then closing it; returns its URL and the request heads it saw.
    fn scripted_server(replies: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for reply in replies {
                let (mut stream, _) = listener.accept().unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                    head.push(byte[0]);
                }
                seen.push(String::from_utf8_lossy(&head).to_ascii_lowercase());
                stream.write_all(&reply).unwrap();
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            seen
        });
        (url, handle)
    }

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    /// A reply with the Hub's file headers and `body`, announcing `len` bytes.
    fn reply(status: &str, len: usize, extra: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nETag: \"e1\"\r\nX-Repo-Commit: {COMMIT}\r\n\
             Content-Length: {len}\r\n{extra}Connection: close\r\n\r\n"
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn fetch_with(
        url: &str,
        cache: &Path,
        retries: usize,
    ) -> std::result::Result<PathBuf, FetchError> {
        let opts = HubOptions {
            endpoint: Some(url.to_string()),
            cache_dir: Some(cache.to_path_buf()),
            token: Some("t".into()),
            retries: Some(retries),
            ..HubOptions::default()
        };
        let r: HubRef = "hf:o/n".parse().unwrap();
        Fetcher::new(&opts)
            .unwrap()
            .fetch_raw(RepoKind::Model, &r, "w.bin")
    }

    #[test]
    fn a_download_cut_short_resumes_with_range() {
        let body = b"0123456789abcdefghijklmnopqrstuv";
        let (url, server) = scripted_server(vec![
            reply("200 OK", 32, "", b""),
            reply("200 OK", 32, "", &body[..10]),
            reply("206 Partial Content", 22, "", &body[10..]),
        ]);
        let cache = tempfile::tempdir().unwrap();
        let p = fetch_with(&url, cache.path(), 1).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), body);
        let seen = server.join().unwrap();
        assert!(
            seen[0].starts_with("head /o/n/resolve/main/w.bin"),
            "{seen:?}"
        );
        assert!(seen[2].contains("range: bytes=10-"), "{seen:?}");
        assert!(seen[0].contains("authorization: bearer t"), "{seen:?}");
        let blobs = cache.path().join("models--o--n/blobs");
        assert_eq!(std::fs::read_dir(blobs).unwrap().count(), 1);
    }

    #[test]
    fn a_download_cut_short_without_retries_is_an_error() {
        let (url, server) = scripted_server(vec![
            reply("200 OK", 32, "", b""),
            reply("200 OK", 32, "", b"0123456789"),
        ]);
        let cache = tempfile::tempdir().unwrap();
        let err = fetch_with(&url, cache.path(), 0).unwrap_err();
        assert!(matches!(err, FetchError::CutShort(_)), "{err:?}");
        server.join().unwrap();
        assert!(!cache.path().join("models--o--n/blobs/e1").exists());
    }

    #[test]
    fn a_relative_redirect_of_the_head_is_followed() {
        let moved = "HTTP/1.1 307 Temporary Redirect\r\nLocation: /p/n/resolve/main/w.bin\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n";
        let (url, server) = scripted_server(vec![
            moved.as_bytes().to_vec(),
            reply("200 OK", 4, "", b""),
            reply("200 OK", 4, "", b"data"),
        ]);
        let cache = tempfile::tempdir().unwrap();
        let p = fetch_with(&url, cache.path(), 0).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"data");
        let seen = server.join().unwrap();
        assert!(
            seen[1].starts_with("head /p/n/resolve/main/w.bin"),
            "{seen:?}"
        );
    }

    #[test]
    fn etags_lose_quotes_and_weak_marker() {
        assert_eq!(normalize_etag("\"abc123\""), "abc123");
        assert_eq!(normalize_etag("W/\"abc-1\""), "abc-1");
        assert_eq!(normalize_etag("plain"), "plain");
    }
}
