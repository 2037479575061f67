//! Hub downloads against a loopback mock of the Hugging Face Hub's `resolve` endpoint.
//!
//! The mock answers `HEAD`/`GET /{owner}/{name}/resolve/{revision}/{file}` the way the Hub does:
//! small files directly (`ETag`, `X-Repo-Commit`, `Content-Length`), LFS files with a `302` to a
//! CDN URL carrying `X-Linked-Etag`/`X-Linked-Size`, `304` for a matching `If-None-Match`, `404`
//! with `X-Repo-Commit` for a missing file, `401` + `X-Error-Code: RepoNotFound` for a missing
//! repository. Each test starts its own server on 127.0.0.1:0 and its own cache folder; the
//! server stops when the test drops it (or after 60 s at most). No test touches the network.
#![cfg(feature = "hub")]

use candle_face::hub::{fetch_file, fetch_model, HubOptions, HubRef};
use candle_face::Error;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "acme/facenet";

/// How the mock serves one file.
#[derive(Clone, Debug)]
enum Kind {
    /// 200 with the bytes, like a small git-stored file.
    Plain,
    /// 302 to `/cdn/<etag>` with `X-Linked-*` headers, like an LFS file.
    Lfs,
    /// Always this status.
    Status(u16),
    /// HEAD is fine; GET announces the full `Content-Length`, sends this many bytes, closes.
    Truncate(usize),
    /// The first `n` requests for the file answer 500, then it is served plainly.
    FailFirst(usize),
}

#[derive(Clone)]
struct Served {
    body: Vec<u8>,
    kind: Kind,
}

impl Served {
    fn etag(&self) -> String {
        // FNV-1a of the bytes plus the length: distinct contents get distinct blob names.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in &self.body {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}{:016x}", self.body.len())
    }
}

#[derive(Default)]
struct State {
    /// repo id -> file path -> file
    repos: HashMap<String, HashMap<String, Served>>,
    /// "METHOD path" of every request, plus the `Authorization` header when sent.
    log: Vec<String>,
    /// requests seen per file, for `Kind::FailFirst`
    hits: HashMap<String, usize>,
}

