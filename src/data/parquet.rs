//! Image datasets in Parquet (feature `parquet`, on by default): the layout of Hugging Face Hub
//! image datasets, or any table with an image-bytes column and an identity column.
//!
//! [`extract_parquet`] streams the rows of one or more Parquet files (row group by row group,
//! never the whole file in memory) and writes each image as `out/<identity>/<file>-<row>.<ext>`,
//! the [`ImageFolder`](super::ImageFolder) layout, so training, splits, pairs and enrolment
//! work on it unchanged and bad images are reported and skipped the usual way. The folder is
//! written under a temporary name and renamed when complete, with a manifest of what it was
//! made from; a later call with the same files and columns reuses it.
//!
//! Columns:
//! - **image**: the `datasets` library's `Image` feature (a struct `{bytes, path}`; `bytes` is
//!   used) or a plain binary column. Default: a column named `image` or `img`, else the first
//!   column whose first row holds bytes.
//! - **label**: a string, or an integer. Integers are mapped to names when the file carries the
//!   `datasets` library's metadata (`huggingface` key, a `ClassLabel` feature with `names`);
//!   otherwise the number is the identity. Default: a column named `label`, `labels`,
//!   `identity`, `person`, `name` or `class`.
//!
//! Rows without image bytes (only a `path`, or null), without a label, or whose bytes are not
//! a recognised image format are skipped, each reported in [`Extracted::skipped`].

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

use crate::{Error, Result};

/// Which columns hold the image bytes and the identity label (`None`: detect, see the module
/// documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParquetColumns {
    /// The image column.
    pub image: Option<String>,
    /// The identity column.
    pub label: Option<String>,
}

/// The result of [`extract_parquet`].
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The image folder (`<person>/<image>`).
    pub dir: PathBuf,
    /// Rows read (all files).
    pub rows: usize,
    /// Images written.
    pub images: usize,
    /// Distinct identities.
    pub people: usize,
    /// One line per skipped row: file, row and why.
    pub skipped: Vec<String>,
    /// Whether an earlier, identical extraction was reused (nothing was read).
    pub reused: bool,
}

/// Name of the manifest written inside an extracted folder.
pub const MANIFEST: &str = ".candle-face-parquet.json";

const IMAGE_NAMES: &[&str] = &["image", "img"];
const LABEL_NAMES: &[&str] = &["label", "labels", "identity", "person", "name", "class"];

/// Extracts the images of `files` into the image folder `out` (see the module documentation).
///
/// # Errors
/// [`Error::Dataset`] naming the file when it is not readable Parquet, a requested column is
/// missing (the message lists the columns there are), or no row gave an image; [`Error::Io`]
/// when `out` cannot be written.
pub fn extract_parquet(files: &[PathBuf], cols: &ParquetColumns, out: &Path) -> Result<Extracted> {
    if files.is_empty() {
        return Err(Error::InvalidArgument("no Parquet files to read".into()));
    }
    let manifest = manifest_for(files, cols)?;
    if let Some(done) = reuse(out, &manifest) {
        return Ok(done);
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".extracting-")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;

    let mut state = Writer {
        root: tmp.path().to_path_buf(),
        dirs: HashMap::new(),
        used: HashMap::new(),
        rows: 0,
        images: 0,
        skipped: Vec::new(),
    };
    for (i, file) in files.iter().enumerate() {
        extract_one(file, i, files.len(), cols, &mut state)?;
    }
    if state.images == 0 {
        return Err(Error::dataset(
            &files[0],
            format!(
                "no images extracted from {} row(s){}",
                state.rows,
                state
                    .skipped
                    .first()
                    .map(|s| format!(" (first skip: {s})"))
                    .unwrap_or_default()
            ),
        ));
    }
    let mut m = manifest;
    m["rows"] = state.rows.into();
    m["images"] = state.images.into();
    m["people"] = state.dirs.len().into();
    m["skipped"] = state.skipped.clone().into();
    let text = serde_json::to_string_pretty(&m).expect("json");
    std::fs::write(tmp.path().join(MANIFEST), text)
        .map_err(|e| Error::io(tmp.path().join(MANIFEST), e))?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, out).map_err(|e| Error::io(out, e))?;
    Ok(Extracted {
        dir: out.to_path_buf(),
        rows: state.rows,
        images: state.images,
        people: state.dirs.len(),
        skipped: state.skipped,
        reused: false,
    })
}

