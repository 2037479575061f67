//! The PostgreSQL gallery against a real server with pgvector: `CANDLE_FACE_PG_URL` names a
//! superuser connection (`.ci/run` starts a throwaway cluster and sets it). Without it every test
//! here says it is skipped and passes, so that `cargo test` works on machines without a server.
#![cfg(feature = "postgres")]

use candle_face::distance::Distance;
use candle_face::gallery::postgres::PgGallery;
use candle_face::gallery::{Face, FileGallery, GalleryStore, HnswParams, ModelId, SearchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const URL_VAR: &str = "CANDLE_FACE_PG_URL";

fn server() -> Option<String> {
    let url = std::env::var(URL_VAR).ok();
    if url.is_none() {
        eprintln!("skipped: {URL_VAR} is not set (no PostgreSQL server with pgvector to test)");
    }
    url
}

/// `url` with the gallery table `name_<pid>`.
fn table_url(url: &str, name: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}table={name}_{}", std::process::id())
}

fn model(fp: &str, dim: usize, distance: Distance) -> ModelId {
    ModelId {
        fingerprint: fp.into(),
        dim,
        distance,
    }
}

/// `people × per` noisy unit faces around random centres, sources `p<i>/<k>.jpg`.
fn faces(people: usize, per: usize, dim: usize, seed: u64) -> Vec<Face> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for p in 0..people {
        let c: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        for k in 0..per {
            let v: Vec<f32> = c
                .iter()
                .map(|x| x + 0.3 * rng.random_range(-1.0f32..1.0))
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            out.push(Face {
                person: format!("p{p:03}"),
                source: format!("p{p:03}/{k}.jpg"),
                embedding: v.iter().map(|x| x / n).collect(),
            });
        }
    }
    out
}

fn drop_table(url: &str) {
    if let Ok(g) = PgGallery::open(url) {
        g.destroy().unwrap();
    }
}

fn round_trip(url: &str, distance: Distance) {
    let url = table_url(url, &format!("round_trip_{distance}"));
    drop_table(&url);
    let m = model("m1", 16, distance);
    let all = faces(150, 4, 16, 1);
    let mut pg = PgGallery::open_or_create(&url, &m).unwrap();
    for batch in all.chunks(100) {
        pg.enroll(batch).unwrap();
    }
    pg.commit().unwrap();
    let mut file = FileGallery::new(m.clone());
    file.enroll(&all).unwrap();
    let queries: Vec<f32> = faces(40, 1, 16, 2)
        .into_iter()
        .chain(all.iter().step_by(37).cloned())
        .flat_map(|f| f.embedding)
        .collect();
    let want = file
        .search(&queries, &SearchOptions::new(3, 0.4).exact())
        .unwrap();
    // The session keeps its prepared search and setting between calls; exact search and a new
    // ef_search in between must not disturb them.
    let hnsw = pg.identify(&queries, &SearchOptions::new(3, 0.4)).unwrap();
    let exact = pg
        .identify(&queries, &SearchOptions::new(3, 0.4).exact())
        .unwrap();
    let small_ef = SearchOptions {
        ef_search: 40,
        ..SearchOptions::new(3, 0.4)
    };
    let hnsw_40 = pg.identify(&queries, &small_ef).unwrap();
    let hnsw_again = pg.identify(&queries, &SearchOptions::new(3, 0.4)).unwrap();
    for got in [hnsw, exact, hnsw_40, hnsw_again] {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.identity, w.identity);
            let names = |r: &candle_face::gallery::Identification| -> Vec<String> {
                r.candidates.iter().map(|c| c.name.clone()).collect()
            };
            assert_eq!(names(g), names(w), "{distance}");
            for (a, b) in g.candidates.iter().zip(&w.candidates) {
                assert!((a.distance - b.distance).abs() < 1e-4, "{a:?} vs {b:?}");
            }
        }
    }
    // Reopened without a model, it knows its own; listing agrees with the file gallery.
    let mut again = PgGallery::open(&url).unwrap();
    assert_eq!(again.model(), &m);
    assert_eq!(again.people().unwrap(), file.people().unwrap());
    again.destroy().unwrap();
}

