//! InceptionResnetV1 against facenet-pytorch: the state-dict keys, and the outputs (final and
//! per stage) for weights filled by the closed-form rule of `shared/reference/fill.py`.
//! Also a finite-difference check of the training-mode gradient through the whole network.

mod common;

use common::shared_dir;

use common::fill::{fill_state_dict, fill_tensor, fnv1a64, uniform};
use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_face::convert::facenet::expected_tensors;
use candle_face::model::inception_resnet_v1::IRV1_STAGES;
use candle_face::model::{InceptionResnetV1, InceptionResnetV1Config};
use candle_nn::VarBuilder;

/// The model with every tensor filled by name, in `dtype`.
fn filled_model(
    cfg: &InceptionResnetV1Config,
    dtype: DType,
) -> (InceptionResnetV1, HashMap<String, Tensor>) {
    let specs = expected_tensors(cfg).unwrap();
    let tensors = fill_state_dict(&specs, &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(dtype).unwrap()))
        .collect();
    let vb = VarBuilder::from_tensors(tensors.clone(), dtype, &Device::Cpu);
    (InceptionResnetV1::new(cfg, vb).unwrap(), tensors)
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn tensor_names_and_shapes_match_facenet_pytorch() {
    let Some(shared) = shared_dir() else { return };
    let tsv =
        std::fs::read_to_string(shared.join("fixtures/inception_resnet_v1_keys.tsv")).unwrap();
    let reference: Vec<(String, Vec<usize>)> = tsv
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let shape: Vec<usize> = serde_json::from_str(cols[1]).unwrap();
            (cols[0].to_string(), shape)
        })
        .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
        .collect();
    let mut ours = expected_tensors(&InceptionResnetV1Config::default()).unwrap();
    let mut reference = reference;
    assert_eq!(ours.len(), 602);
    // Same names with the same shapes (candle's BatchNorm reads its tensors in another order).
    ours.sort();
    reference.sort();
    assert_eq!(ours, reference);
}