/// What identifies an extraction: the files (name, size, modification time) and the columns.
fn manifest_for(files: &[PathBuf], cols: &ParquetColumns) -> Result<serde_json::Value> {
    let mut list = Vec::new();
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos().to_string());
        list.push(serde_json::json!({
            "file": f.display().to_string(), "bytes": meta.len(), "modified": mtime,
        }));
    }
    Ok(serde_json::json!({
        "format": 1, "files": list, "image_column": cols.image, "label_column": cols.label,
    }))
}

fn reuse(out: &Path, manifest: &serde_json::Value) -> Option<Extracted> {
    let text = std::fs::read_to_string(out.join(MANIFEST)).ok()?;
    let m: serde_json::Value = serde_json::from_str(&text).ok()?;
    let same = ["format", "files", "image_column", "label_column"]
        .iter()
        .all(|k| m.get(k) == manifest.get(k));
    if !same {
        return None;
    }
    let n = |k: &str| m.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    Some(Extracted {
        dir: out.to_path_buf(),
        rows: n("rows"),
        images: n("images"),
        people: n("people"),
        skipped: m
            .get("skipped")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        reused: true,
    })
}

struct Writer {
    root: PathBuf,
    /// label → folder name
    dirs: HashMap<String, String>,
    /// folder name → label (to keep two labels that sanitise alike apart)
    used: HashMap<String, String>,
    rows: usize,
    images: usize,
    skipped: Vec<String>,
}

impl Writer {
    fn folder_for(&mut self, label: &str) -> Result<PathBuf> {
        if let Some(d) = self.dirs.get(label) {
            return Ok(self.root.join(d));
        }
        let base = sanitize(label);
        let mut name = base.clone();
        let mut n = 2;
        while self.used.contains_key(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        let dir = self.root.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        self.used.insert(name.clone(), label.to_string());
        self.dirs.insert(label.to_string(), name);
        Ok(dir)
    }
}

/// A label as a folder name: path separators, control characters and a leading dot replaced.
fn sanitize(label: &str) -> String {
    let mut s: String = label
        .trim()
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() || c == ':' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    // Keep folder names within common file-system limits (255 bytes).
    while s.len() > 200 {
        s.pop();
    }
    s
}

fn open(file: &Path) -> Result<SerializedFileReader<File>> {
    let f = File::open(file).map_err(|e| Error::io(file, e))?;
    SerializedFileReader::new(f)
        .map_err(|e| Error::dataset(file, format!("not a readable Parquet file: {e}")))
}

/// `ClassLabel` names of `column` from the `datasets` library's file metadata, when present.
fn class_names(reader: &SerializedFileReader<File>, column: &str) -> Option<Vec<String>> {
    let kv = reader.metadata().file_metadata().key_value_metadata()?;
    let hf = kv.iter().find(|k| k.key == "huggingface")?.value.as_ref()?;
    let v: serde_json::Value = serde_json::from_str(hf).ok()?;
    let feature = &v["info"]["features"][column];
    let names = feature["names"].as_array()?;
    names.iter().map(|n| n.as_str().map(String::from)).collect()
}

fn column_names(reader: &SerializedFileReader<File>) -> Vec<String> {
    reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect()
}

fn pick(
    file: &Path,
    names: &[String],
    wanted: Option<&str>,
    defaults: &[&str],
    what: &str,
    flag: &str,
) -> Result<Option<String>> {
    match wanted {
        Some(w) if names.iter().any(|n| n == w) => Ok(Some(w.to_string())),
        Some(w) => Err(Error::dataset(
            file,
            format!(
                "no {what} column {w:?}; the columns are {} (choose one with {flag})",
                names.join(", ")
            ),
        )),
        None => Ok(defaults
            .iter()
            .find_map(|d| names.iter().find(|n| n.eq_ignore_ascii_case(d)).cloned())),
    }
}

fn image_bytes(field: &Field) -> std::result::Result<&[u8], &'static str> {
    match field {
        Field::Bytes(b) => Ok(b.data()),
        Field::Group(row) => {
            for (name, f) in row.get_column_iter() {
                if name == "bytes" {
                    return match f {
                        Field::Bytes(b) => Ok(b.data()),
                        Field::Null => Err("the image has no embedded bytes (only a path)"),
                        _ => Err("the image struct's `bytes` is not binary"),
                    };
                }
            }
            Err("the image struct has no `bytes` field")
        }
        Field::Null => Err("no image (null)"),
        _ => Err("the image column does not hold bytes"),
    }
}