struct MockHub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MockHub {
    fn start(repos: &[(&str, Vec<(&str, Served)>)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut state = State::default();
        for (repo, files) in repos {
            let files = files
                .iter()
                .map(|(p, s)| (p.to_string(), s.clone()))
                .collect();
            state.repos.insert(repo.to_string(), files);
        }
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || serve(listener, addr, state, stop))
        };
        Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and closes the port (later connections are refused).
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    fn set_kind(&self, repo: &str, file: &str, kind: Kind) {
        let mut st = self.state.lock().unwrap();
        st.repos.get_mut(repo).unwrap().get_mut(file).unwrap().kind = kind;
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(listener: TcpListener, addr: SocketAddr, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut workers = Vec::new();
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && workers.len() < 500 {
        match listener.accept() {
            Ok((stream, _)) => {
                let state = state.clone();
                workers.push(std::thread::spawn(move || {
                    let _ = handle(stream, addr, &state);
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => break,
        }
    }
    drop(listener);
    for w in workers {
        let _ = w.join();
    }
}

/// Answers one request, then closes the connection.
fn handle(mut stream: TcpStream, addr: SocketAddr, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = percent_decode(first.next().unwrap_or(""));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let is_get = method == "GET";

    let mut st = state.lock().unwrap();
    let mut entry = format!("{method} {path}");
    if let Some(auth) = headers.get("authorization") {
        entry.push_str(&format!(" [{auth}]"));
    }
    st.log.push(entry);

    // CDN: /cdn/<etag>
    if let Some(etag) = path.strip_prefix("/cdn/") {
        let found = st
            .repos
            .values()
            .flat_map(|f| f.values())
            .find(|s| s.etag() == etag)
            .cloned();
        drop(st);
        return match found {
            Some(s) => reply(
                &mut stream,
                200,
                &[("ETag", format!("\"{etag}\""))],
                &s.body,
                is_get,
            ),
            None => reply(&mut stream, 404, &[], b"", is_get),
        };
    }

    // Tree listing: /api/{datasets|models}/{owner}/{name}/tree/{rev}[?recursive=true]
    if let Some(rest) = path.split('?').next().unwrap_or("").strip_prefix("/api/") {
        let parts: Vec<&str> = rest.splitn(5, '/').collect();
        if parts.len() == 5 && parts[3] == "tree" {
            let repo = match parts[0] {
                "models" => format!("{}/{}", parts[1], parts[2]),
                kind => format!("{kind}/{}/{}", parts[1], parts[2]),
            };
            let listing = st.repos.get(&repo).map(|files| {
                let mut entries: Vec<_> = files
                    .iter()
                    .map(|(p, f)| {
                        serde_json::json!({"type": "file", "oid": f.etag(), "size": f.body.len(), "path": p})
                    })
                    .collect();
                entries.sort_by_key(|e| e["path"].as_str().unwrap().to_string());
                serde_json::to_vec(&entries).unwrap()
            });
            drop(st);
            return match listing {
                Some(body) => reply(&mut stream, 200, &[], &body, is_get),
                None => reply(
                    &mut stream,
                    401,
                    &[("X-Error-Code", "RepoNotFound".to_string())],
                    b"{\"error\":\"Repository not found\"}",
                    is_get,
                ),
            };
        }
    }

    // /{owner}/{name}/resolve/{rev}/{file...}, or /datasets/{owner}/{name}/resolve/...
    let (kind, rest) = match path.strip_prefix("/datasets/") {
        Some(r) => ("datasets/", r.to_string()),
        None => ("", path.trim_start_matches('/').to_string()),
    };
    let parts: Vec<&str> = rest.splitn(5, '/').collect();
    if parts.len() != 5 || parts[2] != "resolve" {
        drop(st);
        return reply(&mut stream, 400, &[], b"{\"error\":\"bad path\"}", is_get);
    }
    let (repo, rev, file) = (
        format!("{kind}{}/{}", parts[0], parts[1]),
        parts[3],
        parts[4],
    );
    let Some(files) = st.repos.get(&repo) else {
        drop(st);
        // What the Hub answers an anonymous client for a missing (or private) repository.
        let h = [("X-Error-Code", "RepoNotFound".to_string())];
        return reply(
            &mut stream,
            401,
            &h,
            b"{\"error\":\"Repository not found\"}",
            is_get,
        );
    };
    if rev != "main" && rev != COMMIT {
        drop(st);
        let h = [("X-Error-Code", "RevisionNotFound".to_string())];
        return reply(
            &mut stream,
            404,
            &h,
            b"{\"error\":\"Revision not found\"}",
            is_get,
        );
    }
    let commit = ("X-Repo-Commit", COMMIT.to_string());
    let Some(served) = files.get(file).cloned() else {
        drop(st);
        let h = [commit, ("X-Error-Code", "EntryNotFound".to_string())];
        return reply(
            &mut stream,
            404,
            &h,
            b"{\"error\":\"Entry not found\"}",
            is_get,
        );
    };
    let hits = {
        let n = st.hits.entry(format!("{repo}/{file}")).or_insert(0);
        *n += 1;
        *n
    };
    drop(st);

    let etag = served.etag();
    let quoted = format!("\"{etag}\"");
    if headers.get("if-none-match") == Some(&quoted) {
        return reply(&mut stream, 304, &[("ETag", quoted), commit], b"", false);
    }
    let len = served.body.len().to_string();
    match served.kind {
        Kind::Status(code) => reply(
            &mut stream,
            code,
            &[commit],
            b"{\"error\":\"boom\"}",
            is_get,
        ),
        Kind::FailFirst(n) if hits <= n => reply(
            &mut stream,
            500,
            &[commit],
            b"{\"error\":\"try again\"}",
            is_get,
        ),
        Kind::Plain | Kind::FailFirst(_) => reply(
            &mut stream,
            200,
            &[("ETag", quoted), commit],
            &served.body,
            is_get,
        ),
        Kind::Lfs => {
            let h = [
                ("Location", format!("http://{addr}/cdn/{etag}")),
                ("X-Linked-Etag", quoted),
                ("X-Linked-Size", len),
                ("ETag", "\"git-pointer-etag\"".to_string()),
                commit,
            ];
            reply(&mut stream, 302, &h, b"", is_get)
        }
        Kind::Truncate(sent) => {
            if !is_get {
                return reply(
                    &mut stream,
                    200,
                    &[("ETag", quoted), commit],
                    &served.body,
                    false,
                );
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nETag: {quoted}\r\nX-Repo-Commit: {COMMIT}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(&served.body[..sent])?;
            stream.flush()?;
            stream.shutdown(Shutdown::Both)
        }
    }
}

fn reply(
    stream: &mut TcpStream,
    code: u16,
    headers: &[(&str, String)],
    body: &[u8],
    send_body: bool,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        302 => "Found",
        304 => "Not Modified",
        401 => "Unauthorized",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {code} {reason}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if code != 304 {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    if send_body && code != 304 {
        stream.write_all(body)?;
    }
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn config_bytes() -> Vec<u8> {
    br#"{"arch":"inception_resnet_v1","embedding_dim":512}"#.to_vec()
}

fn standard_repo() -> Vec<(&'static str, Served)> {
    vec![
        (
            "config.json",
            Served {
                body: config_bytes(),
                kind: Kind::Plain,
            },
        ),
        (
            "model.safetensors",
            Served {
                body: bytes(100_000, 7),
                kind: Kind::Lfs,
            },
        ),
        (
            "sub/extra.bin",
            Served {
                body: bytes(1000, 3),
                kind: Kind::Plain,
            },
        ),
    ]
}

fn opts(hub: &MockHub, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: Some(hub.endpoint()),
        cache_dir: Some(cache.to_path_buf()),
        token: Some("hf_test_token".into()),
        retries: Some(0),
        ..HubOptions::default()
    }
}

fn hub_ref(s: &str) -> HubRef {
    s.parse().unwrap()
}

fn hub_msg(e: Error) -> String {
    match e {
        Error::Hub(m) => m,
        other => panic!("expected Error::Hub, got {other:?}"),
    }
}

fn assert_contains(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "{msg:?} lacks {n:?}");
    }
}

/// Every file (not folder) under `dir`, recursively, as paths relative to `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out
}

#[test]
fn fetch_model_downloads_into_the_standard_cache() {
    let hub = MockHub::start(&[(REPO, standard_repo())]);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path());
    let files = fetch_model(&hub_ref("hf:acme/facenet"), None, &o).unwrap();

    let snap = cache
        .path()
        .join("models--acme--facenet")
        .join("snapshots")
        .join(COMMIT);
    assert_eq!(files.weights, snap.join("model.safetensors"));
    assert_eq!(files.config, Some(snap.join("config.json")));
    assert_eq!(files.commit.as_deref(), Some(COMMIT));
    assert_eq!(std::fs::read(&files.weights).unwrap(), bytes(100_000, 7));
    assert_eq!(
        std::fs::read(files.config.unwrap()).unwrap(),
        config_bytes()
    );
    let refs_main = cache.path().join("models--acme--facenet/refs/main");
    assert_eq!(std::fs::read_to_string(refs_main).unwrap().trim(), COMMIT);
    // The LFS file is stored under its linked ETag, fetched through the CDN redirect.
    let etag = standard_repo()[1].1.etag();
    assert!(cache
        .path()
        .join("models--acme--facenet/blobs")
        .join(&etag)
        .is_file());
    let log = hub.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with(&format!("GET /cdn/{etag}"))),
        "{log:?}"
    );
    // The token is sent to the Hub.
    assert!(
        log.iter().any(|l| l.contains("[Bearer hf_test_token]")),
        "{log:?}"
    );

    // A nested file, by name.
    let p = fetch_file(&hub_ref("hf:acme/facenet@main"), "sub/extra.bin", &o).unwrap();
    assert_eq!(p, snap.join("sub/extra.bin"));
    assert_eq!(std::fs::read(&p).unwrap(), bytes(1000, 3));

    // Fetching again online revalidates with HEAD only: no second GET.
    let gets_before = hub.log().iter().filter(|l| l.starts_with("GET")).count();
    let again = fetch_model(&hub_ref("hf:acme/facenet"), None, &o).unwrap();
    assert_eq!(again.weights, files.weights);
    let gets_after = hub.log().iter().filter(|l| l.starts_with("GET")).count();
    assert_eq!(gets_before, gets_after, "{:?}", hub.log());
}

#[test]
fn offline_fetch_is_served_from_the_cache_after_the_server_stops() {
    let mut hub = MockHub::start(&[(REPO, standard_repo())]);
    let cache = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, cache.path());
    let online = fetch_model(&hub_ref("hf:acme/facenet"), None, &o).unwrap();
    hub.stop();
    let requests = hub.log().len();

    o.offline = true;
    let offline = fetch_model(&hub_ref("hf:acme/facenet"), None, &o).unwrap();
    assert_eq!(offline, online);
    assert_eq!(std::fs::read(&offline.weights).unwrap(), bytes(100_000, 7));
    // By commit hash too.
    let by_commit = fetch_model(&hub_ref(&format!("hf:acme/facenet@{COMMIT}")), None, &o).unwrap();
    assert_eq!(by_commit, online);

    // Online but with the Hub unreachable (connection refused), the cache serves as well.
    o.offline = false;
    let fallback = fetch_model(&hub_ref("hf:acme/facenet"), None, &o).unwrap();
    assert_eq!(fallback, online);
    assert_eq!(hub.log().len(), requests, "the stopped server saw requests");
}

#[test]
fn offline_with_an_empty_cache_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let o = HubOptions {
        offline: true,
        // Nothing listens here; offline mode must not even try.
        endpoint: Some("http://127.0.0.1:9".into()),
        cache_dir: Some(cache.path().to_path_buf()),
        ..HubOptions::default()
    };
    let msg = hub_msg(fetch_model(&hub_ref("hf:acme/facenet@v2"), None, &o).unwrap_err());
    assert_contains(
        &msg,
        &[
            "model.safetensors",
            "hf:acme/facenet@v2",
            "offline",
            "not in the local cache",
        ],
    );
    let msg = hub_msg(fetch_file(&hub_ref("hf:acme/facenet"), "config.json", &o).unwrap_err());
    assert_contains(&msg, &["config.json", "acme/facenet", "offline"]);
}

