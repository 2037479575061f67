//! A bad-input corpus, generated at test time, run through the CLI: every case gives the
//! behaviour a user expects, errors name the file, and nothing panics.

mod common;

use assert_cmd::Command;
use common::tiny_model;
use image::{ImageEncoder, Rgb, RgbImage};
use std::io::Cursor;
use std::path::{Path, PathBuf};

fn cli() -> Command {
    Command::cargo_bin("candle-face").unwrap()
}

fn face(seed: u64, person: u64) -> RgbImage {
    candle_face::synthetic::Identity::new(9, person).render(40, seed)
}

fn jpeg_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

fn png_bytes(img: &image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A JPEG with an EXIF APP1 segment carrying `orientation` (1..=8), inserted after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    // TIFF header (big endian), one IFD entry: tag 0x0112 SHORT count 1 value.
    let mut tiff = vec![b'M', b'M', 0, 42, 0, 0, 0, 8, 0, 1];
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]);
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let len = (payload.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header claims 100000×100000 pixels, followed by a tiny (wrong) data chunk.
fn png_header_bomb() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01".to_vec();
    out.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    out.extend_from_slice(&idat);
    out.extend_from_slice(&crc32(&idat).to_be_bytes());
    let iend = b"IEND".to_vec();
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&iend);
    out.extend_from_slice(&crc32(&iend).to_be_bytes());
    out
}

fn cmyk_jpeg(img: &RgbImage) -> Vec<u8> {
    let mut cmyk = Vec::with_capacity((img.width() * img.height() * 4) as usize);
    for p in img.pixels() {
        let [r, g, b] = p.0;
        // Adobe CMYK JPEGs store inverted values; any valid 4-channel JPEG exercises the decoder.
        cmyk.extend_from_slice(&[255 - r, 255 - g, 255 - b, 0]);
    }
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, 90);
    enc.encode(
        &cmyk,
        img.width() as u16,
        img.height() as u16,
        jpeg_encoder::ColorType::Cmyk,
    )
    .unwrap();
    out
}

fn animated_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        for s in 0..3 {
            let rgba = image::DynamicImage::ImageRgb8(face(s, 1)).to_rgba8();
            enc.encode_frame(image::Frame::new(rgba)).unwrap();
        }
    }
    out
}

/// Good-but-unusual images: each must be accepted.
fn unusual_images(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut out = Vec::new();
    let mut put = |name: &str, bytes: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        out.push(p);
    };
    let base = face(1, 1);
    let dynimg = image::DynamicImage::ImageRgb8(base.clone());
    put(
        "rgba.png",
        png_bytes(&image::DynamicImage::ImageRgba8(dynimg.to_rgba8())),
    );
    put(
        "sixteen.png",
        png_bytes(&image::DynamicImage::ImageRgb16(dynimg.to_rgb16())),
    );
    put("grey.jpg", {
        let g = dynimg.to_luma8();
        let mut v = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut v)
            .write_image(
                g.as_raw(),
                g.width(),
                g.height(),
                image::ExtendedColorType::L8,
            )
            .unwrap();
        v
    });
    put("cmyk.jpg", cmyk_jpeg(&base));
    put("animated.gif", animated_gif());
    put(
        "one pixel.png",
        png_bytes(&image::DynamicImage::ImageRgb8(RgbImage::from_pixel(
            1,
            1,
            Rgb([200, 100, 50]),
        ))),
    );
    put("ünïcode 名前.jpg", jpeg_bytes(&base));
    put("wrong-extension.png", jpeg_bytes(&base));
    for o in 2..=8u16 {
        put(
            &format!("exif-{o}.jpg"),
            with_exif_orientation(&jpeg_bytes(&base), o),
        );
    }
    out
}