#[test]
fn round_trip_gives_the_file_gallerys_exact_answers() {
    let Some(url) = server() else { return };
    round_trip(&url, Distance::Euclidean);
    round_trip(&url, Distance::Cosine);
}

/// The HNSW index's build parameters, as the server recorded them.
fn index_options(url: &str, table: &str) -> Vec<String> {
    let base = url.split('?').next().unwrap();
    let mut c = postgres::Client::connect(base, postgres::NoTls).unwrap();
    let row = c
        .query_one(
            "SELECT reloptions FROM pg_class WHERE relname = $1",
            &[&format!("{table}_hnsw")],
        )
        .unwrap();
    row.get(0)
}

#[test]
fn index_is_built_with_the_given_parameters() {
    let Some(url) = server() else { return };
    let url = table_url(&url, "hnsw_params");
    drop_table(&url);
    let table = url.rsplit("table=").next().unwrap().to_string();
    let m = model("m1", 8, Distance::Euclidean);
    let params = HnswParams {
        m: 8,
        ef_construction: 40,
    };
    let mut g = PgGallery::open_or_create(&url, &m)
        .unwrap()
        .with_hnsw(params);
    g.enroll(&faces(20, 2, 8, 3)).unwrap();
    g.commit().unwrap();
    assert_eq!(index_options(&url, &table), ["m=8", "ef_construction=40"]);
    g.destroy().unwrap();
    for bad in [(1, 64), (101, 300), (16, 20), (16, 1001)] {
        let p = HnswParams {
            m: bad.0,
            ef_construction: bad.1,
        };
        let e = p.check().unwrap_err().to_string();
        assert!(e.contains("pgvector takes"), "{bad:?}: {e}");
    }
    assert!(HnswParams::default().check().is_ok());
}

#[test]
fn re_enrolment_replaces_and_removal_deletes() {
    let Some(url) = server() else { return };
    let url = table_url(&url, "idempotent");
    drop_table(&url);
    let m = model("m1", 8, Distance::Euclidean);
    let all = faces(20, 3, 8, 3);
    let mut g = PgGallery::open_or_create(&url, &m).unwrap();
    g.enroll(&all).unwrap();
    g.commit().unwrap();
    let before = g.people().unwrap();
    let mut g = PgGallery::open_or_create(&url, &m).unwrap();
    g.enroll(&all).unwrap();
    g.enroll(&all[..10]).unwrap();
    g.commit().unwrap();
    assert_eq!(g.len().unwrap(), 60);
    assert_eq!(g.people().unwrap(), before);
    // The same photo under another name moves to that name; a batch naming it twice keeps
    // the last.
    let mut moved = all[0].clone();
    moved.person = "zed".into();
    g.enroll(&[all[0].clone(), moved]).unwrap();
    assert_eq!(g.len().unwrap(), 60);
    let r = g
        .identify(&all[0].embedding, &SearchOptions::new(1, 0.1).exact())
        .unwrap();
    assert_eq!(r[0].identity.as_deref(), Some("zed"));
    assert_eq!(g.remove_person("p001").unwrap(), 3);
    assert_eq!(g.remove_person("p001").unwrap(), 0);
    assert_eq!(g.len().unwrap(), 57);
    g.destroy().unwrap();
}

#[test]
fn another_model_is_refused() {
    let Some(url) = server() else { return };
    let url = table_url(&url, "other_model");
    drop_table(&url);
    let m = model("m1", 8, Distance::Euclidean);
    PgGallery::open_or_create(&url, &m).unwrap();
    for other in [
        model("m2", 8, Distance::Euclidean),
        model("m1", 16, Distance::Euclidean),
        model("m1", 8, Distance::Cosine),
    ] {
        let e = PgGallery::open_or_create(&url, &other)
            .unwrap_err()
            .to_string();
        assert!(e.contains("another model"), "{e}");
        assert!(e.contains("other_model"), "names the gallery: {e}");
    }
    let mut g = PgGallery::open(&url).unwrap();
    let e = g.enroll(&faces(1, 1, 4, 1)).unwrap_err().to_string();
    assert!(e.contains("size 4"), "{e}");
    g.destroy().unwrap();
}

