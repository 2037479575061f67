//! Verification pair lists: reading LFW `pairs.txt` (Huang, Ramesh, Berg, Learned-Miller,
//! "Labeled Faces in the Wild", UMass TR 07-49, 2007, section 3c of its README) and a simple CSV
//! format, writing CSV, and generating pairs from a labelled image folder.
//!
//! For the 10-fold protocol, folds are cut from a pair list by
//! [`stratified_folds`](crate::eval::metrics::stratified_folds): the same pairs and the different
//! pairs are each cut into ten consecutive chunks in file order and fold `i` is chunk `i` of each;
//! for LFW View 2 these are exactly its ten sets.

use crate::data::ImageFolder;
use crate::{Error, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Two face images and whether they show the same person.
///
/// Paths are as written in the pair file: relative to an images root (LFW: `name/name_0001.jpg`),
/// or absolute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pair {
    /// First image.
    pub a: PathBuf,
    /// Second image.
    pub b: PathBuf,
    /// True when both images show the same person.
    pub same: bool,
}

/// The LFW image path for image number `n` of `name`: `name/name_%04d.jpg`.
pub fn lfw_image_path(name: &str, n: u32) -> PathBuf {
    PathBuf::from(name).join(format!("{name}_{n:04}.jpg"))
}

/// Reads a pair list, detecting its format from the first line that is not empty or a `#`
/// comment:
///
/// - **CSV** (the line contains a comma): `img1,img2,same` per line, an optional header line
///   (recognised because its third field is not a label, or is `same` while the first field has
///   no file extension, as in `img1,img2,same`), labels `1`/`0`, `true`/`false`,
///   `same`/`different` (any case). Fields are not quoted, so paths cannot contain commas.
/// - **LFW `pairs.txt`** (otherwise): optional header `N` (View 1: N same pairs then N different
///   pairs) or `S N` (View 2: S sets of N same then N different pairs), then `name n1 n2` for a
///   same pair and `name1 n1 name2 n2` for a different pair, fields separated by tabs or spaces.
///   When a header is present the number of pairs must match it.
///
/// Errors name the file and the 1-based line number.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let Some(&(_, first)) = lines.first() else {
        return Err(Error::dataset(path, "pair file holds no pairs"));
    };
    let pairs = if first.contains(',') {
        parse_csv(path, &lines)?
    } else {
        parse_lfw(path, &lines)?
    };
    if pairs.is_empty() {
        return Err(Error::dataset(path, "pair file holds no pairs"));
    }
    Ok(pairs)
}

fn line_error(path: &Path, line: usize, reason: impl std::fmt::Display) -> Error {
    Error::dataset(path, format!("line {line}: {reason}"))
}

/// Parses a same/different label; `None` if it is not one.
fn parse_label(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "same" => Some(true),
        "0" | "false" | "different" => Some(false),
        _ => None,
    }
}

fn parse_csv(path: &Path, lines: &[(usize, &str)]) -> Result<Vec<Pair>> {
    let mut out = Vec::with_capacity(lines.len());
    for (k, &(no, line)) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 3 {
            return Err(line_error(
                path,
                no,
                format!(
                    "expected 3 comma-separated fields img1,img2,same; found {}",
                    fields.len()
                ),
            ));
        }
        // Header: a first line whose third field is not a label, or is the column name `same`
        // next to a first field without a file extension (`img1,img2,same`).
        let is_header = k == 0
            && (parse_label(fields[2]).is_none()
                || (fields[2].eq_ignore_ascii_case("same")
                    && Path::new(fields[0]).extension().is_none()));
        if is_header {
            continue;
        }
        let Some(same) = parse_label(fields[2]) else {
            return Err(line_error(
                path,
                no,
                format!(
                    "label {:?} is not one of 1/0/true/false/same/different",
                    fields[2]
                ),
            ));
        };
        if fields[0].is_empty() || fields[1].is_empty() {
            return Err(line_error(path, no, "empty image path"));
        }
        out.push(Pair {
            a: PathBuf::from(fields[0]),
            b: PathBuf::from(fields[1]),
            same,
        });
    }
    Ok(out)
}