#[test]
fn unreachable_hub_with_an_empty_cache_is_a_clear_error() {
    let mut hub = MockHub::start(&[(REPO, standard_repo())]);
    hub.stop();
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path());
    let msg = hub_msg(fetch_file(&hub_ref("hf:acme/facenet"), "config.json", &o).unwrap_err());
    assert_contains(
        &msg,
        &[
            "config.json",
            "hf:acme/facenet@main",
            "cannot reach",
            &hub.endpoint(),
            "not in the local cache",
        ],
    );
}

#[test]
fn missing_file_and_missing_repo_say_not_found() {
    let hub = MockHub::start(&[(REPO, standard_repo())]);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path());

    let msg = hub_msg(fetch_file(&hub_ref("hf:acme/facenet"), "nope.bin", &o).unwrap_err());
    assert_contains(&msg, &["not found", "nope.bin", "acme/facenet", "404"]);

    let msg = hub_msg(fetch_model(&hub_ref("hf:ghost/none"), None, &o).unwrap_err());
    assert_contains(&msg, &["not found", "ghost/none", "model.safetensors"]);

    let msg = hub_msg(fetch_model(&hub_ref("hf:acme/facenet@nobranch"), None, &o).unwrap_err());
    assert_contains(&msg, &["not found", "acme/facenet@nobranch"]);

    let msg = hub_msg(
        fetch_model(&hub_ref("hf:acme/facenet"), Some("missing.safetensors"), &o).unwrap_err(),
    );
    assert_contains(&msg, &["not found", "missing.safetensors", "acme/facenet"]);

    // Names that could escape the cache folder are refused before any request.
    let n = hub.log().len();
    let err = fetch_file(&hub_ref("hf:acme/facenet"), "../../etc/passwd", &o).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(hub.log().len(), n);
}