const KILL_PEOPLE: usize = 200;
const KILL_PER: usize = 5;

/// Enrolls three people per transaction, slowly: the process the test below kills.
#[test]
#[ignore = "run by killed_mid_enrolment_then_rerun_leaves_everyone_complete_once"]
fn slow_enroller() {
    let url = std::env::var("CANDLE_FACE_PG_KILL_URL").expect("started by the kill test");
    let m = model("m1", 8, Distance::Euclidean);
    let mut g = PgGallery::open_or_create(&url, &m).unwrap();
    for batch in faces(KILL_PEOPLE, KILL_PER, 8, 5).chunks(3 * KILL_PER) {
        g.enroll(batch).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
}

fn faces_per_person(g: &mut PgGallery) -> Vec<usize> {
    g.people().unwrap().into_iter().map(|p| p.faces).collect()
}

#[test]
fn killed_mid_enrolment_then_rerun_leaves_everyone_complete_once() {
    let Some(url) = server() else { return };
    let url = table_url(&url, "killed");
    drop_table(&url);
    let m = model("m1", 8, Distance::Euclidean);
    let mut g = PgGallery::open_or_create(&url, &m).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "slow_enroller", "--ignored", "--nocapture"])
        .env("CANDLE_FACE_PG_KILL_URL", &url)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while g.people().unwrap().len() < 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "the enroller made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no chance to finish a transaction
    child.wait().unwrap();
    let counts = faces_per_person(&mut g);
    assert!(
        counts.len() < KILL_PEOPLE,
        "killed too late: {} people",
        counts.len()
    );
    assert!(
        counts.iter().all(|&c| c == KILL_PER),
        "a half-written person: {counts:?}"
    );
    // The rerun enrolls everything again; nobody is duplicated or missing.
    for batch in faces(KILL_PEOPLE, KILL_PER, 8, 5).chunks(3 * KILL_PER) {
        g.enroll(batch).unwrap();
    }
    let counts = faces_per_person(&mut g);
    assert_eq!(counts, vec![KILL_PER; KILL_PEOPLE]);
    assert_eq!(g.len().unwrap(), KILL_PEOPLE * KILL_PER);
    g.destroy().unwrap();
}

fn open_err(url: &str) -> String {
    let m = model("m1", 8, Distance::Euclidean);
    PgGallery::open_or_create(url, &m).unwrap_err().to_string()
}

#[test]
fn bad_url_server_down_wrong_table_and_no_extension_are_clear_errors() {
    let Some(url) = server() else { return };
    let e = open_err("postgres://ann:topsecret@127.0.0.1:notaport/db");
    assert!(
        e.contains("not a valid URL") && !e.contains("topsecret"),
        "{e}"
    );
    // Nothing listens on port 1.
    let e = open_err("postgres://ann:topsecret@127.0.0.1:1/db");
    assert!(
        e.contains("127.0.0.1:1") && e.contains("cannot connect"),
        "{e}"
    );
    assert!(
        e.contains("server running") && !e.contains("topsecret"),
        "{e}"
    );
    let e = PgGallery::open(&table_url(&url, "never_enrolled"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no gallery table"), "{e}");

    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let plain = format!("plain_{}", std::process::id());
    admin
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {plain}; CREATE TABLE {plain} (x int)"
        ))
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let e = open_err(&format!("{url}{sep}table={plain}"));
    assert!(e.contains("not a candle-face gallery"), "{e}");
    admin.batch_execute(&format!("DROP TABLE {plain}")).unwrap();

    // A database without pgvector, and a user who may not create it.
    let who = format!("cf_noext_{}", std::process::id());
    // DROP/CREATE DATABASE may not share a transaction: one statement each.
    let mut sql = |s: String| admin.batch_execute(&s).unwrap();
    sql(format!("DROP DATABASE IF EXISTS {who}"));
    sql(format!("DROP ROLE IF EXISTS {who}"));
    sql(format!("CREATE ROLE {who} LOGIN"));
    sql(format!("CREATE DATABASE {who}"));
    let cfg: postgres::Config = url.parse().unwrap();
    let host = match &cfg.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("{URL_VAR} must name a TCP host, not {other:?}"),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let e = open_err(&format!("postgres://{who}@{host}:{port}/{who}"));
    sql(format!("DROP DATABASE {who}"));
    sql(format!("DROP ROLE {who}"));
    assert!(
        e.contains("CREATE EXTENSION vector") && e.contains(&who),
        "{e}"
    );
}