/// LFW's `pairs.txt` format: an optional header (`pairs` or `sets pairs`), then `name n1 n2`
/// (same person) and `name1 n1 name2 n2` (different) lines; a header's layout is checked.
fn parse_lfw(path: &Path, lines: &[(usize, &str)]) -> Result<Vec<Pair>> {
    let (expected, body) = match lines.split_first() {
        Some((&(no, first), rest)) => match lfw_header(path, no, first)? {
            Some(h) => (Some(h), rest),
            None => (None, lines),
        },
        None => (None, lines),
    };
    let out = body
        .iter()
        .map(|&(no, line)| lfw_pair(path, no, line))
        .collect::<Result<Vec<_>>>()?;
    if let Some(h) = expected {
        check_lfw_layout(path, h, body, &out)?;
    }
    Ok(out)
}

/// `(sets, pairs of each kind per set)` if `line` is a header of one or two counts.
fn lfw_header(path: &Path, no: usize, line: &str) -> Result<Option<(usize, usize)>> {
    let is_count = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let tokens: Vec<&str> = line.split_whitespace().collect();
    if tokens.is_empty() || tokens.len() > 2 || !tokens.iter().all(|t| is_count(t)) {
        return Ok(None);
    }
    let nums: Vec<usize> = tokens
        .iter()
        .map(|t| t.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| line_error(path, no, format!("bad header count: {e}")))?;
    Ok(match nums[..] {
        [per] => Some((1, per)),
        [sets, per] => Some((sets, per)),
        _ => None,
    })
}

/// One pair line of LFW's format.
fn lfw_pair(path: &Path, no: usize, line: &str) -> Result<Pair> {
    let number = |s: &str| -> Result<u32> {
        match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(line_error(
                path,
                no,
                format!("image number {s:?} is not a positive integer"),
            )),
        }
    };
    let t: Vec<&str> = line.split_whitespace().collect();
    Ok(match t[..] {
        [name, a, b] => Pair {
            a: lfw_image_path(name, number(a)?),
            b: lfw_image_path(name, number(b)?),
            same: true,
        },
        [name1, a, name2, b] => Pair {
            a: lfw_image_path(name1, number(a)?),
            b: lfw_image_path(name2, number(b)?),
            same: false,
        },
        _ => {
            return Err(line_error(
                path,
                no,
                format!(
                "expected `name n1 n2` (same) or `name1 n1 name2 n2` (different), found {} fields",
                t.len()
            ),
            ))
        }
    })
}

/// Checks `pairs` against the header `(sets, per)`: `sets` sets, each `per` same pairs followed
/// by `per` different pairs.
fn check_lfw_layout(
    path: &Path,
    (sets, per): (usize, usize),
    body: &[(usize, &str)],
    pairs: &[Pair],
) -> Result<()> {
    let want = sets.checked_mul(per).and_then(|x| x.checked_mul(2));
    if want != Some(pairs.len()) {
        return Err(Error::dataset(
            path,
            format!(
                "header says {sets} set(s) of {per} same and {per} different pairs, but the file has {} pairs",
                pairs.len()
            ),
        ));
    }
    for (i, p) in pairs.iter().enumerate() {
        let want_same = (i % (2 * per)) < per;
        if p.same != want_same {
            return Err(line_error(
                path,
                body[i].0,
                format!(
                    "expected a {} pair here (each set is {per} same then {per} different pairs)",
                    if want_same { "same" } else { "different" }
                ),
            ));
        }
    }
    Ok(())
}

/// Writes pairs as CSV (`img1,img2,same` header, label `1` or `0`), atomically.
///
/// Fails if a path is not valid UTF-8 or contains a comma or a line break, which the format cannot
/// hold.
pub fn write_pairs_csv(path: &Path, pairs: &[Pair]) -> Result<()> {
    let mut text = String::from("img1,img2,same\n");
    for (i, p) in pairs.iter().enumerate() {
        let mut field = |img: &Path| -> Result<()> {
            let s = img.to_str().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "pair {i}: path {} is not valid UTF-8",
                    img.display()
                ))
            })?;
            if s.contains([',', '\n', '\r']) || s.trim() != s || s.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "pair {i}: path {s:?} cannot be written to CSV (empty, or has a comma, line break or surrounding spaces)"
                )));
            }
            text.push_str(s);
            text.push(',');
            Ok(())
        };
        field(&p.a)?;
        field(&p.b)?;
        text.push_str(if p.same { "1\n" } else { "0\n" });
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
}

