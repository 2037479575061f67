//! `hf:owner/name[@revision]`: how a model on the Hugging Face Hub is named on the command line
//! and in code. Repository-name rules follow the Hub's own validation (`huggingface_hub`'s
//! `validate_repo_id`): letters, digits, `-`, `_`, `.`; no `--` or `..`; no leading or trailing
//! `-` or `.`; at most 96 characters.

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The prefix that marks a Hub reference, as opposed to a local path.
pub const HUB_PREFIX: &str = "hf:";

/// The revision used when a reference names none.
pub const DEFAULT_REVISION: &str = "main";

/// Longest owner or repository name the Hub accepts.
const MAX_NAME_LEN: usize = 96;

/// A model repository on the Hub at a revision (branch, tag or commit hash).
///
/// Parsed from `hf:owner/name` or `hf:owner/name@revision`; [`fmt::Display`] writes the same
/// form back, so a reference round-trips through a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HubRef {
    /// The repository id, `owner/name`.
    pub repo: String,
    /// The branch, tag or commit hash; `"main"` when the reference names none.
    pub revision: String,
}

impl HubRef {
    /// A reference to `repo` (`owner/name`) at `revision`, validated like a parsed one.
    pub fn new(repo: &str, revision: &str) -> Result<Self> {
        validate(&format!("{HUB_PREFIX}{repo}@{revision}"), repo, revision)?;
        Ok(Self {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// Whether `s` is meant as a Hub reference (starts with `hf:`) rather than a local path.
    pub fn is_hub_ref(s: &str) -> bool {
        s.starts_with(HUB_PREFIX)
    }

    /// The owner (user or organisation) part of the repository id.
    pub fn owner(&self) -> &str {
        self.repo.split_once('/').map_or("", |(o, _)| o)
    }

    /// The name part of the repository id.
    pub fn name(&self) -> &str {
        self.repo.split_once('/').map_or(&self.repo, |(_, n)| n)
    }
}

impl FromStr for HubRef {
    type Err = Error;

    /// Parses `hf:owner/name` or `hf:owner/name@revision`.
    fn from_str(s: &str) -> Result<Self> {
        let rest = s.strip_prefix(HUB_PREFIX).ok_or_else(|| {
            bad(
                s,
                "a Hub reference starts with `hf:` (expected hf:owner/name[@revision])",
            )
        })?;
        let (repo, revision) = match rest.split_once('@') {
            Some((repo, rev)) => (repo, rev),
            None => (rest, DEFAULT_REVISION),
        };
        if repo.is_empty() {
            return Err(bad(
                s,
                "missing repository (expected hf:owner/name[@revision])",
            ));
        }
        if !repo.contains('/') {
            return Err(bad(
                s,
                "the repository must be `owner/name` (expected hf:owner/name[@revision])",
            ));
        }
        if repo.matches('/').count() > 1 {
            return Err(bad(
                s,
                "the repository must be `owner/name` with a single `/`",
            ));
        }
        if rest.contains('@') && revision.is_empty() {
            return Err(bad(s, "empty revision after `@`"));
        }
        validate(s, repo, revision)?;
        Ok(Self {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }
}

impl fmt::Display for HubRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HUB_PREFIX}{}@{}", self.repo, self.revision)
    }
}

fn bad(input: &str, reason: &str) -> Error {
    Error::InvalidArgument(format!("invalid Hub reference {input:?}: {reason}"))
}

/// Checks `repo` (`owner/name`) and `revision`; errors quote `input`, the text the user wrote.
fn validate(input: &str, repo: &str, revision: &str) -> Result<()> {
    let (owner, name) = repo
        .split_once('/')
        .ok_or_else(|| bad(input, "the repository must be `owner/name`"))?;
    validate_name(input, "owner", owner)?;
    validate_name(input, "repository name", name)?;
    validate_revision(input, revision)
}

fn validate_name(input: &str, what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(bad(input, &format!("empty {what}")));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(bad(
            input,
            &format!("{what} is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(bad(
            input,
            &format!("{what} {s:?} contains {c:?} (allowed: letters, digits, '-', '_', '.')"),
        ));
    }
    if s.contains("--") || s.contains("..") {
        return Err(bad(input, &format!("{what} {s:?} contains '--' or '..'")));
    }
    if s.starts_with(['-', '.']) || s.ends_with(['-', '.']) {
        return Err(bad(
            input,
            &format!("{what} {s:?} starts or ends with '-' or '.'"),
        ));
    }
    Ok(())
}

fn validate_revision(input: &str, rev: &str) -> Result<()> {
    if rev.is_empty() {
        return Err(bad(input, "empty revision"));
    }
    if let Some(c) = rev
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '\\'))
    {
        return Err(bad(input, &format!("revision {rev:?} contains {c:?}")));
    }
    if rev
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad(
            input,
            &format!("revision {rev:?} has an empty, '.' or '..' path segment"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repo_and_default_revision() {
        let r: HubRef = "hf:timesler/facenet".parse().unwrap();
        assert_eq!(r.repo, "timesler/facenet");
        assert_eq!(r.revision, "main");
        assert_eq!(r.owner(), "timesler");
        assert_eq!(r.name(), "facenet");
    }

    #[test]
    fn parses_revision_and_round_trips() {
        for s in [
            "hf:owner/name@v1.0",
            "hf:Org-1/model_2.x@0123456789abcdef0123456789abcdef01234567",
            "hf:o/n@refs/pr/3",
        ] {
            let r: HubRef = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
            assert_eq!(r.to_string().parse::<HubRef>().unwrap(), r);
        }
        let r: HubRef = "hf:o/n@refs/pr/3".parse().unwrap();
        assert_eq!(r.revision, "refs/pr/3");
    }

    #[test]
    fn rejects_bad_inputs_with_reasons() {
        let cases = [
            ("owner/name", "starts with `hf:`"),
            ("hf:", "missing repository"),
            ("hf:name", "owner/name"),
            ("hf:/name", "empty owner"),
            ("hf:owner/", "empty repository name"),
            ("hf:a/b/c", "single `/`"),
            ("hf:owner/name@", "empty revision"),
            ("hf:owner/na me", "contains ' '"),
            ("hf:own!er/name", "contains '!'"),
            ("hf:owner/na--me", "'--'"),
            ("hf:owner/..", "'..'"),
            ("hf:owner/-name", "starts or ends"),
            ("hf:owner/name.", "starts or ends"),
            ("hf:owner/name@v 1", "contains ' '"),
            ("hf:owner/name@a@b", "contains '@'"),
            ("hf:owner/name@../x", "'..' path segment"),
            ("hf:owner/name@a//b", "empty"),
        ];
        for (input, needle) in cases {
            let err = input.parse::<HubRef>().unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, Error::InvalidArgument(_)),
                "{input}: wrong variant {err:?}"
            );
            assert!(msg.contains(needle), "{input}: {msg:?} lacks {needle:?}");
            assert!(
                msg.contains(&format!("{input:?}")),
                "{input}: {msg:?} does not quote the input"
            );
        }
        let long = format!("hf:o/{}", "a".repeat(97));
        assert!(long
            .parse::<HubRef>()
            .unwrap_err()
            .to_string()
            .contains("longer than 96"));
        assert!(format!("hf:o/{}", "a".repeat(96)).parse::<HubRef>().is_ok());
    }

    #[test]
    fn new_validates_like_parse() {
        assert!(HubRef::new("o/n", "main").is_ok());
        assert!(HubRef::new("o", "main").is_err());
        assert!(HubRef::new("o/n", "").is_err());
        assert!(HubRef::is_hub_ref("hf:o/n"));
        assert!(!HubRef::is_hub_ref("models/o/n"));
    }
}
