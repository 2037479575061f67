//! `PgGallery`: a gallery in a PostgreSQL table, searched with pgvector (feature `postgres`).
//!
//! The URL is `postgres://user[:password]@host[:port]/db[?table=NAME]` (default table
//! [`DEFAULT_TABLE`]); passwords come from the URL, `PGPASSWORD` or `~/.pgpass` and are never
//! printed. On first use the gallery creates the `vector` extension (if it may) and its table:
//!
//! ```sql
//! CREATE TABLE t (id bigserial PRIMARY KEY, person text NOT NULL, source text NOT NULL,
//!                 model text NOT NULL, embedding vector(D) NOT NULL, UNIQUE (model, source));
//! ```
//!
//! with the model ([`ModelId`]) as JSON in the table's comment, checked on every open: a table
//! without it is not a gallery, and a gallery of another model (fingerprint, size or distance)
//! is refused. Enrolment stages each batch with a binary `COPY` and upserts it on
//! `(model, source)` in one transaction, so a batch is stored whole or not at all and enrolling
//! a photo again replaces it. [`GalleryStore::commit`] builds the HNSW index (`vector_l2_ops`
//! for euclidean models, `vector_cosine_ops` for cosine) once the first faces are in: building
//! it after a bulk load is much faster than growing it row by row.
//!
//! Identification orders by the distance operator with `LIMIT`, under `hnsw.ef_search` and
//! pgvector's strict-order iterative scan (so that `LIMIT` may exceed `ef_search`), groups faces
//! by person, and compares with the threshold in SQL. Exact search turns index scans off for
//! its transaction: a sequential scan compares with every face.

mod connect;

pub use connect::DEFAULT_TABLE;

use super::{
    check_queries, Candidate, Face, GalleryStore, HnswParams, Identification, ModelId, Person,
    SearchOptions,
};
use crate::distance::Distance;
use crate::{Error, Result};
use connect::{connect, explain, Target};
use pgvector::Vector;
use postgres::types::Type;
use postgres::{binary_copy::BinaryCopyInWriter, Client, Statement};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What the table comment holds.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    candle_face_gallery: u32,
    model: ModelId,
}

/// A gallery in a PostgreSQL table (see the module documentation).
pub struct PgGallery {
    client: Client,
    target: Target,
    model: ModelId,
    vector: Type,
    hnsw: HnswParams,
    /// The nearest-faces query, prepared on first use.
    nearest: Option<Statement>,
    /// The session's `hnsw.ef_search`, once set.
    ef_search: Option<usize>,
}

impl std::fmt::Debug for PgGallery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgGallery({})", self.target.shown)
    }
}

/// The table's model, or `None` when there is no such table.
fn read_marker(
    client: &mut impl postgres::GenericClient,
    table: &str,
) -> std::result::Result<Option<String>, String> {
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL, obj_description(to_regclass($1), 'pg_class')",
            &[&quote(table)],
        )
        .map_err(|e| e.to_string())?;
    let exists: bool = row.get(0);
    if !exists {
        return Ok(None);
    }
    let comment: Option<String> = row.get(1);
    Ok(Some(comment.unwrap_or_default()))
}

/// `"table"`: the name is checked to be a plain identifier when parsed.
fn quote(table: &str) -> String {
    format!("\"{table}\"")
}

fn operator(distance: Distance) -> (&'static str, &'static str) {
    match distance {
        Distance::Cosine => ("<=>", "vector_cosine_ops"),
        Distance::Euclidean | Distance::SquaredEuclidean => ("<->", "vector_l2_ops"),
    }
}

impl PgGallery {
    /// Opens the gallery at `url`, which must exist.
    ///
    /// # Errors
    /// [`Error::Database`] when the server cannot be reached, refuses the login, or has no such
    /// gallery table (or a table that is not a gallery).
    pub fn open(url: &str) -> Result<Self> {
        let target = connect::parse(url)?;
        let mut client = connect(&target)?;
        let marker = read_marker(&mut client, &target.table)
            .map_err(|e| db(&target, format!("reading the gallery table: {e}")))?;
        let Some(comment) = marker else {
            return Err(db(
                &target,
                format!(
                    "there is no gallery table {:?} in this database: enroll into it first, or \
                     name another with ?table=NAME",
                    target.table
                ),
            ));
        };
        let model = parse_marker(&target, &comment)?;
        Self::ready(client, target, model)
    }

