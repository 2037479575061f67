//! Connecting to a gallery database: the URL's `table` parameter, passwords from the URL,
//! `PGPASSWORD` or the password file, and errors that say what to do.

use super::super::location::redact;
use crate::{Error, Result};
use postgres::config::Host;
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The table used when the URL names none.
pub const DEFAULT_TABLE: &str = "candle_face_gallery";

/// Seconds to wait for a server unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT_S: u64 = 10;

/// A parsed gallery URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// Connection parameters for the client.
    pub config: Config,
    /// The gallery table (a plain SQL identifier).
    pub table: String,
    /// The URL without password, for messages.
    pub shown: String,
}

/// Splits the `table` parameter off `url` and parses the rest as libpq would.
pub fn parse(url: &str) -> Result<Target> {
    let shown = redact(url);
    let bad = |why: String| Error::Database {
        server: shown.clone(),
        reason: why,
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut table = DEFAULT_TABLE.to_string();
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("table", t)) => table = t.to_string(),
            _ => rest.push(kv),
        }
    }
    check_identifier(&table).map_err(bad)?;
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config = Config::from_str(&url).map_err(|e| bad(format!("not a valid URL: {e}")))?;
    if config.get_user().is_none() {
        let user = std::env::var("PGUSER")
            .or_else(|_| std::env::var("USER"))
            .map_err(
                |_| bad("no user name: put one in the URL (postgres://USER@host/db)".into()),
            )?;
        config.user(&user);
    }
    if config.get_password().is_none() {
        if let Some(pw) = password_from_env_or_file(&config) {
            config.password(pw);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_S));
    }
    Ok(Target {
        config,
        table,
        shown,
    })
}

/// A table name must be a plain identifier: it is put into SQL quoted, never from user text
/// that could close the quote.
fn check_identifier(t: &str) -> std::result::Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 63
        && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !t.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "table name {t:?}: use letters, digits and underscores (at most 63, not starting \
             with a digit)"
        ))
    }
}

/// `PGPASSWORD`, else the first matching line of `PGPASSFILE` or `~/.pgpass`.
fn password_from_env_or_file(config: &Config) -> Option<String> {
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        return Some(pw);
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    let want = [host.as_str(), port.as_str(), db, user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(pgpass_fields)
        .find(|f| f.len() == 5 && (0..4).all(|i| f[i] == "*" || f[i] == want[i]))
        .map(|f| f[4].clone())
}

/// The `:`-separated fields of a password-file line (`\:` and `\\` are escapes).
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().unwrap().extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// Opens a connection to `target`, with errors that say what to check.
pub fn connect(target: &Target) -> Result<Client> {
    target
        .config
        .connect(NoTls)
        .map_err(|e| explain(&target.shown, &target.config, e, "cannot connect"))
}

/// A client error as an [`Error::Database`] naming the server, with advice for the usual causes.
pub fn explain(shown: &str, config: &Config, e: postgres::Error, doing: &str) -> Error {
    let user = config.get_user().unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    let detail = match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => e.to_string(),
    };
    let advice = match e.code() {
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            format!(
                "authentication failed for user {user:?}: give the password in the URL, \
                 PGPASSWORD or ~/.pgpass"
            )
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            format!("database {db:?} does not exist: create it (createdb {db}) or fix the URL")
        }
        Some(c) if *c == SqlState::UNDEFINED_FILE || *c == SqlState::FEATURE_NOT_SUPPORTED => {
            "the pgvector extension is not installed on this server: install it (e.g. the \
             postgresql-15-pgvector package or the pgvector/pgvector container image)"
                .into()
        }
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => format!(
            "user {user:?} may not do this ({detail}); if pgvector is missing, ask an \
             administrator to run CREATE EXTENSION vector in database {db:?}"
        ),
        Some(_) => detail.clone(),
        None if e.is_closed() || e.as_db_error().is_none() => format!(
            "{detail}: is the server running and reachable at this host and port? (a TLS-only \
             server is not supported: this client connects without TLS)"
        ),
        None => detail.clone(),
    };
    Error::Database {
        server: shown.to_string(),
        reason: format!("{doing}: {advice}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parameter_is_split_off_and_checked() {
        let t = parse("postgres://ann:pw@h:5433/faces?table=staff&connect_timeout=3").unwrap();
        assert_eq!(t.table, "staff");
        assert_eq!(t.config.get_dbname(), Some("faces"));
        assert_eq!(
            t.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(t.config.get_password(), Some(&b"pw"[..]));
        assert!(!t.shown.contains("pw"));
        assert_eq!(parse("postgres://a@h/db").unwrap().table, DEFAULT_TABLE);
        for bad in ["x;drop", "1abc", "a\"b", ""] {
            let e = parse(&format!("postgres://a@h/db?table={bad}")).unwrap_err();
            assert!(e.to_string().contains("table name"), "{e}");
        }
        let e = parse("postgres://a@h:notaport/db").unwrap_err();
        assert!(e.to_string().contains("not a valid URL"), "{e}");
    }

    #[test]
    fn password_file_lines_with_escapes_and_wildcards() {
        assert_eq!(
            pgpass_fields(r"h:5432:*:ann:pa\:ss\\w"),
            vec!["h", "5432", "*", "ann", r"pa:ss\w"]
        );
        assert_eq!(
            pgpass_fields("a:b:c:d:e:f"),
            vec!["a", "b", "c", "d", "e:f"]
        );
    }
}