#[test]
fn a_repository_without_config_json_gives_config_none_online_and_offline() {
    let files = vec![(
        "weights.safetensors",
        Served {
            body: bytes(5000, 1),
            kind: Kind::Lfs,
        },
    )];
    let mut hub = MockHub::start(&[("acme/bare", files)]);
    let cache = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, cache.path());
    let r = hub_ref("hf:acme/bare");
    let got = fetch_model(&r, Some("weights.safetensors"), &o).unwrap();
    assert_eq!(got.config, None);
    assert_eq!(std::fs::read(&got.weights).unwrap(), bytes(5000, 1));
    hub.stop();
    // The 404 was recorded in the cache (`.no_exist`), so offline knows there is no config.
    o.offline = true;
    assert_eq!(
        fetch_model(&r, Some("weights.safetensors"), &o).unwrap(),
        got
    );
}

#[test]
fn server_error_is_reported_and_retries_recover() {
    let files = vec![
        (
            "model.safetensors",
            Served {
                body: bytes(2000, 9),
                kind: Kind::Status(500),
            },
        ),
        (
            "flaky.bin",
            Served {
                body: bytes(3000, 4),
                kind: Kind::FailFirst(1),
            },
        ),
    ];
    let hub = MockHub::start(&[(REPO, files)]);
    let cache = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, cache.path());
    let msg = hub_msg(fetch_model(&hub_ref("hf:acme/facenet"), None, &o).unwrap_err());
    assert_contains(
        &msg,
        &["server error", "500", "model.safetensors", "acme/facenet"],
    );
    assert!(!cache
        .path()
        .join("models--acme--facenet/snapshots")
        .exists());

    // One 500, then success: with a retry allowed, the download goes through.
    o.retries = Some(2);
    let p = fetch_file(&hub_ref("hf:acme/facenet"), "flaky.bin", &o).unwrap();
    assert_eq!(std::fs::read(p).unwrap(), bytes(3000, 4));
}

