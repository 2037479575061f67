//! Why a Hub request failed ([`FetchError`]), and the message a user gets for it.

use super::http::{Failure, HttpError};
use super::HubRef;
use crate::Error;

/// A failure to fetch one file or listing, before it is worded for the user.
#[derive(Debug)]
pub(super) enum FetchError {
    /// The file name is unusable (empty, absolute, `..`).
    InvalidFile(String),
    /// The request got no usable answer.
    Http(HttpError),
    /// Offline, and the cache holds nothing for the file.
    NotCached,
    /// Offline, and the cache records that the Hub answered 404 for the file.
    RecordedMissing,
    /// The download ended before all the bytes arrived.
    CutShort(String),
    /// An answer lacked what the Hub always sends (`X-Repo-Commit`, `ETag`) or was not JSON.
    Malformed(String),
    /// Reading or writing the cache failed.
    Cache(String),
}

impl FetchError {
    /// A cache error naming what was being done.
    pub(super) fn cache(what: &str, e: std::io::Error) -> Self {
        FetchError::Cache(format!("{what}: {e}"))
    }

    /// The file does not exist at that revision (a 404 now, or one recorded in the cache).
    pub(super) fn is_entry_not_found(&self) -> bool {
        match self {
            FetchError::Http(HttpError::Status(f)) => f.is_entry_not_found(),
            FetchError::RecordedMissing => true,
            _ => false,
        }
    }

    /// Whether a cached copy may stand in, as `huggingface_hub` does when its metadata request
    /// fails: any failure except an answer that the file or revision does not exist.
    pub(super) fn allows_fallback(&self) -> bool {
        match self {
            FetchError::Http(HttpError::Status(f)) => {
                !(f.is_entry_not_found() || f.is("RevisionNotFound"))
            }
            FetchError::Http(_) | FetchError::Malformed(_) => true,
            _ => false,
        }
    }
}

/// What [`describe`] needs to know about the request.
pub(super) struct Context<'a> {
    pub endpoint: &'a str,
    pub cache: String,
    pub token_sent: bool,
}

/// Words `e` (about `file` of `r`) as an [`Error::Hub`], or [`Error::InvalidArgument`] for a
/// bad file name.
pub(super) fn describe(cx: &Context, r: &HubRef, file: &str, e: FetchError) -> Error {
    let what = format!("`{file}` of {r}");
    let (endpoint, cache) = (cx.endpoint, &cx.cache);
    let msg = match e {
        FetchError::InvalidFile(reason) => {
            return Error::InvalidArgument(format!("{what}: {reason}"));
        }
        FetchError::Http(HttpError::Status(f)) => status_message(cx, r, &f),
        FetchError::Http(HttpError::Unreachable(detail)) => format!(
            "cannot reach the Hub at {endpoint} and it is not in the local cache {cache} ({detail})"
        ),
        FetchError::Http(HttpError::Transport(detail)) => format!(
            "the request to {endpoint} failed and it is not in the local cache {cache} ({detail})"
        ),
        FetchError::NotCached => format!(
            "not in the local cache {cache} and offline mode is on (CANDLE_FACE_OFFLINE / \
             HF_HUB_OFFLINE); run once online to download it"
        ),
        FetchError::RecordedMissing => {
            format!("not found (the cache in {cache} records that the Hub answered 404 for it)")
        }
        FetchError::CutShort(detail) => format!(
            "the download was cut short ({detail}); nothing was stored under its name in the \
             cache, try again"
        ),
        FetchError::Malformed(detail) => {
            format!("unexpected answer from {endpoint}, is it a Hugging Face Hub? ({detail})")
        }
        FetchError::Cache(detail) => format!("cache error in {cache}: {detail}"),
    };
    Error::Hub(format!("{what}: {msg}"))
}