    /// Opens the gallery at `url` for `model`, creating the extension, table and marker when
    /// missing.
    ///
    /// # Errors
    /// As [`open`](Self::open), and when the gallery belongs to another model or pgvector is
    /// missing and may not be installed by this user.
    pub fn open_or_create(url: &str, model: &ModelId) -> Result<Self> {
        let target = connect::parse(url)?;
        let mut client = connect(&target)?;
        let mut tx = client
            .transaction()
            .map_err(|e| explain(&target.shown, &target.config, e, "starting a transaction"))?;
        // Concurrent first enrolments create the table once.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('candle_face:' || $1))",
            &[&target.table],
        )
        .map_err(|e| explain(&target.shown, &target.config, e, "locking"))?;
        let marker = read_marker(&mut tx, &target.table)
            .map_err(|e| db(&target, format!("reading the gallery table: {e}")))?;
        match marker {
            Some(comment) => parse_marker(&target, &comment)?.ensure_same(model, &target.shown)?,
            None => create_table(&mut tx, &target, model)?,
        }
        tx.commit()
            .map_err(|e| explain(&target.shown, &target.config, e, "creating the gallery"))?;
        Self::ready(client, target, model.clone())
    }

    fn ready(mut client: Client, target: Target, model: ModelId) -> Result<Self> {
        let vector = client
            .prepare("SELECT NULL::vector")
            .map_err(|e| explain(&target.shown, &target.config, e, "looking up type vector"))?
            .columns()[0]
            .type_()
            .clone();
        // Iterative scans keep going past `ef_search` when `LIMIT` asks for more, in order.
        client
            .batch_execute("SET hnsw.iterative_scan = strict_order")
            .map_err(|e| explain(&target.shown, &target.config, e, "configuring the session"))?;
        Ok(Self {
            client,
            target,
            model,
            vector,
            hnsw: HnswParams::default(),
            nearest: None,
            ef_search: None,
        })
    }

    /// The same gallery, building its HNSW index (when it has none yet) with `params`.
    pub fn with_hnsw(mut self, params: HnswParams) -> Self {
        self.hnsw = params;
        self
    }

    fn err(&self, doing: &str) -> impl Fn(postgres::Error) -> Error + '_ {
        let doing = doing.to_string();
        move |e| explain(&self.target.shown, &self.target.config, e, &doing)
    }

    /// The table, quoted for SQL.
    fn table(&self) -> String {
        quote(&self.target.table)
    }

    /// Builds the HNSW index if the table has none (with the [`HnswParams`] of
    /// [`with_hnsw`](Self::with_hnsw)), with `maintenance_work_mem` for this session when given
    /// (e.g. `"1GB"`: an index that fits in it builds much faster).
    pub fn build_index(&mut self, maintenance_work_mem: Option<&str>) -> Result<()> {
        if let Some(m) = maintenance_work_mem {
            self.client
                .execute(
                    "SELECT set_config('maintenance_work_mem', $1, false)",
                    &[&m],
                )
                .map_err(self.err("setting maintenance_work_mem"))?;
        }
        let (_, opclass) = operator(self.model.distance);
        let HnswParams { m, ef_construction } = self.hnsw;
        let sql = format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding {opclass}) \
             WITH (m = {m}, ef_construction = {ef_construction})",
            quote(&format!("{}_hnsw", self.target.table)),
            self.table()
        );
        self.client.batch_execute(&sql).map_err(|e| {
            explain(
                &self.target.shown,
                &self.target.config,
                e,
                "building the index",
            )
        })
    }

    /// Drops the gallery's table (and with it its faces and index).
    pub fn destroy(mut self) -> Result<()> {
        let sql = format!("DROP TABLE IF EXISTS {}", self.table());
        self.client
            .batch_execute(&sql)
            .map_err(|e| explain(&self.target.shown, &self.target.config, e, "dropping"))
    }

    /// Bulk-loads `faces` (sources must be new to the gallery: no upsert) with one binary
    /// `COPY` straight into the table, in one transaction: the fastest way to fill a new
    /// gallery before [`build_index`](Self::build_index).
    pub fn bulk_load(&mut self, faces: &[Face]) -> Result<u64> {
        let sql = format!(
            "COPY {} (person, source, model, embedding) FROM STDIN BINARY",
            self.table()
        );
        self.copy_in(&sql, faces, true)
    }

    fn copy_in(&mut self, sql: &str, faces: &[Face], with_model: bool) -> Result<u64> {
        let mut types = vec![Type::TEXT, Type::TEXT];
        if with_model {
            types.push(Type::TEXT);
        }
        types.push(self.vector.clone());
        let (shown, config) = (self.target.shown.clone(), self.target.config.clone());
        let fp = self.model.fingerprint.clone();
        let explain = |e| explain(&shown, &config, e, "copying faces");
        let mut tx = self.client.transaction().map_err(explain)?;
        let sink = tx.copy_in(sql).map_err(explain)?;
        let mut w = BinaryCopyInWriter::new(sink, &types);
        for f in faces {
            let v = Vector::from(f.embedding.clone());
            if with_model {
                w.write(&[&f.person, &f.source, &fp, &v]).map_err(explain)?;
            } else {
                w.write(&[&f.person, &f.source, &v]).map_err(explain)?;
            }
        }
        let n = w.finish().map_err(explain)?;
        tx.commit().map_err(explain)?;
        Ok(n)
    }
}