#[test]
fn truncated_download_errors_and_leaves_nothing_under_the_final_name() {
    let body = bytes(50_000, 5);
    let served = Served {
        body: body.clone(),
        kind: Kind::Truncate(20_000),
    };
    let etag = served.etag();
    let hub = MockHub::start(&[(REPO, vec![("model.safetensors", served)])]);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path());
    let r = hub_ref("hf:acme/facenet");

    let msg = hub_msg(fetch_model(&r, None, &o).unwrap_err());
    assert_contains(&msg, &["cut short", "model.safetensors", "acme/facenet"]);
    let repo_dir = cache.path().join("models--acme--facenet");
    assert!(!repo_dir.join("blobs").join(&etag).exists());
    assert!(!repo_dir.join("snapshots").exists());
    for f in files_under(cache.path()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(name != etag && name != "model.safetensors", "found {f:?}");
    }
    // Offline, the half download is not mistaken for the file.
    let offline = HubOptions {
        offline: true,
        ..o.clone()
    };
    assert!(fetch_model(&r, None, &offline).is_err());

    // Once the server behaves, the download completes with the right bytes.
    hub.set_kind(REPO, "model.safetensors", Kind::Plain);
    let got = fetch_model(&r, None, &o).unwrap();
    assert_eq!(std::fs::read(&got.weights).unwrap(), body);
}