fn label_text(field: &Field, names: Option<&[String]>) -> std::result::Result<String, String> {
    let int = match field {
        Field::Str(s) => return Ok(s.clone()),
        Field::Bytes(b) => {
            return std::str::from_utf8(b.data())
                .map(String::from)
                .map_err(|_| "the label is binary, not text".to_string())
        }
        Field::Byte(v) => i64::from(*v),
        Field::Short(v) => i64::from(*v),
        Field::Int(v) => i64::from(*v),
        Field::Long(v) => *v,
        Field::UByte(v) => i64::from(*v),
        Field::UShort(v) => i64::from(*v),
        Field::UInt(v) => i64::from(*v),
        Field::ULong(v) => *v as i64,
        Field::Null => return Err("no label (null)".into()),
        other => return Err(format!("unsupported label value {other}")),
    };
    match names {
        Some(n) => usize::try_from(int)
            .ok()
            .and_then(|i| n.get(i).cloned())
            .ok_or_else(|| format!("label {int} is outside the {} class names", n.len())),
        None => Ok(int.to_string()),
    }
}

fn extension(bytes: &[u8]) -> Option<&'static str> {
    use image::ImageFormat as F;
    Some(match image::guess_format(bytes).ok()? {
        F::Jpeg => "jpg",
        F::Png => "png",
        F::Gif => "gif",
        F::Bmp => "bmp",
        F::WebP => "webp",
        F::Pnm => "ppm",
        _ => return None,
    })
}

/// Extracts the rows of one Parquet file (`index` of `count`) into `w`'s class folders; rows
/// without a readable image or label are listed in `w.skipped`.
fn extract_one(
    file: &Path,
    index: usize,
    count: usize,
    cols: &ParquetColumns,
    w: &mut Writer,
) -> Result<()> {
    let reader = open(file)?;
    let names = column_names(&reader);
    let wanted = cols.image.as_deref();
    let mut image_col = pick(file, &names, wanted, IMAGE_NAMES, "image", "--image-column")?;
    let label_col = label_column(file, &names, cols)?;
    let classes = class_names(&reader, &label_col);
    let stem = if count == 1 {
        "row".to_string()
    } else {
        format!("f{index:03}")
    };
    for (r, row) in reader.into_iter().enumerate() {
        let row: Row =
            row.map_err(|e| Error::dataset(file, format!("cannot read row {r}: {e}")))?;
        w.rows += 1;
        if image_col.is_none() {
            // No column named like an image: the first one holding bytes.
            image_col = row
                .get_column_iter()
                .find(|(_, f)| image_bytes(f).is_ok())
                .map(|(n, _)| n.clone());
        }
        let Some(ic) = image_col.as_deref() else {
            return Err(Error::dataset(
                file,
                format!(
                    "no image column found (no column named {} and none holding bytes); the \
                     columns are {} (choose one with --image-column)",
                    IMAGE_NAMES.join(" or "),
                    names.join(", ")
                ),
            ));
        };
        match image_and_label(&row, ic, &label_col, classes.as_deref()) {
            Ok((bytes, label, ext)) => {
                let dir = w.folder_for(&label)?;
                let path = dir.join(format!("{stem}-{r:07}.{ext}"));
                std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
                w.images += 1;
            }
            Err(why) => w.skipped.push(format!("{} row {r}: {why}", file.display())),
        }
    }
    Ok(())
}

/// The label column of `file`: the one asked for, else the first named like a label.
fn label_column(file: &Path, names: &[String], cols: &ParquetColumns) -> Result<String> {
    let wanted = cols.label.as_deref();
    pick(file, names, wanted, LABEL_NAMES, "label", "--label-column")?.ok_or_else(|| {
        Error::dataset(
            file,
            format!(
                "no label column found (looked for {}); the columns are {} (choose one with \
                 --label-column)",
                LABEL_NAMES.join(", "),
                names.join(", ")
            ),
        )
    })
}