/// Pairs made by [`generate_pairs`], with a note when fewer than asked could be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedPairs {
    /// The same pairs (first) followed by the different pairs.
    pub pairs: Vec<Pair>,
    /// Set when the folder has fewer distinct same or different pairs than were asked for: says
    /// how many were asked and how many exist (all of which are returned).
    pub note: Option<String>,
}

/// Number of unordered pairs of `k` items.
fn choose2(k: usize) -> u128 {
    let k = k as u128;
    k * k.saturating_sub(1) / 2
}

/// Per-person source of distinct same pairs `(i, j)`, `i < j` (image indices within the person).
struct SamePairSource {
    /// Small persons: every pair, shuffled; drawn from the end.
    all: Vec<(usize, usize)>,
    /// Large persons: pairs drawn so far (rejection sampling).
    seen: HashSet<(usize, usize)>,
    images: usize,
    left: u128,
}

/// Persons with at most this many possible same pairs have them all enumerated up front.
const ENUMERATE_LIMIT: u128 = 4096;

impl SamePairSource {
    fn new(images: usize, rng: &mut StdRng) -> Self {
        let total = choose2(images);
        let mut all = Vec::new();
        if total <= ENUMERATE_LIMIT {
            for i in 0..images {
                for j in i + 1..images {
                    all.push((i, j));
                }
            }
            all.shuffle(rng);
        }
        SamePairSource {
            all,
            seen: HashSet::new(),
            images,
            left: total,
        }
    }

    fn next(&mut self, rng: &mut StdRng) -> Option<(usize, usize)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        if choose2(self.images) <= ENUMERATE_LIMIT {
            return self.all.pop();
        }
        // More than 4096 pairs exist and far fewer than half are ever drawn in practice; even when
        // all are, each draw succeeds with probability left/total.
        loop {
            let i = rng.random_range(0..self.images);
            let j = rng.random_range(0..self.images);
            if i == j {
                continue;
            }
            let p = (i.min(j), i.max(j));
            if self.seen.insert(p) {
                return Some(p);
            }
        }
    }
}

/// Up to `n` distinct same-person pairs `(person, image i, image j)`, `i < j`, over people with
/// `sizes[person]` images, **identity-balanced**: in rounds, each person with two or more images
/// (in a shuffled order) contributes one new pair, so a person with hundreds of images does not
/// dominate. Fewer than `n` come back only when fewer exist.
pub(crate) fn balanced_same_pairs(
    sizes: &[usize],
    n: usize,
    rng: &mut StdRng,
) -> Vec<(usize, usize, usize)> {
    let eligible: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i] >= 2).collect();
    let mut sources: Vec<SamePairSource> = eligible
        .iter()
        .map(|&i| SamePairSource::new(sizes[i], rng))
        .collect();
    let mut pairs = Vec::with_capacity(n.min(1 << 20));
    let mut order: Vec<usize> = (0..eligible.len()).collect();
    while pairs.len() < n {
        order.shuffle(rng);
        let before = pairs.len();
        for &k in &order {
            if pairs.len() == n {
                break;
            }
            if let Some((i, j)) = sources[k].next(rng) {
                pairs.push((eligible[k], i, j));
            }
        }
        if pairs.len() == before {
            break; // every pair has been drawn
        }
    }
    pairs
}

/// Number of unordered pairs of images of two different people, over people with
/// `sizes[person]` images.
fn different_pair_count(sizes: &[usize]) -> u128 {
    let n_images: u128 = sizes.iter().map(|&k| k as u128).sum();
    let same_person: u128 = sizes.iter().map(|&k| (k as u128) * (k as u128)).sum();
    (n_images * n_images - same_person) / 2
}