#[test]
fn large_download_with_progress_bar_gets_the_right_bytes() {
    let big = bytes(5 * 1024 * 1024 + 123, 11);
    let files = vec![(
        "model.safetensors",
        Served {
            body: big.clone(),
            kind: Kind::Lfs,
        },
    )];
    let hub = MockHub::start(&[(REPO, files)]);
    let cache = tempfile::tempdir().unwrap();
    let o = HubOptions {
        progress: true,
        ..opts(&hub, cache.path())
    };
    let got = fetch_model(&hub_ref("hf:acme/facenet"), None, &o).unwrap();
    assert_eq!(got.config, None);
    assert!(std::fs::read(&got.weights).unwrap() == big);
}

#[test]
fn hub_references_parse_and_reject_bad_input() {
    let r = hub_ref("hf:acme/facenet@v1.2");
    assert_eq!(
        (r.repo.as_str(), r.revision.as_str()),
        ("acme/facenet", "v1.2")
    );
    assert_eq!(hub_ref("hf:acme/facenet").revision, "main");
    for bad in [
        "acme/facenet",
        "hf:acme",
        "hf:acme/",
        "hf:/x",
        "hf:a/b@",
        "hf:a b/c",
        "hf:a/b/c",
    ] {
        let err = bad.parse::<HubRef>().unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err:?}");
        assert!(err.to_string().contains(bad), "{bad}: {err}");
    }
}

/// A real (tiny, untrained) candle-face model folder: `(config.json, model.safetensors)` bytes.
fn tiny_model_files(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    candle_face::synthetic::write_untrained_model(dir, 0.5, false).unwrap();
    (
        std::fs::read(dir.join("config.json")).unwrap(),
        std::fs::read(dir.join("model.safetensors")).unwrap(),
    )
}