#[test]
fn outputs_match_facenet_pytorch() {
    let Some(shared) = shared_dir() else { return };
    let fixture = candle_core::safetensors::load(
        shared.join("fixtures/inception_resnet_v1_parity.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let (model, _) = filled_model(&InceptionResnetV1Config::default(), DType::F32);
    let (output, stages) = model.forward_stages(&fixture["input"], false).unwrap();
    assert_eq!(stages.len(), IRV1_STAGES.len());
    for (name, got) in &stages {
        let want = &fixture[&format!("stage.{name}")];
        assert_eq!(got.dims(), want.dims(), "stage {name}");
        let err = max_abs(&(got - want).unwrap());
        let scale = max_abs(want);
        eprintln!("stage {name}: max abs err {err:.3e}, max abs {scale:.3e}");
        assert!(
            err <= 1e-3 * scale,
            "stage {name}: max abs error {err} > 1e-3 × {scale}"
        );
    }
    let want = &fixture["output"];
    assert_eq!(output.dims(), want.dims());
    let err = max_abs(&(&output - want).unwrap());
    eprintln!("output: max abs err {err:.3e}");
    assert!(err <= 1e-4, "output: max abs error {err}");
    // forward_t gives the same output as forward_stages.
    let direct = model.forward_t(&fixture["input"], false).unwrap();
    assert_eq!(max_abs(&(&direct - &output).unwrap()), 0.0);
}

/// The training-mode gradient (BatchNorm batch statistics, the exact max-pool, padded 1×7/7×1 and
/// 1×3/3×1 convolutions, stride-2 convolutions, L2 normalization) against central finite
/// differences, in f64 on a small 75-pixel batch.
/// Heavy (≈ 30 forward passes, about a minute on 2 busy cores): run with
/// `cargo test --test irv1_parity -- --ignored`.
#[test]
#[ignore]
fn training_gradient_matches_finite_differences() {
    let cfg = InceptionResnetV1Config {
        embedding_dim: 16,
        dropout_prob: 0.0,
        image_size: 75,
        ..Default::default()
    };
    let (_, tensors) = filled_model(&cfg, DType::F64);
    let dev = Device::Cpu;
    let input = Tensor::from_vec(
        fill_tensor("input", &[3, 3, 75, 75], false)
            .into_iter()
            .map(f64::from)
            .collect::<Vec<f64>>(),
        (3, 3, 75, 75),
        &dev,
    )
    .unwrap();
    let weights = Tensor::from_vec(
        fill_tensor("loss.weights", &[3, 16], false)
            .into_iter()
            .map(f64::from)
            .collect::<Vec<f64>>(),
        (3, 16),
        &dev,
    )
    .unwrap();
    let loss_of = |tensors: &HashMap<String, Tensor>| -> Tensor {
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F64, &dev);
        let model = InceptionResnetV1::new(&cfg, vb).unwrap();
        (model.forward_t(&input, true).unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    // (tensor, flat element) pairs covering each kind of layer. At 75 px, repeat_3 and block8 see
    // 1×1 maps: only the centre tap (flat index ≡ 1 mod 3) of their 1×3 / 3×1 kernels is used.
    let probes = [
        ("conv2d_1a.conv.weight", 5),
        ("conv2d_1a.bn.weight", 3),
        ("conv2d_3b.conv.weight", 100),
        ("repeat_1.0.branch2.1.conv.weight", 77),
        ("mixed_6a.branch0.conv.weight", 1234),
        ("repeat_2.0.branch1.1.conv.weight", 4321),
        ("repeat_2.9.branch1.2.conv.weight", 999),
        ("mixed_7a.branch2.2.conv.weight", 2024),
        ("repeat_3.4.branch1.1.conv.weight", 556),
        ("block8.branch1.2.conv.weight", 31),
        ("repeat_2.5.conv2d.bias", 7),
        ("last_linear.weight", 300),
        ("last_bn.bias", 2),
    ];
    let mut vars: HashMap<String, Tensor> = tensors.clone();
    let mut var_handles = HashMap::new();
    for (name, _) in probes {
        let v = Var::from_tensor(&tensors[name]).unwrap();
        vars.insert(name.to_string(), v.as_tensor().clone());
        var_handles.insert(name, v);
    }
    let grads = loss_of(&vars).backward().unwrap();
    // Tiny steps: with larger ones the perturbation moves some of the ~10⁵ ReLU inputs across
    // zero (h = 1e-5 is already 0.3% off for conv2d_1a; 1e-6 and 1e-7 agree to 7 digits).
    let h = 1e-7;
    for (name, idx) in probes {
        let g = grads
            .get(var_handles[name].as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[idx];
        let shifted = |delta: f64| -> f64 {
            let t = &tensors[name];
            let mut v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            v[idx] += delta;
            let mut m = tensors.clone();
            m.insert(
                name.to_string(),
                Tensor::from_vec(v, t.shape(), &dev).unwrap(),
            );
            loss_of(&m).to_scalar::<f64>().unwrap()
        };
        let fd = (shifted(h) - shifted(-h)) / (2.0 * h);
        let tol = 1e-5 + 1e-4 * fd.abs().max(g.abs());
        eprintln!("{name}[{idx}]: analytic {g:.6e}, finite difference {fd:.6e}");
        assert!(
            (g - fd).abs() <= tol,
            "{name}[{idx}]: analytic {g} vs finite difference {fd}"
        );
        assert!(
            g != 0.0,
            "{name}[{idx}]: zero gradient does not test anything"
        );
    }
}

/// The user path for facenet-pytorch weights: a checkpoint file with the classifier head and
/// `num_batches_tracked` counters (as `torch.save(model.state_dict())` writes them) given as
/// `--model`, and the same checkpoint converted to a model folder, both give facenet-pytorch's
/// output for the fixture's input.
#[test]
fn facenet_checkpoint_and_converted_folder_match_facenet_pytorch() {
    use candle_face::convert::{convert_facenet_checkpoint, load_facenet_checkpoint};
    use candle_face::infer::{LoadOptions, ModelSource};
    let Some(shared) = shared_dir() else { return };
    let fixture = candle_core::safetensors::load(
        shared.join("fixtures/inception_resnet_v1_parity.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let (_, mut tensors) = filled_model(&InceptionResnetV1Config::default(), DType::F32);
    tensors.insert(
        "logits.weight".into(),
        Tensor::zeros((8631, 512), DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "conv2d_1a.bn.num_batches_tracked".into(),
        Tensor::new(&[7i64], &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("facenet.safetensors");
    candle_core::safetensors::save(&tensors, &ckpt).unwrap();
    let want = &fixture["output"];

    let (cfg, net) = load_facenet_checkpoint(&ckpt, &Device::Cpu).unwrap();
    assert_eq!(cfg.preprocess.image_size, 160);
    assert_eq!(cfg.threshold, None);
    let got = net.forward_t(&fixture["input"], false).unwrap();
    assert!(max_abs(&(&got - want).unwrap()) <= 1e-4);

    let out = dir.path().join("model");
    convert_facenet_checkpoint(&ckpt, &out).unwrap();
    let stored =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(!stored.contains_key("logits.weight"));
    let src: ModelSource = out.to_str().unwrap().parse().unwrap();
    let emb = src.load(&LoadOptions::default()).unwrap();
    assert_eq!(emb.embedding_dim(), 512);
    let (cfg2, net2) = candle_face::model::load_model(&out, &Device::Cpu).unwrap();
    assert_eq!(cfg2.architecture, cfg.architecture);
    let got = net2.forward_t(&fixture["input"], false).unwrap();
    assert!(max_abs(&(&got - want).unwrap()) <= 1e-4);
}

/// Self-check values the Python fill of the parity fixtures gives.
#[test]
fn fill_self_check_values() {
    assert_eq!(fnv1a64(""), 0xCBF2_9CE4_8422_2325);
    assert_eq!(fnv1a64("conv2d_1a.conv.weight"), 0xd94f_a0b8_04c5_5802);
    let u = uniform("conv2d_1a.conv.weight", 4);
    let expected = [
        0.5744440641131154,
        0.18915816211554215,
        0.07840557624201216,
        0.8186457275440584,
    ];
    assert_eq!(u, expected);
}

#[test]
fn fill_rules_by_name_and_rank() {
    let u = uniform("conv2d_1a.conv.weight", 4);
    let w = fill_tensor("conv2d_1a.conv.weight", &[2, 2], false);
    let a = (6.0f64 / 2.0).sqrt();
    for (w, u) in w.iter().zip(&u) {
        assert_eq!(*w, ((2.0 * u - 1.0) * a) as f32);
    }
    let specs = vec![
        ("bn.weight".to_string(), vec![3]),
        ("bn.bias".to_string(), vec![3]),
        ("bn.running_mean".to_string(), vec![3]),
        ("bn.running_var".to_string(), vec![3]),
        ("lin.bias".to_string(), vec![3]),
        ("prelu.weight".to_string(), vec![3]),
    ];
    let t = fill_state_dict(&specs, &Device::Cpu).unwrap();
    let get = |n: &str| t[n].to_vec1::<f32>().unwrap();
    let s = |n: &str| {
        uniform(n, 3)
            .into_iter()
            .map(|u| 2.0 * u - 1.0)
            .collect::<Vec<f64>>()
    };
    let check = |n: &str, f: &dyn Fn(f64) -> f64| {
        let want: Vec<f32> = s(n).into_iter().map(|s| f(s) as f32).collect();
        assert_eq!(get(n), want, "{n}");
    };
    check("bn.weight", &|s| 1.0 + 0.2 * s);
    check("bn.bias", &|s| 0.2 * s);
    check("bn.running_mean", &|s| 0.1 * s);
    check("bn.running_var", &|s| 1.0 + 0.5 * s);
    check("lin.bias", &|s| 0.1 * s);
    check("prelu.weight", &|s| 0.25 + 0.05 * s);
}