mod common;

fn cli() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("candle-face").unwrap()
}

/// One `identify --json` answer: image, identity, and the candidates' names and distances.
type Answer = (String, String, Vec<(String, f64)>);

/// `identify --json` answers.
fn identify_json(
    model: &std::path::Path,
    gallery: &str,
    images: &[std::path::PathBuf],
) -> Vec<Answer> {
    let out = cli()
        .args([
            "identify",
            "--top-k",
            "3",
            "--threshold",
            "0.5",
            "--json",
            "--exact",
        ])
        .arg("--model")
        .arg(model)
        .args(["--gallery", gallery])
        .args(images)
        .assert()
        .success();
    String::from_utf8_lossy(&out.get_output().stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let cands = v["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_string(),
                        c["distance"].as_f64().unwrap(),
                    )
                })
                .collect();
            (v["image"].to_string(), v["identity"].to_string(), cands)
        })
        .collect()
}

fn list_json(gallery: &str) -> serde_json::Value {
    let out = cli()
        .args(["gallery", "--gallery", gallery, "list", "--json"])
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

#[test]
fn cli_enroll_identify_list_remove_agree_with_the_file_gallery() {
    let Some(url) = server() else { return };
    let url = table_url(&url, "cli");
    drop_table(&url);
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path());
    let people = tmp.path().join("people");
    candle_face::synthetic::write_dataset(&people, 6, 3, 40, 7).unwrap();
    let file = tmp.path().join("g.safetensors").display().to_string();
    for gallery in [file.as_str(), url.as_str(), url.as_str()] {
        cli()
            .arg("enroll")
            .arg("--model")
            .arg(&model)
            .arg("--data")
            .arg(&people)
            .args(["--gallery", gallery])
            .args(["--hnsw-m", "12", "--hnsw-ef-construction", "48"])
            .assert()
            .success();
    }
    let table = url.rsplit("table=").next().unwrap();
    assert_eq!(index_options(&url, table), ["m=12", "ef_construction=48"]);
    // Enrolled twice into the database: still one row per photo.
    let (f, p) = (list_json(&file), list_json(&url));
    assert_eq!(f["people"], p["people"]);
    assert_eq!(f["model"], p["model"]);
    assert_eq!(p["people"].as_array().unwrap().len(), 6);
    let images = common::sorted_files(&people.join(p["people"][0]["name"].as_str().unwrap()), 2);
    let (want, got) = (
        identify_json(&model, &file, &images),
        identify_json(&model, &url, &images),
    );
    assert_eq!(want.len(), 2);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!((&w.0, &w.1), (&g.0, &g.1));
        assert_eq!(w.2.len(), g.2.len());
        for (a, b) in w.2.iter().zip(&g.2) {
            assert_eq!(a.0, b.0);
            assert!((a.1 - b.1).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }
    let gone = p["people"][0]["name"].as_str().unwrap().to_string();
    cli()
        .args(["gallery", "--gallery", &url, "remove", &gone])
        .assert()
        .success();
    assert_eq!(list_json(&url)["people"].as_array().unwrap().len(), 5);
    PgGallery::open(&url).unwrap().destroy().unwrap();
}
