//! The HTTP side of the Hub protocol, on one blocking `ureq` agent: the endpoint and token,
//! retries with exponential backoff on transient failures (as `huggingface_hub` does), and the
//! Hub's error answers (status, `X-Error-Code`, `X-Error-Message`) kept as [`HttpError`].

use super::cache::{env_nonempty, hf_home};
use super::HubOptions;
use crate::{Error, Result};
use std::time::Duration;
use ureq::http::Response;
use ureq::Body;

/// The public Hub, used when neither the options nor `HF_ENDPOINT` name another.
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Retries after a transient failure when the options leave it open.
const DEFAULT_RETRIES: usize = 5;

/// First backoff step; attempt `n` waits up to `BASE_DELAY * 2^(n+1)`.
const BASE_DELAY: Duration = Duration::from_millis(100);

/// Seconds to wait for a connection and for an answer's headers (`huggingface_hub`'s
/// `HF_HUB_ETAG_TIMEOUT`, default 10).
const ETAG_TIMEOUT_VAR: &str = "HF_HUB_ETAG_TIMEOUT";

/// Seconds a download may stall between two reads (`HF_HUB_DOWNLOAD_TIMEOUT`, default 10).
const DOWNLOAD_TIMEOUT_VAR: &str = "HF_HUB_DOWNLOAD_TIMEOUT";

/// Largest answer read into memory (a tree listing page).
const MAX_PAGE_BYTES: u64 = 64 * 1024 * 1024;

/// A request that got no usable answer.
#[derive(Debug)]
pub(super) enum HttpError {
    /// The server answered with an error status.
    Status(Failure),
    /// No answer: connection refused, unknown host, timeout.
    Unreachable(String),
    /// Any other transport failure (TLS, malformed HTTP, too many redirects).
    Transport(String),
}

/// An error status and what the Hub said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    /// The HTTP status code.
    pub status: u16,
    /// `X-Error-Code`: `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, `GatedRepo`, ...
    pub code: Option<String>,
    /// `X-Error-Message`, when sent.
    pub message: Option<String>,
    /// `X-Repo-Commit`: a 404 for a file names the commit that lacks it.
    pub commit: Option<String>,
}

impl Failure {
    fn from_response(resp: &Response<Body>) -> Self {
        Self {
            status: resp.status().as_u16(),
            code: header(resp, "x-error-code"),
            message: header(resp, "x-error-message"),
            commit: header(resp, "x-repo-commit"),
        }
    }

    /// Whether the code says so: the Hub answers 401 `RepoNotFound` to an anonymous client
    /// for a missing or private repository, 404 `RepoNotFound` to an authenticated one.
    pub(super) fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// A missing file: `EntryNotFound`, or a 404 that names no other cause (mirrors that send
    /// no `X-Error-Code`).
    pub(super) fn is_entry_not_found(&self) -> bool {
        self.is("EntryNotFound") || (self.status == 404 && self.code.is_none())
    }
}

/// The value of header `name`, when it is present and text.
pub(super) fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

/// One configured client: the agent, the endpoint, the token and the retry budget.
pub(super) struct Http {
    agent: ureq::Agent,
    /// Base URL without a trailing `/`.
    pub endpoint: String,
    /// `scheme://host[:port]` of the endpoint: the token goes only there.
    origin: String,
    token: Option<String>,
    retries: usize,
}