/// Bad files: each must be rejected with a message naming it.
fn bad_images(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    std::fs::create_dir_all(dir).unwrap();
    let base = face(2, 2);
    let jpg = jpeg_bytes(&base);
    let png = png_bytes(&image::DynamicImage::ImageRgb8(base));
    let cases: Vec<(&str, Vec<u8>, &'static str)> = vec![
        ("empty.jpg", vec![], "empty"),
        // A JPEG cut after its header: no scan data at all.
        ("truncated.jpg", jpg[..jpg.len().min(200)].to_vec(), ""),
        ("truncated.png", png[..png.len() / 2].to_vec(), ""),
        (
            "text.jpg",
            b"this is not an image, just some text\n".to_vec(),
            "",
        ),
        ("bomb.png", png_header_bomb(), ""),
        // Cut inside the scan: decoders would fill the missing rows with grey and return a
        // plausible image (PIL refuses it by default, and so do we).
        (
            "cut-mid-scan.jpg",
            jpg[..jpg.len() - 64].to_vec(),
            "truncated JPEG",
        ),
    ];
    cases
        .into_iter()
        .map(|(n, b, why)| {
            let p = dir.join(n);
            std::fs::write(&p, b).unwrap();
            (p, why)
        })
        .collect()
}

fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).to_string()
}

