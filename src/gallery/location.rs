//! Where a gallery is: a file path, or a PostgreSQL URL.

use std::path::PathBuf;

/// A gallery's location, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A safetensors file ([`super::FileGallery`]).
    File(PathBuf),
    /// A PostgreSQL URL, `postgres://user[:password]@host[:port]/db[?table=NAME]` (or
    /// `postgresql://`); other query parameters are libpq connection parameters
    /// (`sslmode`, `connect_timeout`, ...).
    Postgres(String),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL is a database; anything else a file path.
    pub fn parse(s: &str) -> Self {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::File(PathBuf::from(s))
        }
    }
}

impl std::str::FromStr for Location {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(s))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// `url` with any password replaced by `***` (in the user-info part and in a `password=`
/// parameter), for messages.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => return url.to_string(),
    };
    let (authority_end, _) = rest
        .char_indices()
        .find(|&(_, c)| c == '/' || c == '?')
        .unwrap_or((rest.len(), ' '));
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{}", &userinfo[..colon], &authority[at..]),
                None => authority.to_string(),
            }
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_databases_and_the_rest_files() {
        assert_eq!(
            Location::parse("postgres://u@h/db"),
            Location::Postgres("postgres://u@h/db".into())
        );
        assert!(matches!(
            Location::parse("PostgreSQL://h/db"),
            Location::Postgres(_)
        ));
        assert_eq!(
            Location::parse("g.safetensors"),
            Location::File("g.safetensors".into())
        );
        assert_eq!(
            Location::parse("postgres/g.safetensors"),
            Location::File("postgres/g.safetensors".into())
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://ann:s3cret@db.example:5433/faces?table=staff"),
            "postgres://ann:***@db.example:5433/faces?table=staff"
        );
        assert_eq!(
            redact("postgresql://h/db?password=s3cret&sslmode=require"),
            "postgresql://h/db?password=***&sslmode=require"
        );
        assert_eq!(redact("postgres://ann@h/db"), "postgres://ann@h/db");
        let shown = Location::parse("postgres://a:pw@h:1/d").to_string();
        assert!(!shown.contains("pw"), "{shown}");
    }
}