/// The message for an error status, after the Hub's own classification (`X-Error-Code`).
fn status_message(cx: &Context, r: &HubRef, f: &Failure) -> String {
    let (endpoint, repo, status) = (cx.endpoint, &r.repo, f.status);
    let said = f
        .message
        .as_deref()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    if f.is("RevisionNotFound") {
        format!(
            "revision {:?} not found in {repo} on {endpoint}",
            r.revision
        )
    } else if f.is_entry_not_found() {
        format!(
            "not found on {endpoint} (HTTP 404): the repository, the revision or the file does \
             not exist"
        )
    } else if f.is("GatedRepo") {
        format!(
            "{repo} is a gated repository (HTTP {status}): accept its terms on the Hub and set \
             HF_TOKEN to a token of that account{said}"
        )
    } else if f.is("RepoNotFound") && !cx.token_sent {
        format!(
            "repository {repo} not found on {endpoint} (or it is private or gated: set HF_TOKEN)"
        )
    } else if f.is("RepoNotFound") {
        format!(
            "repository {repo} not found on {endpoint} (or the token in use has no access to it)"
        )
    } else if status == 401 {
        format!(
            "authentication required (HTTP 401): set HF_TOKEN to a token with access to \
             {repo}{said}"
        )
    } else if status == 403 {
        format!(
            "access denied (HTTP 403): for a gated repository, accept its terms on the Hub and \
             set HF_TOKEN{said}"
        )
    } else if status >= 500 {
        format!(
            "server error from {endpoint} (HTTP {status}) and it is not in the local cache {}{said}",
            cx.cache
        )
    } else {
        format!("HTTP {status} from {endpoint}{said}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(status: u16, code: Option<&str>, token_sent: bool) -> String {
        let cx = Context {
            endpoint: "https://hub.test",
            cache: "/c".into(),
            token_sent,
        };
        let f = Failure {
            status,
            code: code.map(str::to_string),
            message: Some("said so".into()),
            commit: None,
        };
        let r: HubRef = "hf:o/n@v1".parse().unwrap();
        describe(&cx, &r, "w.bin", FetchError::Http(HttpError::Status(f))).to_string()
    }

    #[test]
    fn status_messages_name_the_cause() {
        let m = msg(401, Some("RepoNotFound"), false);
        assert!(
            m.contains("repository o/n not found") && m.contains("set HF_TOKEN"),
            "{m}"
        );
        let m = msg(404, Some("RepoNotFound"), true);
        assert!(m.contains("token in use has no access"), "{m}");
        let m = msg(403, Some("GatedRepo"), true);
        assert!(m.contains("gated") && m.contains("said so"), "{m}");
        let m = msg(404, Some("RevisionNotFound"), false);
        assert!(m.contains("revision \"v1\" not found"), "{m}");
        let m = msg(401, None, true);
        assert!(
            m.contains("authentication required") && m.contains("said so"),
            "{m}"
        );
        let m = msg(503, None, false);
        assert!(
            m.contains("server error") && m.contains("503") && m.contains("w.bin"),
            "{m}"
        );
        let m = msg(418, None, false);
        assert!(m.contains("HTTP 418"), "{m}");
    }

    #[test]
    fn fallback_only_when_the_answer_is_not_about_the_file() {
        let status = |status, code: Option<&str>| {
            FetchError::Http(HttpError::Status(Failure {
                status,
                code: code.map(str::to_string),
                message: None,
                commit: None,
            }))
        };
        assert!(status(500, None).allows_fallback());
        assert!(status(401, Some("RepoNotFound")).allows_fallback());
        assert!(!status(404, Some("EntryNotFound")).allows_fallback());
        assert!(!status(404, Some("RevisionNotFound")).allows_fallback());
        assert!(FetchError::Http(HttpError::Unreachable("refused".into())).allows_fallback());
        assert!(!FetchError::CutShort("x".into()).allows_fallback());
        assert!(FetchError::RecordedMissing.is_entry_not_found());
    }
}
