//! How Hub downloads are made: endpoint, token, cache folder, offline mode, progress bar.
//! The environment variables are the ones `huggingface_hub` (Python) reads, so one cache and one
//! configuration serve both.

use std::fmt;
use std::path::PathBuf;

/// Options for [`fetch_file`](super::fetch_file) and [`fetch_model`](super::fetch_model).
///
/// `Default` is online, the public Hub, no explicit token, the default cache folder, no
/// progress bar. [`HubOptions::from_env`] reads the usual environment variables.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HubOptions {
    /// Never touch the network: resolve files from the local cache only.
    pub offline: bool,
    /// Base URL of the Hub, e.g. a mirror. When `None`: `HF_ENDPOINT`, else
    /// `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// Access token for private or gated repositories, sent to the endpoint's host only. When
    /// `None`, the token `huggingface_hub` would use is taken: `HF_TOKEN`, else the file named
    /// by `HF_TOKEN_PATH`, else `$HF_HOME/token` (set `HF_HUB_DISABLE_IMPLICIT_TOKEN` to
    /// prevent that).
    pub token: Option<String>,
    /// The Hub cache folder (the one holding `models--owner--name`). When `None`:
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Draw a progress bar on stderr for large downloads (hidden when stderr is not a terminal).
    pub progress: bool,
    /// How many times a request that failed transiently (connection refused, timeout, HTTP
    /// 408/429/500/502/503/504) is retried, with exponential backoff, and how many times a
    /// download cut short is resumed; `None` means 5.
    pub retries: Option<usize>,
}

impl HubOptions {
    /// Options from the process environment:
    /// - `HF_ENDPOINT`: the Hub base URL;
    /// - `HF_TOKEN`: the access token;
    /// - `HF_HUB_CACHE`, else `HF_HOME` (its `hub` subfolder): the cache folder;
    /// - `CANDLE_FACE_OFFLINE` or `HF_HUB_OFFLINE` set to `1`/`true`/`yes`/`on`: offline.
    ///
    /// The progress bar is on (it hides itself when stderr is not a terminal).
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`HubOptions::from_env`], reading variables through `get` (for tests and for
    /// callers with their own configuration source). Empty values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let cache_dir = get("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| get("HF_HOME").map(|h| PathBuf::from(h).join("hub")));
        let offline = ["CANDLE_FACE_OFFLINE", "HF_HUB_OFFLINE"]
            .iter()
            .any(|k| get(k).is_some_and(|v| is_true(&v)));
        Self {
            offline,
            endpoint: get("HF_ENDPOINT"),
            token: get("HF_TOKEN"),
            cache_dir,
            progress: true,
            retries: None,
        }
    }
}

/// The truthy spellings `huggingface_hub` accepts for boolean environment variables.
fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl fmt::Debug for HubOptions {
    /// Like a derived `Debug`, except that the token is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("offline", &self.offline)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache_dir", &self.cache_dir)
            .field("progress", &self.progress)
            .field("retries", &self.retries)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn opts(vars: &[(&str, &str)]) -> HubOptions {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubOptions::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn empty_environment_gives_defaults_with_progress() {
        let o = opts(&[]);
        assert_eq!(
            o,
            HubOptions {
                progress: true,
                ..HubOptions::default()
            }
        );
    }

    #[test]
    fn reads_endpoint_token_and_cache() {
        let o = opts(&[
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
            ("HF_TOKEN", "hf_secret"),
            ("HF_HOME", "/h"),
        ]);
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(o.token.as_deref(), Some("hf_secret"));
        assert_eq!(o.cache_dir, Some(PathBuf::from("/h/hub")));
        assert!(!o.offline);
        // HF_HUB_CACHE wins over HF_HOME.
        let o = opts(&[("HF_HOME", "/h"), ("HF_HUB_CACHE", "/c")]);
        assert_eq!(o.cache_dir, Some(PathBuf::from("/c")));
        // Empty values are unset.
        let o = opts(&[("HF_TOKEN", ""), ("HF_HUB_CACHE", " ")]);
        assert_eq!((o.token, o.cache_dir), (None, None));
    }

    #[test]
    fn offline_switches() {
        for (k, v, want) in [
            ("CANDLE_FACE_OFFLINE", "1", true),
            ("HF_HUB_OFFLINE", "1", true),
            ("HF_HUB_OFFLINE", "TRUE", true),
            ("HF_HUB_OFFLINE", "yes", true),
            ("HF_HUB_OFFLINE", "0", false),
            ("CANDLE_FACE_OFFLINE", "false", false),
            ("CANDLE_FACE_OFFLINE", "", false),
        ] {
            assert_eq!(opts(&[(k, v)]).offline, want, "{k}={v}");
        }
    }

    #[test]
    fn debug_hides_token() {
        let o = HubOptions {
            token: Some("hf_secret".into()),
            ..HubOptions::default()
        };
        let s = format!("{o:?}");
        assert!(!s.contains("hf_secret"), "{s}");
        assert!(s.contains("<redacted>"), "{s}");
    }
}