#[test]
fn verify_and_embed_on_the_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let good = face(3, 3);
    let good_path = tmp.path().join("good.jpg");
    good.save(&good_path).unwrap();

    for p in unusual_images(&tmp.path().join("unusual")) {
        let a = cli()
            .args([
                "verify",
                "--no-detect",
                "--json",
                "--threshold",
                "1",
                "--model",
            ])
            .arg(&model)
            .arg(&good_path)
            .arg(&p)
            .assert();
        let err = stderr_of(&a);
        assert!(a.get_output().status.success(), "{}: {err}", p.display());
        assert!(!err.contains("panicked"), "{err}");
    }
    // EXIF orientation is applied: a 2:1 image with orientation 6 (rotate 90°) decodes as 1:2.
    let wide = RgbImage::from_fn(32, 16, |x, _| Rgb([(x * 8) as u8, 0, 0]));
    let exif = tmp.path().join("exif6.jpg");
    std::fs::write(&exif, with_exif_orientation(&jpeg_bytes(&wide), 6)).unwrap();
    let img = candle_face::image::load_image(&exif).unwrap();
    assert_eq!((img.width(), img.height()), (16, 32));

    let bad = bad_images(&tmp.path().join("bad"));
    for (p, why) in &bad {
        let a = cli()
            .args(["verify", "--no-detect", "--threshold", "1", "--model"])
            .arg(&model)
            .arg(&good_path)
            .arg(p)
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .failure();
        let err = stderr_of(&a);
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(err.contains(&name), "{name}: {err}");
        assert!(err.contains(why), "{name}: expected {why:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    // A missing file, a symlink loop and a folder given as an image: the operating system's
    // reason is said once (not once by the error and again by its cause).
    let looped = tmp.path().join("loop.jpg");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let folder = tmp.path().join("folder.jpg");
    std::fs::create_dir_all(&folder).unwrap();
    for p in [tmp.path().join("missing.jpg"), looped, folder] {
        let a = cli()
            .args(["verify", "--no-detect", "--threshold", "1", "--model"])
            .arg(&model)
            .arg(&good_path)
            .arg(&p)
            .assert()
            .failure();
        let err = stderr_of(&a);
        assert!(
            err.contains(&*p.file_name().unwrap().to_string_lossy()),
            "{err}"
        );
        assert_eq!(err.matches("os error").count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    // embed over a folder mixing good and bad files: bad ones are skipped with a summary.
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    good.save(mixed.join("a.png")).unwrap();
    face(4, 4).save(mixed.join("b.jpg")).unwrap();
    for (p, _) in &bad {
        std::fs::copy(p, mixed.join(p.file_name().unwrap())).unwrap();
    }
    let out = tmp.path().join("emb.safetensors");
    let a = cli()
        .args(["embed", "--no-detect", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&out)
        .arg(&mixed)
        .assert()
        .success();
    let err = stderr_of(&a);
    assert!(
        err.contains(&format!("skipped {} of {} files", bad.len(), bad.len() + 2)),
        "{err}"
    );
    let (t, paths) = candle_face::infer::read_embeddings(&out).unwrap();
    assert_eq!(t.dims2().unwrap().0, 2);
    assert_eq!(paths.len(), 2);

    // embed whose only inputs are bad: non-zero exit with the reason.
    let a = cli()
        .args(["embed", "--no-detect", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(tmp.path().join("none.safetensors"))
        .arg(&bad[0].0)
        .arg(&bad[3].0)
        .assert()
        .failure();
    let err = stderr_of(&a);
    assert!(err.contains("none of the 2 images"), "{err}");
    assert!(!tmp.path().join("none.safetensors").exists());
}

#[test]
fn train_on_bad_datasets() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |data: &Path, out: &str| {
        cli()
            .args([
                "train",
                "--quiet",
                "--steps",
                "2",
                "--image-size",
                "16",
                "--channels",
                "4,8",
            ])
            .args([
                "--embedding-dim",
                "8",
                "--people",
                "2",
                "--images-per-person",
                "2",
            ])
            .args(["--crop-fraction", "0.9", "--val-fraction", "0", "--data"])
            .arg(data)
            .arg("--out")
            .arg(tmp.path().join(out))
            .timeout(std::time::Duration::from_secs(120))
            .assert()
    };

    // A messy but usable dataset: bad files are skipped and counted, junk ignored.
    let data = tmp.path().join("messy");
    for p in 0..4u64 {
        let d = data.join(format!("person {p} é"));
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..3 {
            face(i, p).save(d.join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::create_dir_all(data.join("empty person")).unwrap();
    std::fs::create_dir_all(data.join("solo")).unwrap();
    face(0, 9).save(data.join("solo").join("only.png")).unwrap();
    std::fs::write(data.join(".DS_Store"), b"junk").unwrap();
    std::fs::write(data.join("person 0 é").join("Thumbs.db"), b"junk").unwrap();
    let bad = bad_images(&data.join("person 1 é"));
    let a = run(&data, "messy-run").success();
    let err = stderr_of(&a);
    assert!(err.contains(&format!("skipped {} of", bad.len())), "{err}");
    for (p, _) in &bad {
        assert!(
            err.contains(&*p.file_name().unwrap().to_string_lossy()),
            "{err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");

    // One person: a clear error.
    let one = tmp.path().join("one");
    std::fs::create_dir_all(one.join("alice")).unwrap();
    for i in 0..3 {
        face(i, 1)
            .save(one.join("alice").join(format!("{i}.png")))
            .unwrap();
    }
    let err = stderr_of(&run(&one, "one-run").failure());
    assert!(err.contains("people"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // No images at all.
    let none = tmp.path().join("none");
    std::fs::create_dir_all(none.join("bob")).unwrap();
    std::fs::write(none.join("bob").join("notes.txt"), b"hi").unwrap();
    let err = stderr_of(&run(&none, "none-run").failure());
    assert!(err.contains("none") || err.contains("no images"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A missing folder.
    let err = stderr_of(&run(&tmp.path().join("nowhere"), "x").failure());
    assert!(err.contains("nowhere"), "{err}");
}

/// `enroll` and `eval` on folders and pair lists that contain the bad-file corpus: bad files are
/// reported by name and skipped; a run whose only inputs are bad fails with the reason.
#[test]
fn enroll_and_eval_skip_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let people = tmp.path().join("people");
    for (i, name) in ["ann", "bob", "cat", "dan", "eve", "fay"]
        .iter()
        .enumerate()
    {
        let d = people.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..4 {
            face(10 + i as u64, k)
                .save(d.join(format!("{k}.png")))
                .unwrap();
        }
    }
    // Pairs of the good images first (10-fold evaluation needs at least 10 of each kind).
    let csv = tmp.path().join("pairs.csv");
    cli()
        .arg("pairs")
        .arg("--data")
        .arg(&people)
        .args(["--same", "12", "--different", "12", "--out"])
        .arg(&csv)
        .assert()
        .success();
    let bad = bad_images(&people.join("ann"));
    let gallery = tmp.path().join("g.safetensors");
    let a = cli()
        .arg("enroll")
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&people)
        .arg("--out")
        .arg(&gallery)
        .assert()
        .success();
    let err = stderr_of(&a);
    assert!(!err.contains("panicked"), "{err}");
    for (p, _) in &bad {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(err.contains(name.as_ref()), "{name} not reported: {err}");
    }

    // A person whose only images are bad: enrolling only them fails and says why.
    let only_bad = tmp.path().join("only-bad");
    bad_images(&only_bad.join("eve"));
    let a = cli()
        .arg("enroll")
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&only_bad)
        .arg("--out")
        .arg(tmp.path().join("g2.safetensors"))
        .assert()
        .failure();
    let err = stderr_of(&a);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("only-bad") || err.contains("eve"), "{err}");
    assert!(!tmp.path().join("g2.safetensors").exists());

    // Pairs that point at bad files are skipped with their names; the good ones are scored.
    let mut text = std::fs::read_to_string(&csv).unwrap();
    text.push_str("ann/empty.jpg,ann/0.png,1\nann/text.jpg,bob/0.png,0\n");
    std::fs::write(&csv, text).unwrap();
    let a = cli()
        .arg("eval")
        .arg("--model")
        .arg(&model)
        .arg("--pairs")
        .arg(&csv)
        .arg("--images")
        .arg(&people)
        .arg("--json")
        .assert()
        .success();
    let err = stderr_of(&a);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("empty.jpg") && err.contains("text.jpg"),
        "{err}"
    );
    let out = String::from_utf8_lossy(&a.get_output().stdout).to_string();
    assert!(out.contains("\"pairs\":24"), "{out}");
}

/// Damages a copy of a model folder.
type Breaker<'a> = Box<dyn Fn(&Path) + 'a>;

/// Broken model folders given to `verify`: each a non-zero exit with an error naming the file,
/// never a panic.
#[test]
fn broken_model_folders_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let img = tmp.path().join("a.png");
    face(1, 1).save(&img).unwrap();
    let cfg_text = std::fs::read_to_string(model.join("config.json")).unwrap();
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();
    let cases: Vec<(&str, Breaker, &str)> = vec![
        (
            "missing weights",
            Box::new(|d: &Path| {
                std::fs::remove_file(d.join("model.safetensors")).unwrap();
            }),
            "model.safetensors",
        ),
        (
            "truncated weights",
            Box::new(|d: &Path| {
                std::fs::write(d.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
            }),
            "model.safetensors",
        ),
        (
            "invalid JSON",
            Box::new(|d: &Path| {
                std::fs::write(d.join("config.json"), "{ not json").unwrap();
            }),
            "config.json",
        ),
        (
            "newer format",
            Box::new(|d: &Path| {
                std::fs::write(
                    d.join("config.json"),
                    cfg_text.replace("\"format_version\": 1", "\"format_version\": 99"),
                )
                .unwrap();
            }),
            "config.json",
        ),
        (
            "unknown architecture",
            Box::new(|d: &Path| {
                std::fs::write(
                    d.join("config.json"),
                    cfg_text.replace("\"compact_cnn\"", "\"vision_transformer\""),
                )
                .unwrap();
            }),
            "config.json",
        ),
        (
            "wrong shapes",
            Box::new(|d: &Path| {
                std::fs::write(
                    d.join("config.json"),
                    cfg_text.replace("\"embedding_dim\": 8", "\"embedding_dim\": 9"),
                )
                .unwrap();
            }),
            "model.safetensors",
        ),
        (
            "missing config",
            Box::new(|d: &Path| {
                std::fs::remove_file(d.join("config.json")).unwrap();
            }),
            "config.json",
        ),
    ];
    for (what, breakit, names) in cases {
        let d = tmp.path().join(what.replace(' ', "-"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), &cfg_text).unwrap();
        std::fs::write(d.join("model.safetensors"), &weights).unwrap();
        breakit(&d);
        let a = cli()
            .arg("verify")
            .arg("--model")
            .arg(&d)
            .arg("--threshold")
            .arg("1")
            .arg(&img)
            .arg(&img)
            .assert()
            .failure();
        let err = stderr_of(&a);
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(
            err.contains(names),
            "{what}: error does not name {names}: {err}"
        );
    }
}