/// One row's image bytes, label and image file extension, or why the row is skipped.
fn image_and_label<'r>(
    row: &'r Row,
    image_col: &str,
    label_col: &str,
    classes: Option<&[String]>,
) -> std::result::Result<(&'r [u8], String, &'static str), String> {
    let field = |col: &str| {
        row.get_column_iter()
            .filter(|(name, _)| name.as_str() == col)
            .last()
            .map(|(_, f)| f)
    };
    let bytes = image_bytes(field(image_col).ok_or("no image field")?)?;
    let label = label_text(field(label_col).ok_or("no label field")?, classes)?;
    let ext = extension(bytes).ok_or("the bytes are not a recognised image format")?;
    Ok((bytes, label, ext))
}

/// Where extracted datasets go: `$CANDLE_FACE_CACHE`, else `$XDG_CACHE_HOME/candle-face`,
/// else `~/.cache/candle-face`, else `.candle-face-cache` in the working folder.
pub fn cache_root() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("CANDLE_FACE_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("candle-face")))
        .or_else(|| env("HOME").map(|p| p.join(".cache").join("candle-face")))
        .unwrap_or_else(|| PathBuf::from(".candle-face-cache"))
}

/// Extracts a local Parquet file into `<cache_root>/parquet/<name>-<hash of its path>`
/// (reused while the file is unchanged).
///
/// # Errors
/// As [`extract_parquet`].
pub fn extract_local_parquet(file: &Path, cols: &ParquetColumns) -> Result<Extracted> {
    let abs = std::fs::canonicalize(file).map_err(|e| Error::io(file, e))?;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in abs.to_string_lossy().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    let name = sanitize(
        &abs.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let out = cache_root()
        .join("parquet")
        .join(format!("{name}-{h:016x}"));
    extract_parquet(&[abs], cols, &out)
}

/// Downloads a Hub dataset's Parquet files (`split`, default `train` when the dataset has such
/// files, else all of them) and extracts them into
/// `<cache_root>/datasets/<owner>--<name>/<commit>/<split>` (reused for the same commit).
///
/// # Errors
/// As [`crate::hub::fetch_dataset_parquet`] and [`extract_parquet`].
#[cfg(feature = "hub")]
pub fn extract_hub_dataset(
    r: &crate::hub::HubRef,
    split: Option<&str>,
    cols: &ParquetColumns,
    opts: &crate::hub::HubOptions,
) -> Result<Extracted> {
    use crate::hub::fetch_dataset_parquet;
    let (files, split_name) = match split {
        Some(s) => (fetch_dataset_parquet(r, Some(s), opts)?, s.to_string()),
        None => match fetch_dataset_parquet(r, Some("train"), opts) {
            Ok(f) => (f, "train".to_string()),
            Err(_) => (fetch_dataset_parquet(r, None, opts)?, "all".to_string()),
        },
    };
    let commit = files.commit.clone().unwrap_or_else(|| r.revision.clone());
    let out = cache_root()
        .join("datasets")
        .join(r.repo.replace('/', "--"))
        .join(sanitize(&commit))
        .join(sanitize(&split_name));
    extract_parquet(&files.files, cols, &out)
}

/// Resolves a `--data` argument to an image folder: a folder as it is; a `.parquet` file
/// ([`extract_local_parquet`]); `hf:owner/name[@revision]`, a Hub dataset
/// ([`extract_hub_dataset`], with `hub`). Returns the folder and, for Parquet sources, what the
/// extraction did.
///
/// # Errors
/// As the functions above; [`Error::InvalidArgument`] for an `hf:` source in a build without
/// the `hub` feature.
pub fn resolve_data(
    spec: &str,
    split: Option<&str>,
    cols: &ParquetColumns,
    offline: bool,
) -> Result<(PathBuf, Option<Extracted>)> {
    if spec.starts_with("hf:") {
        #[cfg(feature = "hub")]
        {
            let r: crate::hub::HubRef = spec.parse()?;
            let mut opts = crate::hub::HubOptions::from_env();
            opts.offline |= offline;
            let e = extract_hub_dataset(&r, split, cols, &opts)?;
            return Ok((e.dir.clone(), Some(e)));
        }
        #[cfg(not(feature = "hub"))]
        {
            let _ = (split, offline);
            return Err(Error::InvalidArgument(format!(
                "{spec}: this build has no Hub support (rebuild with the `hub` feature)"
            )));
        }
    }
    let path = Path::new(spec);
    let is_parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    if is_parquet && path.is_file() {
        let e = extract_local_parquet(path, cols)?;
        return Ok((e.dir.clone(), Some(e)));
    }
    Ok((path.to_path_buf(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;

    /// A plain table: `photo` (binary), `who` (string), `extra` (string).
    fn plain_parquet(path: &Path, rows: &[(Vec<u8>, &str)]) {
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type(
                "message m { required binary photo; required binary who (STRING);
                             required binary extra (STRING); }",
            )
            .unwrap(),
        );
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .build(),
        );
        let f = File::create(path).unwrap();
        let mut w = SerializedFileWriter::new(f, schema, props).unwrap();
        let mut rg = w.next_row_group().unwrap();
        let mut i = 0;
        while let Some(mut c) = rg.next_column().unwrap() {
            let vals: Vec<ByteArray> = rows
                .iter()
                .map(|(b, who)| match i {
                    0 => ByteArray::from(b.clone()),
                    1 => ByteArray::from(*who),
                    _ => ByteArray::from("x"),
                })
                .collect();
            c.typed::<ByteArrayType>()
                .write_batch(&vals, None, None)
                .unwrap();
            c.close().unwrap();
            i += 1;
        }
        rg.close().unwrap();
        w.close().unwrap();
    }

    fn png(v: u8) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(6, 5, image::Rgb([v, v / 2, 255 - v]));
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        buf.into_inner()
    }

    #[test]
    fn plain_table_with_named_columns_extracts_reuses_and_explains_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("faces.parquet");
        let rows = vec![
            (png(10), "ann/b"),
            (png(20), "bob"),
            (b"\x00\x01 no image here".to_vec(), "bob"),
            (png(30), "ann/b"),
            (png(40), "ann_b"),
        ];
        plain_parquet(&file, &rows);
        let out = tmp.path().join("out");
        // The default label names do not include `who`: the error lists the columns.
        let e = extract_parquet(
            std::slice::from_ref(&file),
            &ParquetColumns::default(),
            &out,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("faces.parquet") && e.contains("photo, who, extra"),
            "{e}"
        );
        assert!(e.contains("--label-column"), "{e}");
        let e = extract_parquet(
            std::slice::from_ref(&file),
            &ParquetColumns {
                image: Some("picture".into()),
                label: Some("who".into()),
            },
            &out,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no image column \"picture\""), "{e}");
        assert!(!out.exists());

        let cols = ParquetColumns {
            image: None, // found as the first column holding bytes
            label: Some("who".into()),
        };
        let x = extract_parquet(std::slice::from_ref(&file), &cols, &out).unwrap();
        assert!(!x.reused);
        assert_eq!((x.rows, x.images, x.people), (5, 4, 3));
        assert_eq!(x.skipped.len(), 1, "{:?}", x.skipped);
        assert!(x.skipped[0].contains("row 2: the bytes are not a recognised image format"));
        // `ann/b` and `ann_b` sanitise alike and are kept apart.
        let mut dirs: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        assert_eq!(dirs, ["ann_b", "ann_b-2", "bob"]);
        assert_eq!(std::fs::read_dir(out.join("ann_b")).unwrap().count(), 2);
        assert_eq!(
            std::fs::read(out.join("bob/row-0000001.png")).unwrap(),
            png(20)
        );
        let y = extract_parquet(std::slice::from_ref(&file), &cols, &out).unwrap();
        assert!(y.reused);
        assert_eq!((y.rows, y.images, y.people), (5, 4, 3));
        // Not Parquet at all.
        let bad = tmp.path().join("bad.parquet");
        std::fs::write(&bad, b"PAR1 nope").unwrap();
        let e = extract_parquet(&[bad], &cols, &tmp.path().join("o2"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.parquet") && e.contains("not a readable Parquet file"),
            "{e}"
        );
    }

    #[test]
    fn labels_become_safe_folder_names() {
        assert_eq!(sanitize("Ann Smith"), "Ann Smith");
        assert_eq!(sanitize("a/b\\c:d"), "a_b_c_d");
        assert_eq!(sanitize(".."), "_..");
        assert_eq!(sanitize(""), "_");
        assert_eq!(sanitize(&"x".repeat(300)).len(), 200);
    }
}