impl Http {
    /// A client for `opts`: endpoint from the options, else `HF_ENDPOINT`, else the public Hub;
    /// token from the options, else [`implicit_token`].
    pub(super) fn new(opts: &HubOptions) -> Result<Self> {
        let endpoint = opts
            .endpoint
            .clone()
            .or_else(|| env_nonempty("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Error::InvalidArgument(format!(
                "Hub endpoint {endpoint:?} must start with http:// or https://"
            )));
        }
        let etag_timeout = env_seconds(ETAG_TIMEOUT_VAR);
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(format!("candle-face/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(etag_timeout))
            .timeout_recv_response(Some(etag_timeout))
            .timeout_per_read(Some(env_seconds(DOWNLOAD_TIMEOUT_VAR)))
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .build();
        Ok(Self {
            agent: ureq::Agent::new_with_config(config),
            origin: origin(&endpoint).to_string(),
            endpoint,
            token: opts.token.clone().or_else(implicit_token),
            retries: opts.retries.unwrap_or(DEFAULT_RETRIES),
        })
    }

    /// Whether requests to the endpoint carry a token.
    pub(super) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `HEAD url` without following redirects, except relative ones (a renamed repository):
    /// the Hub answers an LFS file with a redirect to its CDN whose headers carry the file's
    /// metadata. Any 2xx or 3xx answer is returned; other statuses are [`HttpError::Status`].
    pub(super) fn head(&self, url: &str) -> std::result::Result<Response<Body>, HttpError> {
        let mut url = url.to_string();
        for _ in 0..10 {
            let resp = self.send(|| {
                self.authorize(self.agent.head(&url), &url)
                    .header("Accept-Encoding", "identity")
                    .config()
                    .max_redirects(0)
                    .build()
                    .call()
            })?;
            let location = header(&resp, "location");
            match location {
                Some(loc) if resp.status().is_redirection() && is_relative(&loc) => {
                    url = format!("{}{loc}", origin(&url));
                }
                _ => return Ok(resp),
            }
        }
        Err(HttpError::Transport(format!(
            "too many redirects for HEAD {url}"
        )))
    }

    /// `GET url` following redirects (the token is kept only on the endpoint's host), asking
    /// for the bytes from `from` on when it is not 0. A 2xx answer is returned.
    pub(super) fn get(
        &self,
        url: &str,
        from: u64,
    ) -> std::result::Result<Response<Body>, HttpError> {
        self.send(|| {
            let mut req = self
                .authorize(self.agent.get(url), url)
                .header("Accept-Encoding", "identity");
            if from > 0 {
                req = req.header("Range", format!("bytes={from}-"));
            }
            req.call()
        })
    }

    /// `GET url` and its whole body (at most 64 MiB), with the URL of the next page from a
    /// `Link: <...>; rel="next"` header.
    pub(super) fn get_page(
        &self,
        url: &str,
    ) -> std::result::Result<(Vec<u8>, Option<String>), HttpError> {
        let mut resp = self.get(url, 0)?;
        let next = header(&resp, "link").and_then(|l| next_link(&l));
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_PAGE_BYTES)
            .read_to_vec()
            .map_err(|e| HttpError::Transport(format!("reading the answer of {url}: {e}")))?;
        Ok((bytes, next))
    }

    /// Adds `Authorization: Bearer <token>` when there is a token and `url` is on the endpoint.
    fn authorize<B>(&self, req: ureq::RequestBuilder<B>, url: &str) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) if origin(url) == self.origin => {
                req.header("Authorization", format!("Bearer {t}"))
            }
            _ => req,
        }
    }

    /// Runs `call` until it gets a non-transient answer or the retries are spent, sleeping
    /// `BASE_DELAY * 2^(n+1)` times a random factor in [0.5, 1) before retry `n`.
    fn send(
        &self,
        call: impl Fn() -> std::result::Result<Response<Body>, ureq::Error>,
    ) -> std::result::Result<Response<Body>, HttpError> {
        let mut attempt = 0;
        loop {
            let result = call();
            let transient = match &result {
                Ok(resp) => is_transient_status(resp.status().as_u16()),
                Err(e) => is_unreachable(e),
            };
            if !transient || attempt >= self.retries {
                return classify(result);
            }
            let factor = 0.5 + rand::random::<f64>() / 2.0;
            let step = BASE_DELAY * 2u32.saturating_pow(attempt as u32 + 1);
            std::thread::sleep(step.mul_f64(factor));
            attempt += 1;
        }
    }
}

