//! Fine-tuning a converted InceptionResnetV1 with `--init` and `--freeze` on real faces
//! (`shared/data/small/dlib_johns`): frozen tensors come out bit-identical, the others change.
//! The starting weights are the closed-form fill of the parity fixture, written as a
//! facenet-pytorch checkpoint and converted with `candle-face convert facenet`.

mod common;

use assert_cmd::Command;
use candle_core::{DType, Device};
use candle_face::convert::facenet::expected_tensors;
use candle_face::model::{Architecture, InceptionResnetV1Config, ModelConfig};
use common::fill::fill_state_dict;
use common::max_abs_diff;

const FROZEN: &str = "conv2d_,repeat_1,mixed_6a,repeat_2,mixed_7a,repeat_3";

#[test]
fn freeze_keeps_frozen_tensors_and_trains_the_rest() {
    let Some(data) = common::shared_path("data/small/dlib_johns") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = InceptionResnetV1Config::default();
    let tensors = fill_state_dict(&expected_tensors(&cfg).unwrap(), &Device::Cpu).unwrap();
    let ckpt = dir.path().join("facenet.safetensors");
    candle_core::safetensors::save(&tensors, &ckpt).unwrap();
    let init = dir.path().join("irv1");
    Command::cargo_bin("candle-face")
        .unwrap()
        .args(["convert", "facenet"])
        .arg(&ckpt)
        .arg("--out")
        .arg(&init)
        .assert()
        .success();
    // A smaller input keeps the test fast; the weights do not depend on the input size.
    let mut mc = ModelConfig::load(&init).unwrap();
    if let Architecture::InceptionResnetV1(a) = &mut mc.architecture {
        a.image_size = 80;
    }
    mc.preprocess.image_size = 80;
    mc.save(&init).unwrap();

    let out = dir.path().join("tuned");
    let res = Command::cargo_bin("candle-face")
        .unwrap()
        .args(["train", "--quiet", "--steps", "2", "--people", "2"])
        .args([
            "--images-per-person",
            "2",
            "--lr",
            "1e-3",
            "--warmup-steps",
            "0",
        ])
        .args(["--val-pairs", "20", "--freeze", FROZEN])
        .arg("--data")
        .arg(&data)
        .arg("--init")
        .arg(&init)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");

    let after =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    let before =
        candle_core::safetensors::load(init.join("model.safetensors"), &Device::Cpu).unwrap();
    let frozen: Vec<&str> = FROZEN.split(',').collect();
    let (mut same, mut changed) = (0, 0);
    for (name, b) in &before {
        let a = &after[name];
        let diff = max_abs_diff(
            &a.to_dtype(DType::F32).unwrap(),
            &b.to_dtype(DType::F32).unwrap(),
        );
        let is_stat = name.ends_with("running_mean") || name.ends_with("running_var");
        if frozen.iter().any(|p| name.starts_with(p)) && !is_stat {
            assert_eq!(diff, 0.0, "frozen tensor {name} changed by {diff}");
            same += 1;
        } else if !is_stat && (name.starts_with("last_linear") || name.starts_with("block8.conv2d"))
        {
            assert!(diff > 0.0, "trainable tensor {name} did not change");
            changed += 1;
        }
    }
    assert!(
        same > 100 && changed >= 2,
        "{same} frozen, {changed} changed"
    );
    let trained = ModelConfig::load(&out).unwrap();
    let notes = trained.training.unwrap().notes.join("; ");
    assert!(notes.contains("fine-tuned from"), "{notes}");
}