/// Up to `n` distinct different-person pairs `(person p, image i, person q, image j)`, `p < q`,
/// over people with `sizes[person]` images: two distinct people with images uniformly at random,
/// one image of each uniformly at random, repeated draws rejected; when more than half of all
/// possible different pairs are asked for, all of them are enumerated and a random subset is
/// kept instead. Fewer than `n` come back only when fewer exist.
pub(crate) fn different_pairs(
    sizes: &[usize],
    n: usize,
    rng: &mut StdRng,
) -> Vec<(usize, usize, usize, usize)> {
    let total = different_pair_count(sizes);
    let n = n.min(usize::try_from(total).unwrap_or(usize::MAX));
    let with_images: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i] > 0).collect();
    let mut chosen: Vec<(usize, usize, usize, usize)> = Vec::with_capacity(n);
    if (n as u128) * 2 > total {
        for (x, &p) in with_images.iter().enumerate() {
            for &q in &with_images[x + 1..] {
                for i in 0..sizes[p] {
                    for j in 0..sizes[q] {
                        chosen.push((p, i, q, j));
                    }
                }
            }
        }
        chosen.shuffle(rng);
        chosen.truncate(n);
        return chosen;
    }
    let mut seen = HashSet::with_capacity(n);
    while chosen.len() < n {
        let x = rng.random_range(0..with_images.len());
        let y = rng.random_range(0..with_images.len());
        if x == y {
            continue;
        }
        let (p, q) = (with_images[x.min(y)], with_images[x.max(y)]);
        let i = rng.random_range(0..sizes[p]);
        let j = rng.random_range(0..sizes[q]);
        if seen.insert((p, i, q, j)) {
            chosen.push((p, i, q, j));
        }
    }
    chosen
}