/// A successful answer as is; an error status or transport error as an [`HttpError`].
fn classify(
    result: std::result::Result<Response<Body>, ureq::Error>,
) -> std::result::Result<Response<Body>, HttpError> {
    match result {
        Ok(resp) if resp.status().is_success() || resp.status().is_redirection() => Ok(resp),
        Ok(resp) => Err(HttpError::Status(Failure::from_response(&resp))),
        Err(e) if is_unreachable(&e) => Err(HttpError::Unreachable(chain(&e))),
        Err(e) => Err(HttpError::Transport(chain(&e))),
    }
}

/// Statuses worth another try: timeout, rate limit, server errors.
fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Transport errors that mean the server could not be reached (or stopped answering).
fn is_unreachable(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
    )
}

/// Whether a `Location` value is a path on the same server (`/owner/name/...`), not a URL.
fn is_relative(location: &str) -> bool {
    location.starts_with('/') && !location.starts_with("//")
}

/// `scheme://authority` of `url` (the whole string when it has no path).
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find(['/', '?', '#']) {
        Some(i) => &url[..start + i],
        None => url,
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',')
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part.find('>')?;
            (start < end).then(|| part[start..end].trim().to_string())
        })
}

/// Percent-encodes `s` for a URL path, keeping `/` when `keep_slash` (file paths) and
/// encoding it otherwise (a revision is one path segment: `refs/pr/1` → `refs%2Fpr%2F1`).
pub(super) fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The token `huggingface_hub` finds when none is given: `HF_TOKEN`, else the file named by
/// `HF_TOKEN_PATH`, else `$HF_HOME/token` (`HF_HOME` defaulting to `~/.cache/huggingface`);
/// none at all when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set.
fn implicit_token() -> Option<String> {
    if env_nonempty("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some() {
        return None;
    }
    if let Some(t) = env_nonempty("HF_TOKEN") {
        return Some(t.trim().to_string());
    }
    let file = env_nonempty("HF_TOKEN_PATH")
        .map(std::path::PathBuf::from)
        .or_else(|| hf_home().map(|h| h.join("token")))?;
    let token = std::fs::read_to_string(file).ok()?.trim().to_string();
    (!token.is_empty()).then_some(token)
}

/// A timeout in seconds from the variable, 10 s when unset or not a positive number.
fn env_seconds(name: &str) -> Duration {
    env_nonempty(name)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(10), Duration::from_secs_f64)
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
    fn paths_are_percent_encoded() {
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("sub/a b+c.bin", true), "sub/a%20b%2Bc.bin");
        assert_eq!(encode("v1.2_x-y~", false), "v1.2_x-y~");
        assert_eq!(encode("é", true), "%C3%A9");
    }

    #[test]
    fn origin_and_relative_locations() {
        assert_eq!(origin("https://hf.co/a/b?x"), "https://hf.co");
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert!(is_relative("/Owner/name/resolve/main/x"));
        assert!(!is_relative("//cdn.example/x"));
        assert!(!is_relative("https://cdn.example/x"));
    }

    #[test]
    fn link_header_next_page() {
        let l = r#"<https://hf.co/api/x?cursor=a>; rel="prev", <https://hf.co/api/x?cursor=b>; rel="next""#;
        assert_eq!(
            next_link(l).as_deref(),
            Some("https://hf.co/api/x?cursor=b")
        );
        assert_eq!(next_link(r#"<https://hf.co/a>; rel="prev""#), None);
    }

    #[test]
    fn failures_are_classified_like_the_hub() {
        let f = |status, code: Option<&str>| Failure {
            status,
            code: code.map(str::to_string),
            message: None,
            commit: None,
        };
        assert!(f(404, Some("EntryNotFound")).is_entry_not_found());
        assert!(f(404, None).is_entry_not_found());
        assert!(!f(404, Some("RevisionNotFound")).is_entry_not_found());
        assert!(!f(401, Some("RepoNotFound")).is_entry_not_found());
        assert!(f(401, Some("RepoNotFound")).is("RepoNotFound"));
        assert!(is_transient_status(503) && is_transient_status(429));
        assert!(!is_transient_status(404) && !is_transient_status(401));
    }
}