/// `candle-face verify --model hf:test/tiny` through the mock Hub gives the same answer as the
/// local folder; with the server stopped, `--offline` answers from the cache; without
/// `--offline` and without a server, the cached copy is used too (or a clear error).
#[test]
fn cli_verify_with_a_hub_model_online_then_offline() {
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("local");
    let (config, weights) = tiny_model_files(&local);
    let imgs = work.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let a = imgs.join("a.png");
    let b = imgs.join("b.png");
    candle_face::synthetic::Identity::new(1, 0)
        .render(32, 0)
        .save(&a)
        .unwrap();
    candle_face::synthetic::Identity::new(1, 1)
        .render(32, 0)
        .save(&b)
        .unwrap();
    let mut hub = MockHub::start(&[(
        "test/tiny",
        vec![
            (
                "config.json",
                Served {
                    body: config,
                    kind: Kind::Plain,
                },
            ),
            (
                "model.safetensors",
                Served {
                    body: weights,
                    kind: Kind::Lfs,
                },
            ),
        ],
    )]);
    let cache = work.path().join("cache");
    let run = |model: &str, endpoint: &str, extra: &[&str]| {
        let mut cmd = assert_cmd::Command::cargo_bin("candle-face").unwrap();
        cmd.env("HF_ENDPOINT", endpoint)
            .env("HF_HUB_CACHE", &cache)
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("CANDLE_FACE_OFFLINE")
            .env("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
            .args(["verify", "--json", "--model", model])
            .args(extra)
            .arg(&a)
            .arg(&b);
        cmd.output().unwrap()
    };
    let want = run(local.to_str().unwrap(), &hub.endpoint(), &[]);
    assert!(
        want.status.success(),
        "{}",
        String::from_utf8_lossy(&want.stderr)
    );
    let online = run("hf:test/tiny", &hub.endpoint(), &[]);
    assert!(
        online.status.success(),
        "{}",
        String::from_utf8_lossy(&online.stderr)
    );
    assert_eq!(online.stdout, want.stdout);
    assert!(hub
        .log()
        .iter()
        .any(|l| l.contains("test/tiny/resolve/main/model.safetensors")));
    let endpoint = hub.endpoint();
    hub.stop();
    let offline = run("hf:test/tiny", &endpoint, &["--offline"]);
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    assert_eq!(offline.stdout, want.stdout);
    // A repository that was never downloaded: a clear error naming it, no panic.
    let missing = run("hf:test/other", &endpoint, &["--offline"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("test/other"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Nothing half-written in the cache.
    for f in files_under(&cache) {
        let s = f.to_string_lossy();
        assert!(!s.ends_with(".incomplete") && !s.contains(".tmp"), "{s}");
    }
}

/// A Parquet file in the layout of a Hugging Face image dataset: `image` is the `datasets`
/// library's `Image` struct `{bytes, path}`, `label` an int64 `ClassLabel` whose names are in
/// the `huggingface` file metadata. `rows` are (image bytes or None for a path-only image, class).
fn hf_parquet(rows: &[(Option<Vec<u8>>, i64)], names: &[String]) -> Vec<u8> {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema {
               optional group image { optional binary bytes; optional binary path (STRING); }
               optional int64 label;
             }",
        )
        .unwrap(),
    );
    let hf = serde_json::json!({"info": {"features": {
        "image": {"_type": "Image"},
        "label": {"_type": "ClassLabel", "names": names},
    }}});
    let props = Arc::new(
        WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "huggingface".to_string(),
                hf.to_string(),
            )]))
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(7))
            .build(),
    );
    let mut buf = Vec::new();
    let mut w = SerializedFileWriter::new(&mut buf, schema, props).unwrap();
    for chunk in rows.chunks(7) {
        let mut rg = w.next_row_group().unwrap();
        let mut col = 0;
        while let Some(mut c) = rg.next_column().unwrap() {
            match col {
                0 => {
                    let vals: Vec<ByteArray> = chunk
                        .iter()
                        .filter_map(|(b, _)| b.clone().map(ByteArray::from))
                        .collect();
                    let defs: Vec<i16> = chunk
                        .iter()
                        .map(|(b, _)| if b.is_some() { 2 } else { 1 })
                        .collect();
                    c.typed::<ByteArrayType>()
                        .write_batch(&vals, Some(&defs), None)
                        .unwrap();
                }
                1 => {
                    let vals: Vec<ByteArray> = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, _)| ByteArray::from(format!("img{i}.png").as_str()))
                        .collect();
                    c.typed::<ByteArrayType>()
                        .write_batch(&vals, Some(&vec![2; chunk.len()]), None)
                        .unwrap();
                }
                _ => {
                    let vals: Vec<i64> = chunk.iter().map(|(_, l)| *l).collect();
                    c.typed::<Int64Type>()
                        .write_batch(&vals, Some(&vec![1; chunk.len()]), None)
                        .unwrap();
                }
            }
            c.close().unwrap();
            col += 1;
        }
        rg.close().unwrap();
    }
    w.close().unwrap();
    buf
}