fn db(target: &Target, reason: String) -> Error {
    Error::Database {
        server: target.shown.clone(),
        reason,
    }
}

fn parse_marker(target: &Target, comment: &str) -> Result<ModelId> {
    let m: Marker = serde_json::from_str(comment).map_err(|_| {
        db(
            target,
            format!(
                "table {:?} exists and is not a candle-face gallery: name another with \
                 ?table=NAME",
                target.table
            ),
        )
    })?;
    Ok(m.model)
}

fn create_table(tx: &mut postgres::Transaction, target: &Target, model: &ModelId) -> Result<()> {
    let fail = |doing: &str| {
        let doing = doing.to_string();
        move |e| explain(&target.shown, &target.config, e, &doing)
    };
    // Only when missing: a user who may not create extensions can use one an administrator made.
    let has_vector: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')",
            &[],
        )
        .map_err(fail("checking for pgvector"))?
        .get(0);
    if !has_vector {
        tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
            .map_err(fail("creating the pgvector extension"))?;
    }
    let t = quote(&target.table);
    tx.batch_execute(&format!(
        "CREATE TABLE {t} (id bigserial PRIMARY KEY, person text NOT NULL, \
         source text NOT NULL, model text NOT NULL, embedding vector({}) NOT NULL, \
         UNIQUE (model, source))",
        model.dim
    ))
    .map_err(fail("creating the gallery table"))?;
    let marker = serde_json::to_string(&Marker {
        candle_face_gallery: 1,
        model: model.clone(),
    })
    .map_err(|e| Error::Msg(e.to_string()))?;
    // COMMENT takes no parameters: the JSON is quoted as an SQL literal.
    tx.batch_execute(&format!(
        "COMMENT ON TABLE {t} IS '{}'",
        marker.replace('\'', "''")
    ))
    .map_err(fail("marking the gallery table"))
}

/// The last face of every source (a batch may name a source twice; the upsert may not).
fn last_per_source(faces: &[Face]) -> Vec<Face> {
    let mut at: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<Face> = Vec::with_capacity(faces.len());
    for f in faces {
        match at.get(f.source.as_str()) {
            Some(&i) => out[i] = f.clone(),
            None => {
                at.insert(&f.source, out.len());
                out.push(f.clone());
            }
        }
    }
    out
}

impl PgGallery {
    /// `SELECT person, distance, distance <= threshold ... ORDER BY distance LIMIT n` for
    /// parameters (query, n, threshold).
    fn nearest_sql(&self) -> String {
        let (op, _) = operator(self.model.distance);
        let dist = match self.model.distance {
            Distance::SquaredEuclidean => format!("power(embedding {op} $1, 2)"),
            _ => format!("embedding {op} $1"),
        };
        format!(
            "SELECT person, ({dist})::real, ({dist}) <= $3 FROM {} ORDER BY embedding {op} $1 \
             LIMIT $2",
            self.table()
        )
    }

    /// The nearest people to one query; see the module documentation.
    fn identify_one(&mut self, query: &[f32], opts: &SearchOptions) -> Result<Identification> {
        if opts.exact {
            return self.identify_exact(query, opts);
        }
        // One round trip per search: the statement is prepared once, the setting kept for the
        // session until another value is asked for.
        let ef = opts.ef_search.clamp(1, 1000);
        if self.ef_search != Some(ef) {
            let sql = format!("SET hnsw.ef_search = {ef}");
            self.client
                .batch_execute(&sql)
                .map_err(self.err("searching"))?;
            self.ef_search = Some(ef);
        }
        let stmt = match &self.nearest {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(&self.nearest_sql());
                let s = s.map_err(self.err("searching"))?;
                self.nearest.insert(s).clone()
            }
        };
        let (shown, config) = (self.target.shown.clone(), self.target.config.clone());
        let client = &mut self.client;
        nearest_people(query, opts, |q, limit, t| {
            client
                .query(&stmt, &[q, &limit, &t])
                .map_err(|e| explain(&shown, &config, e, "searching"))
        })
    }

    /// Exact search: index scans off for one transaction, so the server compares with every face.
    fn identify_exact(&mut self, query: &[f32], opts: &SearchOptions) -> Result<Identification> {
        let sql = self.nearest_sql();
        let (shown, config) = (self.target.shown.clone(), self.target.config.clone());
        let explain = |e| explain(&shown, &config, e, "searching");
        let mut tx = self.client.transaction().map_err(explain)?;
        tx.batch_execute("SET LOCAL enable_indexscan = off")
            .map_err(explain)?;
        let stmt = tx.prepare(&sql).map_err(explain)?;
        let found = nearest_people(query, opts, |q, limit, t| {
            tx.query(&stmt, &[q, &limit, &t]).map_err(explain)
        })?;
        tx.commit().map_err(explain)?;
        Ok(found)
    }
}

