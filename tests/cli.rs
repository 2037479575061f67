//! The command line, end to end on generated images: train, resume, verify --json, embed.

use assert_cmd::Command;
use std::path::Path;

fn cli() -> Command {
    Command::cargo_bin("candle-face").unwrap()
}

fn train_args<'a>(data: &'a Path, out: &'a Path, steps: &'a str) -> Vec<std::ffi::OsString> {
    [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        steps,
        "--image-size",
        "32",
        "--crop-fraction",
        "0.9",
        "--channels",
        "8,16",
        "--embedding-dim",
        "16",
        "--people",
        "4",
        "--images-per-person",
        "3",
        "--val-fraction",
        "0.3",
        "--checkpoint-every",
        "5",
        "--log-every",
        "2",
        "--warmup-steps",
        "2",
        "--quiet",
    ]
    .iter()
    .map(Into::into)
    .collect()
}

#[test]
fn train_resume_verify_embed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("run");
    let people = candle_face::synthetic::write_dataset(&data, 10, 4, 40, 3).unwrap();
    std::fs::write(data.join("person_000").join("notes.txt"), "not an image").unwrap();

    // First run: 6 steps, then a second run to 12 steps with --resume.
    cli().args(train_args(&data, &out, "6")).assert().success();
    // Refuses to clobber an existing run without --resume.
    let refused = cli().args(train_args(&data, &out, "12")).assert().failure();
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).to_string();
    assert!(stderr.contains("--resume"), "{stderr}");
    let mut args = train_args(&data, &out, "12");
    args.push("--resume".into());
    let resumed = cli().args(args).assert().success();
    let stderr = String::from_utf8_lossy(&resumed.get_output().stderr).to_string();
    assert!(stderr.contains("resuming from"), "{stderr}");
    assert!(stderr.contains("1 non-image"), "{stderr}");

    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["training"]["steps"], 12);
    let threshold = cfg["threshold"].as_f64().unwrap();
    let steps: Vec<u64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![2, 4, 6, 8, 10, 12]);

    // verify --json prints exactly the JSON object on stdout.
    let (a, b) = (&people[0][0], &people[0][1]);
    let o = cli()
        .args(["verify", "--no-detect", "--json", "--model"])
        .arg(&out)
        .arg(a)
        .arg(b)
        .assert()
        .success();
    let stdout = String::from_utf8(o.get_output().stdout.clone()).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 3);
    let d = v["distance"].as_f64().unwrap();
    assert!((v["threshold"].as_f64().unwrap() - threshold).abs() < 1e-6);
    assert_eq!(v["same"].as_bool().unwrap(), d <= threshold);

    // The same image twice: distance 0, same; an explicit threshold overrides the model's.
    let o = cli()
        .args([
            "verify",
            "--no-detect",
            "--json",
            "--threshold",
            "0.25",
            "--model",
        ])
        .arg(&out)
        .arg(a)
        .arg(a)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
    assert_eq!(v["distance"].as_f64().unwrap(), 0.0);
    assert_eq!(v["threshold"].as_f64().unwrap(), 0.25);
    assert_eq!(v["same"], true);

    // embed: a folder expands to its images, sorted; rows equal the library's embeddings.
    let emb_file = tmp.path().join("e.safetensors");
    cli()
        .args(["embed", "--no-detect", "--model"])
        .arg(&out)
        .arg("--out")
        .arg(&emb_file)
        .arg(data.join("person_001"))
        .arg(a)
        .assert()
        .success();
    let (t, paths) = candle_face::infer::read_embeddings(&emb_file).unwrap();
    let mut expected: Vec<String> = people[1].iter().map(|p| p.display().to_string()).collect();
    expected.push(a.display().to_string());
    assert_eq!(paths, expected);
    let lib = candle_face::infer::Embedder::load(&out)
        .unwrap()
        .embed_images(&paths)
        .unwrap();
    assert_eq!(t.to_vec2::<f32>().unwrap(), lib.to_vec2::<f32>().unwrap());

    // calibrate writes a new threshold (old one kept in the history); verify then uses it.
    let pairs = tmp.path().join("pairs.csv");
    cli()
        .args(["pairs", "--same", "12", "--different", "12", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&pairs)
        .assert()
        .success();
    cli()
        .args(["calibrate", "--target", "far=0.1", "--model"])
        .arg(&out)
        .arg("--pairs")
        .arg(&pairs)
        .arg("--images")
        .arg(&data)
        .assert()
        .success();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let history = cfg["threshold_history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert!((history[0]["threshold"].as_f64().unwrap() - threshold).abs() < 1e-6);
    let new_t = cfg["threshold"].as_f64().unwrap();
    assert_eq!(history[1]["threshold"].as_f64().unwrap(), new_t);
    assert!(history[1]["source"].as_str().unwrap().contains("calibrate"));
    let o = cli()
        .args(["verify", "--json", "--model"])
        .arg(&out)
        .arg(a)
        .arg(b)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
    assert!((v["threshold"].as_f64().unwrap() - new_t).abs() < 1e-6);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());

    // calibrate --out: a calibrated copy, the source untouched; without --out a source that is
    // not a folder is refused with a hint.
    let copy = tmp.path().join("calibrated-copy");
    let before = std::fs::read(out.join("config.json")).unwrap();
    cli()
        .args(["calibrate", "--target", "accuracy", "--model"])
        .arg(&out)
        .arg("--out")
        .arg(&copy)
        .arg("--pairs")
        .arg(&pairs)
        .arg("--images")
        .arg(&data)
        .assert()
        .success();
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), before);
    let copied: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("config.json")).unwrap()).unwrap();
    assert_eq!(copied["threshold_history"].as_array().unwrap().len(), 3);
    assert_eq!(
        std::fs::read(copy.join("model.safetensors")).unwrap(),
        std::fs::read(out.join("model.safetensors")).unwrap()
    );
    let o = cli()
        .args(["calibrate", "--model", "default", "--pairs"])
        .arg(&pairs)
        .arg("--images")
        .arg(&data)
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&o.get_output().stderr).to_string();
    assert!(stderr.contains("--out DIR"), "{stderr}");
}