/// `candle-face train --data hf:test/faces`: a Parquet image dataset (written here from
/// generated faces) served by the mock Hub is listed, downloaded into the Hub cache, extracted
/// once into an image folder (bad rows reported and skipped) and trained on for a few steps;
/// with the server stopped, `--offline` trains from the cache.
#[test]
fn cli_train_from_a_hub_parquet_dataset_online_then_offline() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let people = candle_face::synthetic::write_dataset(&src, 8, 4, 40, 5).unwrap();
    let names: Vec<String> = (0..8).map(|i| format!("Person {i}")).collect();
    let mut rows: Vec<(Option<Vec<u8>>, i64)> = Vec::new();
    for (label, imgs) in people.iter().enumerate() {
        for p in imgs {
            rows.push((Some(std::fs::read(p).unwrap()), label as i64));
        }
    }
    // Two bad rows: bytes that are no image, and an image stored by path only.
    rows.insert(5, (Some(b"certainly not an image".to_vec()), 1));
    rows.push((None, 2));
    let parquet = hf_parquet(&rows, &names);
    let mut hub = MockHub::start(&[(
        "datasets/test/faces",
        vec![
            (
                "data/train-00000-of-00001.parquet",
                Served {
                    body: parquet,
                    kind: Kind::Lfs,
                },
            ),
            (
                "README.md",
                Served {
                    body: b"---\nlicense: mit\n---\n".to_vec(),
                    kind: Kind::Plain,
                },
            ),
        ],
    )]);
    let cache = work.path().join("hf-cache");
    let ours = work.path().join("cf-cache");
    let train = |endpoint: &str, out: &Path, extra: &[&str]| {
        let mut cmd = assert_cmd::Command::cargo_bin("candle-face").unwrap();
        cmd.env("HF_ENDPOINT", endpoint)
            .env("HF_HUB_CACHE", &cache)
            .env("CANDLE_FACE_CACHE", &ours)
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("CANDLE_FACE_OFFLINE")
            .env("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
            .args(["train", "--data", "hf:test/faces", "--out"])
            .arg(out)
            .args([
                "--steps",
                "3",
                "--image-size",
                "32",
                "--channels",
                "8,16",
                "--embedding-dim",
                "16",
                "--people",
                "3",
                "--images-per-person",
                "2",
                "--val-fraction",
                "0.25",
                "--log-every",
                "1",
                "--quiet",
            ])
            .args(extra);
        cmd.output().unwrap()
    };
    let run1 = work.path().join("run1");
    let o = train(&hub.endpoint(), &run1, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("32 images of 8 people from 34 rows"),
        "{stderr}"
    );
    assert!(
        stderr.contains("row 5: the bytes are not a recognised image format"),
        "{stderr}"
    );
    assert!(
        stderr.contains("row 33: the image has no embedded bytes"),
        "{stderr}"
    );
    assert!(run1.join("model.safetensors").is_file() && run1.join("config.json").is_file());
    let log = hub.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("GET /api/datasets/test/faces/tree/main")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l
                .contains("/datasets/test/faces/resolve/main/data/train-00000-of-00001.parquet")),
        "{log:?}"
    );
    // The extracted folder: one sub-folder per ClassLabel name, the images byte for byte.
    let extracted = ours.join("datasets/test--faces").join(COMMIT).join("train");
    let mut dirs: Vec<String> = std::fs::read_dir(&extracted)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, names);
    let mut first: Vec<_> = std::fs::read_dir(extracted.join("Person 0"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    first.sort();
    assert_eq!(first.len(), 4);
    assert_eq!(
        std::fs::read(&first[0]).unwrap(),
        std::fs::read(&people[0][0]).unwrap()
    );

    // Offline, server gone: the same data from the caches.
    let endpoint = hub.endpoint();
    hub.stop();
    let run2 = work.path().join("run2");
    let o = train(&endpoint, &run2, &["--offline"]);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("(already extracted)"), "{stderr}");
    assert!(run2.join("model.safetensors").is_file());
    // A dataset that was never downloaded: a clear error, no panic.
    let o = train(
        &endpoint,
        &work.path().join("run3"),
        &["--offline", "--dataset-split", "test"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success());
    assert!(
        stderr.contains("test/faces") && stderr.contains("no Parquet files"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for f in files_under(&cache).into_iter().chain(files_under(&ours)) {
        let s = f.to_string_lossy();
        assert!(
            !s.ends_with(".incomplete") && !s.contains(".extracting-"),
            "{s}"
        );
    }
}