/// Generates `same` same-person and `different` different-person pairs from `folder`,
/// deterministically from `seed` (`StdRng::seed_from_u64`).
///
/// Paths are relative to `folder.root` (images outside it are kept as they are). No pair repeats
/// (in either order) and no image is paired with itself.
///
/// - Same pairs are **identity-balanced**: in rounds, each person with two or more images (in a
///   shuffled order) contributes one new pair of two of its images, until enough pairs are drawn,
///   so a person with hundreds of images does not dominate.
/// - Different pairs: two distinct persons uniformly at random, one image of each uniformly at
///   random, repeated draws rejected; when more than half of all possible different pairs are
///   asked for, all of them are enumerated and a random subset is kept instead.
///
/// When the folder holds fewer distinct pairs of a kind than asked, all of them are returned and
/// [`GeneratedPairs::note`] says so. The result lists the same pairs first, then the different
/// pairs.
pub fn generate_pairs(
    folder: &ImageFolder,
    same: usize,
    different: usize,
    seed: u64,
) -> Result<GeneratedPairs> {
    let mut rng = StdRng::seed_from_u64(seed);
    let rel = |p: &Path| -> PathBuf { p.strip_prefix(&folder.root).unwrap_or(p).to_path_buf() };
    let people = &folder.people;
    let mut notes = Vec::new();

    // Same pairs.
    let total_same: u128 = people.iter().map(|p| choose2(p.images.len())).sum();
    let n_same = if (same as u128) > total_same {
        notes.push(format!(
            "asked for {same} same-person pairs but the folder has only {total_same}; using all of them"
        ));
        total_same as usize
    } else {
        same
    };
    let sizes: Vec<usize> = people.iter().map(|p| p.images.len()).collect();
    let mut pairs = Vec::with_capacity(n_same + different.min(1 << 20));
    for (p, i, j) in balanced_same_pairs(&sizes, n_same, &mut rng) {
        let person = &people[p];
        pairs.push(Pair {
            a: rel(&person.images[i]),
            b: rel(&person.images[j]),
            same: true,
        });
    }

    // Different pairs.
    let total_diff = different_pair_count(&sizes);
    let n_diff = if (different as u128) > total_diff {
        notes.push(format!(
            "asked for {different} different-person pairs but the folder has only {total_diff}; using all of them"
        ));
        total_diff as usize
    } else {
        different
    };
    let chosen = different_pairs(&sizes, n_diff, &mut rng);
    pairs.extend(chosen.into_iter().map(|(p, i, q, j)| Pair {
        a: rel(&people[p].images[i]),
        b: rel(&people[q].images[j]),
        same: false,
    }));

    Ok(GeneratedPairs {
        pairs,
        note: if notes.is_empty() {
            None
        } else {
            Some(notes.join("; "))
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Person;

    /// The shared data folder: `$CANDLE_FACE_SHARED` or `../shared` beside the crate; `None`
    /// (after printing why) when it is missing.
    fn shared_dir() -> Option<PathBuf> {
        let dir = std::env::var_os("CANDLE_FACE_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
        if dir.join("data").is_dir() {
            Some(dir)
        } else {
            eprintln!("skipping: shared/ not found (set CANDLE_FACE_SHARED)");
            None
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn lfw_dev_train_pairs_read_and_images_exist() {
        let Some(shared) = shared_dir() else { return };
        let lfw = shared.join("data/lfw");
        let pairs = read_pairs(&lfw.join("pairsDevTrain.txt")).unwrap();
        assert_eq!(pairs.len(), 2200);
        assert!(pairs[..1100].iter().all(|p| p.same));
        assert!(pairs[1100..].iter().all(|p| !p.same));
        assert_eq!(
            pairs[0],
            Pair {
                a: "Aaron_Peirsol/Aaron_Peirsol_0001.jpg".into(),
                b: "Aaron_Peirsol/Aaron_Peirsol_0002.jpg".into(),
                same: true
            }
        );
        assert_eq!(
            pairs[1100].b,
            PathBuf::from("Marsha_Thomason/Marsha_Thomason_0001.jpg")
        );
        for p in &pairs {
            for img in [&p.a, &p.b] {
                assert!(
                    lfw.join("train").join(img).is_file(),
                    "missing {}",
                    img.display()
                );
            }
        }
        // The two images of a same pair are one person, of a different pair two people.
        for p in &pairs {
            assert_eq!(p.a.parent() == p.b.parent(), p.same, "{p:?}");
        }
    }

    #[test]
    fn lfw_view2_header_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ok = "2\t1\nA\t1\t2\nB\t3\tC\t12\nD 1 4\nE 2   F 1\n";
        let pairs = read_pairs(&write(dir.path(), "p.txt", ok)).unwrap();
        assert_eq!(pairs.len(), 4);
        assert_eq!(
            pairs.iter().map(|p| p.same).collect::<Vec<_>>(),
            [true, false, true, false]
        );
        assert_eq!(pairs[1].b, PathBuf::from("C/C_0012.jpg"));
        // No header at all is fine too.
        assert_eq!(
            read_pairs(&write(dir.path(), "n.txt", "A 1 2\nB 1 C 1\n"))
                .unwrap()
                .len(),
            2
        );

        let err = read_pairs(&write(dir.path(), "count.txt", "2 2\nA 1 2\nB 1 C 1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("count.txt") && err.contains("header says 2 set(s)"),
            "{err}"
        );
        let err = read_pairs(&write(dir.path(), "order.txt", "1\nB 1 C 1\nA 1 2\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("order.txt") && err.contains("line 2"), "{err}");
        let err = read_pairs(&write(dir.path(), "bad.txt", "1100\nA 1 2\n\nA x 2\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.txt: line 4") && err.contains("\"x\""),
            "{err}"
        );
        let err = read_pairs(&write(dir.path(), "five.txt", "A 1 2 3 4\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("5 fields"), "{err}");
        let err = read_pairs(&write(dir.path(), "zero.txt", "A 0 2\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("positive"), "{err}");
        let err = read_pairs(&write(dir.path(), "empty.txt", "\n# nothing\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("empty.txt") && err.contains("no pairs"),
            "{err}"
        );
        let err = read_pairs(&dir.path().join("missing.txt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.txt"), "{err}");
    }

    #[test]
    fn csv_read_with_and_without_header() {
        let dir = tempfile::tempdir().unwrap();
        let text = "img1,img2,same\na/1.jpg, b/2.jpg ,1\nc.jpg,d.jpg,False\n/abs/e.png,f.png,SAME\ng,h,different\ni,j,0\nk,l,true\n";
        let p = read_pairs(&write(dir.path(), "p.csv", text)).unwrap();
        assert_eq!(
            p.iter().map(|p| p.same).collect::<Vec<_>>(),
            [true, false, true, false, false, true]
        );
        assert_eq!(p[0].b, PathBuf::from("b/2.jpg"));
        assert_eq!(p[2].a, PathBuf::from("/abs/e.png"));
        let p2 = read_pairs(&write(
            dir.path(),
            "q.csv",
            &text["img1,img2,same\n".len()..],
        ))
        .unwrap();
        assert_eq!(p, p2);

        let err = read_pairs(&write(dir.path(), "r.csv", "a,b,1\nc,d,maybe\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("r.csv: line 2") && err.contains("maybe"),
            "{err}"
        );
        let err = read_pairs(&write(dir.path(), "s.csv", "a,b,1\nc,d\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.csv: line 2") && err.contains("found 2"),
            "{err}"
        );
    }

    #[test]
    fn csv_round_trip_and_unwritable_paths() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = vec![
            Pair {
                a: "x/1.jpg".into(),
                b: "y/2.jpg".into(),
                same: false,
            },
            Pair {
                a: "/abs/x 3.jpg".into(),
                b: "x/4.jpg".into(),
                same: true,
            },
        ];
        let path = dir.path().join("sub/pairs.csv");
        write_pairs_csv(&path, &pairs).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "img1,img2,same\nx/1.jpg,y/2.jpg,0\n/abs/x 3.jpg,x/4.jpg,1\n"
        );
        assert_eq!(read_pairs(&path).unwrap(), pairs);
        let bad = [Pair {
            a: "a,b.jpg".into(),
            b: "c.jpg".into(),
            same: true,
        }];
        assert!(write_pairs_csv(&dir.path().join("bad.csv"), &bad).is_err());
        assert!(!dir.path().join("bad.csv").exists());
    }

    fn folder(sizes: &[usize]) -> ImageFolder {
        let root = PathBuf::from("/data/faces");
        ImageFolder {
            people: sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| Person {
                    name: format!("p{i}"),
                    images: (0..n)
                        .map(|j| root.join(format!("p{i}/{j:03}.jpg")))
                        .collect(),
                })
                .collect(),
            root,
            ..Default::default()
        }
    }

    fn check_pairs(g: &GeneratedPairs) {
        let mut seen = HashSet::new();
        for p in &g.pairs {
            assert!(p.a.is_relative() && p.b.is_relative());
            assert_ne!(p.a, p.b, "image paired with itself");
            assert_eq!(p.a.parent() == p.b.parent(), p.same, "{p:?}");
            let key = if p.a < p.b {
                (&p.a, &p.b)
            } else {
                (&p.b, &p.a)
            };
            assert!(seen.insert(key), "duplicate pair {p:?}");
        }
    }

    #[test]
    fn generated_pairs_are_distinct_deterministic_and_balanced() {
        let f = folder(&[60, 3, 3, 3, 3, 3, 1, 2]);
        let g = generate_pairs(&f, 20, 50, 7).unwrap();
        assert_eq!(g.note, None);
        assert_eq!(g.pairs.iter().filter(|p| p.same).count(), 20);
        assert_eq!(g.pairs.iter().filter(|p| !p.same).count(), 50);
        assert!(g.pairs[..20].iter().all(|p| p.same));
        check_pairs(&g);
        // Identity-balanced: 6 people can give same pairs (p6 has one image); p7 has only one
        // pair and p1..p5 three each, so p0 contributes the rest: 20 − 1 − 15 = 4.
        let from_p0 = g
            .pairs
            .iter()
            .filter(|p| p.same && p.a.starts_with("p0"))
            .count();
        assert_eq!(from_p0, 4);
        assert_eq!(generate_pairs(&f, 20, 50, 7).unwrap(), g);
        assert_ne!(generate_pairs(&f, 20, 50, 8).unwrap().pairs, g.pairs);
    }

    #[test]
    fn generated_pairs_all_when_too_few_exist() {
        // Same pairs: C(3,2) + C(2,2) = 4; different: (6² − 9 − 4 − 1)/2 = 11.
        let f = folder(&[3, 2, 1]);
        let g = generate_pairs(&f, 10, 100, 1).unwrap();
        assert_eq!(g.pairs.iter().filter(|p| p.same).count(), 4);
        assert_eq!(g.pairs.iter().filter(|p| !p.same).count(), 11);
        check_pairs(&g);
        let note = g.note.unwrap();
        assert!(
            note.contains("only 4") && note.contains("only 11"),
            "{note}"
        );
        // Exactly as many as exist, and more than half of them (the enumerating path): no note.
        let g = generate_pairs(&f, 4, 9, 1).unwrap();
        assert_eq!(g.note, None);
        assert_eq!(g.pairs.len(), 13);
        check_pairs(&g);
        let g = generate_pairs(&folder(&[]), 3, 3, 1).unwrap();
        assert!(g.pairs.is_empty() && g.note.is_some());
    }

    #[test]
    fn generated_pairs_from_a_large_person() {
        // 100 images = 4950 same pairs, above the enumeration limit: rejection sampling.
        let f = folder(&[100, 2]);
        let g = generate_pairs(&f, 300, 150, 3).unwrap();
        check_pairs(&g);
        assert_eq!(g.pairs.len(), 450);
    }
}