#[test]
fn verify_missing_model_and_image_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let o = cli()
        .args(["verify", "--no-detect", "--model"])
        .arg(tmp.path().join("nope"))
        .args(["a.jpg", "b.jpg"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&o.get_output().stderr).to_string();
    assert!(stderr.contains("nope"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn per_stage_blocks_and_augmentation_flags_reach_the_model_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("run");
    let people = candle_face::synthetic::write_dataset(&data, 6, 3, 40, 5).unwrap();
    let mut args = train_args(&data, &out, "2");
    args.extend(
        [
            "--blocks-per-stage",
            "1,2",
            "--rotate",
            "10",
            "--grayscale",
            "0.5",
        ]
        .iter()
        .map(Into::into),
    );
    cli().args(args).assert().success();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["architecture"]["blocks_per_stage"],
        serde_json::json!([1, 2])
    );
    let notes = cfg["training"]["notes"].to_string();
    assert!(
        notes.contains("rotation ±10°") && notes.contains("greyscale p=0.5"),
        "{notes}"
    );
    // The folder loads through the inference path (three conv blocks).
    let o = cli()
        .args(["verify", "--no-detect", "--json", "--model"])
        .arg(&out)
        .arg(&people[0][0])
        .arg(&people[0][0])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
    assert_eq!(v["distance"].as_f64().unwrap(), 0.0);

    // Out-of-range strengths and contradictory flags are refused before any work.
    for (flags, needle) in [
        (vec!["--rotate", "60"], "rotate"),
        (vec!["--grayscale", "1.5"], "grayscale"),
        (vec!["--no-augment", "--rotate", "5"], "--no-augment"),
        (vec!["--blocks-per-stage", "1,2,3"], "blocks_per_stage"),
    ] {
        let mut args = train_args(&data, &tmp.path().join("refused"), "2");
        args.extend(flags.iter().map(Into::into));
        let o = cli().args(args).assert().failure();
        let stderr = String::from_utf8_lossy(&o.get_output().stderr).to_string();
        assert!(stderr.contains(needle), "{flags:?}: {stderr}");
    }
}

#[test]
#[cfg(unix)]
fn output_into_a_closed_pipe_ends_quietly() {
    // `candle-face detect … | head -1`: the reader is gone before the output is written. The
    // program must end (killed by SIGPIPE, as Unix tools are), not panic in println!.
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..40 {
        let p = tmp.path().join(format!("grey{i}.png"));
        image::RgbImage::from_pixel(48, 48, image::Rgb([100, 100, 100]))
            .save(&p)
            .unwrap();
        files.push(p);
    }
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("candle-face"))
        .arg("detect")
        .args(&files)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn identity_loss_trains_resumes_and_stays_out_of_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("run");
    let people = candle_face::synthetic::write_dataset(&data, 10, 4, 40, 9).unwrap();
    let with_id = |steps: &str, extra: &[&str]| {
        let mut args = train_args(&data, &out, steps);
        args.extend(
            ["--id-loss", "0.5", "--id-scale", "16"]
                .iter()
                .chain(extra)
                .map(Into::into),
        );
        args
    };
    cli().args(with_id("5", &[])).assert().success();
    // The checkpoint holds the classifier (one row per training person), the model does not.
    let names = |p: &Path| -> Vec<(String, Vec<usize>)> {
        let bytes = std::fs::read(p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors()
            .into_iter()
            .map(|(n, v)| (n, v.shape().to_vec()))
            .collect()
    };
    let ckpt = out.join("checkpoints/step-00000005.safetensors");
    let head: Vec<_> = names(&ckpt)
        .into_iter()
        .filter(|(n, _)| n.contains("training_only.id_head.weight"))
        .collect();
    assert!(
        head.iter().any(|(_, s)| s == &vec![7, 16]),
        "7 training people × 16 dims: {head:?}"
    );
    let model = names(&out.join("model.safetensors"));
    assert!(!model.is_empty());
    assert!(
        model.iter().all(|(n, _)| !n.starts_with("training_only")),
        "{model:?}"
    );
    let cfg = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(cfg.contains("identity loss: CosFace"), "{cfg}");

    // Resuming needs the same identity loss; with it, training continues.
    let mut args = train_args(&data, &out, "8");
    args.push("--resume".into());
    let o = cli().args(args).assert().failure();
    let stderr = String::from_utf8_lossy(&o.get_output().stderr).to_string();
    assert!(stderr.contains("different options"), "{stderr}");
    cli().args(with_id("8", &["--resume"])).assert().success();
    assert!(out.join("checkpoints/step-00000008.safetensors").is_file());

    // The folder verifies through the inference path; bad settings are refused.
    cli()
        .args(["verify", "--no-detect", "--model"])
        .arg(&out)
        .arg(&people[0][0])
        .arg(&people[1][0])
        .assert()
        .success();
    for flags in [
        ["--id-margin", "1.5"],
        ["--id-scale", "0"],
        // Every person has 4 images: with 5 required there is no class at all.
        ["--id-min-images", "5"],
    ] {
        let mut args = train_args(&data, &tmp.path().join("refused"), "2");
        args.extend(["--id-loss", "1"].iter().chain(&flags).map(Into::into));
        let o = cli().args(args).assert().failure();
        let stderr = String::from_utf8_lossy(&o.get_output().stderr).to_string();
        assert!(stderr.contains("identity loss"), "{flags:?}: {stderr}");
    }
}