/// Runs `fetch(query, limit, threshold)` (faces nearest first) with larger limits until
/// `top_k` distinct people are among the faces, or there are no more faces.
fn nearest_people(
    query: &[f32],
    opts: &SearchOptions,
    mut fetch: impl FnMut(&Vector, i64, f64) -> Result<Vec<postgres::Row>>,
) -> Result<Identification> {
    let q = Vector::from(query.to_vec());
    let top_k = opts.top_k.max(1);
    let mut limit = (4 * top_k) as i64;
    loop {
        let rows = fetch(&q, limit, f64::from(opts.threshold))?;
        let mut seen: Vec<Candidate> = Vec::new();
        for r in &rows {
            let name: String = r.get(0);
            if !seen.iter().any(|c| c.name == name) {
                seen.push(Candidate {
                    name,
                    distance: r.get(1),
                });
            }
        }
        if seen.len() >= top_k || (rows.len() as i64) < limit {
            seen.truncate(top_k);
            return Ok(Identification::new(seen, opts.threshold));
        }
        limit *= 4;
    }
}

impl GalleryStore for PgGallery {
    fn model(&self) -> &ModelId {
        &self.model
    }

    fn describe(&self) -> String {
        self.target.shown.clone()
    }

    fn enroll(&mut self, faces: &[Face]) -> Result<()> {
        for f in faces {
            if f.embedding.len() != self.model.dim {
                return Err(db(
                    &self.target,
                    format!(
                        "embedding of size {} for a gallery of size {}",
                        f.embedding.len(),
                        self.model.dim
                    ),
                ));
            }
        }
        let faces = last_per_source(faces);
        let t = self.table();
        let stage = "candle_face_stage";
        let sql = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (person text, source text, embedding vector);\
             TRUNCATE {stage};"
        );
        self.client
            .batch_execute(&sql)
            .map_err(self.err("staging"))?;
        let upsert = format!(
            "INSERT INTO {t} (person, source, model, embedding) \
             SELECT person, source, $1, embedding FROM {stage} \
             ON CONFLICT (model, source) DO UPDATE \
             SET person = EXCLUDED.person, embedding = EXCLUDED.embedding"
        );
        // Staging and upsert in one transaction: the batch is stored whole or not at all.
        let (shown, config) = (self.target.shown.clone(), self.target.config.clone());
        let explain = |e| explain(&shown, &config, e, "enrolling");
        let types = [Type::TEXT, Type::TEXT, self.vector.clone()];
        let mut tx = self.client.transaction().map_err(explain)?;
        let sink = tx
            .copy_in(&format!(
                "COPY {stage} (person, source, embedding) FROM STDIN BINARY"
            ))
            .map_err(explain)?;
        let mut w = BinaryCopyInWriter::new(sink, &types);
        for f in &faces {
            let v = Vector::from(f.embedding.clone());
            w.write(&[&f.person, &f.source, &v]).map_err(explain)?;
        }
        w.finish().map_err(explain)?;
        tx.execute(&upsert, &[&self.model.fingerprint])
            .map_err(explain)?;
        tx.batch_execute(&format!("TRUNCATE {stage}"))
            .map_err(explain)?;
        tx.commit().map_err(explain)
    }

    fn commit(&mut self) -> Result<()> {
        self.build_index(None)
    }

    fn identify(&mut self, queries: &[f32], opts: &SearchOptions) -> Result<Vec<Identification>> {
        let dim = self.model.dim;
        check_queries(queries, dim, &self.target.shown)?;
        queries
            .chunks_exact(dim)
            .map(|q| self.identify_one(q, opts))
            .collect()
    }

    fn people(&mut self) -> Result<Vec<Person>> {
        let sql = format!(
            "SELECT person, count(*) FROM {} GROUP BY person ORDER BY person",
            self.table()
        );
        let rows = self.client.query(&sql, &[]).map_err(self.err("listing"))?;
        Ok(rows
            .iter()
            .map(|r| Person {
                name: r.get(0),
                faces: r.get::<_, i64>(1) as usize,
            })
            .collect())
    }

    fn len(&mut self) -> Result<usize> {
        let sql = format!("SELECT count(*) FROM {}", self.table());
        let n: i64 = self
            .client
            .query_one(&sql, &[])
            .map_err(self.err("counting"))?
            .get(0);
        Ok(n as usize)
    }

    fn remove_person(&mut self, name: &str) -> Result<usize> {
        let sql = format!("DELETE FROM {} WHERE person = $1", self.table());
        let n = self
            .client
            .execute(&sql, &[&name])
            .map_err(self.err("removing"))?;
        Ok(n as usize)
    }
}
