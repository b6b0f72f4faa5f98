//! Parity with PyTorch: the `tiny-llama` fixture (a random 2-layer model saved by transformers, with logits,
//! loss and every gradient computed in float64; see tests/data/tiny-llama/README.md) loads through the Hugging
//! Face loader and gives the same logits, loss and gradients in f32.

use std::path::PathBuf;
use tapegrad::llama::checkpoint::{named_parameters, save_model, to_safetensors};
use tapegrad::llama::hf::{load_hf, read_i64, read_tensors};
use tapegrad::llama::{Config, Llama};
use tapegrad::{no_grad, DType};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-llama")
}

/// max |a − b| / max |b| over a tensor: relative to the tensor's scale, so entries near zero do not dominate.
fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn tiny_llama_matches_pytorch_logits_loss_and_gradients() {
    let mut model = load_hf(&data().join("model")).unwrap();
    let expected_path = data().join("expected.safetensors");
    let expected = read_tensors(&expected_path).unwrap();
    let (shape, ids) = read_i64(&expected_path, "input_ids").unwrap();
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let out = model.causal_lm(&ids, shape[0], shape[1], true).unwrap();

    let logits = &expected["logits"];
    assert_eq!(out.logits.shape(), logits.shape());
    let err = relative_error(&out.logits.to_f64_vec(), &logits.to_f64_vec());
    eprintln!("logits: max relative error {err:.2e}");
    assert!(err < 1e-5, "logits relative error {err}");
    let loss = expected["loss"].to_f64_vec()[0];
    assert!(
        (out.loss - loss).abs() / loss < 1e-5,
        "loss {} vs {loss}",
        out.loss
    );

    let grads = out.grads.unwrap();
    assert_eq!(
        grads.len(),
        expected.keys().filter(|k| k.starts_with("grad.")).count()
    );
    for (name, grad) in grads {
        let reference = &expected[&format!("grad.{name}")];
        assert_eq!(grad.shape(), reference.shape(), "{name}");
        let err = relative_error(&grad.to_f64_vec(), &reference.to_f64_vec());
        eprintln!("{name}: max relative error {err:.2e}");
        assert!(err < 1e-4, "{name}: relative error {err}");
    }
}

#[test]
fn grouped_query_tied_model_round_trips_through_the_hugging_face_format_single_and_sharded() {
    let dir = std::env::temp_dir().join(format!("tapegrad-hf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::preset("tiny").unwrap().config;
    config.n_heads = 4;
    config.n_kv_heads = 1;
    config.tie_embeddings = true;
    let model = Llama::new(config.clone(), DType::F32, 11).unwrap();
    save_model(&model, &dir.join("single")).unwrap();
    let config_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("single/config.json")).unwrap()).unwrap();
    assert_eq!(config_json["num_key_value_heads"], 1);
    assert_eq!(config_json["tie_word_embeddings"], true);

    // The same weights split over two shards with an index, as transformers writes large models.
    let sharded = dir.join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    std::fs::copy(dir.join("single/config.json"), sharded.join("config.json")).unwrap();
    let params = named_parameters(&model);
    let (first, second) = params.split_at(params.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        std::fs::write(sharded.join(file), to_safetensors(part).unwrap()).unwrap();
        for (name, _) in part {
            weight_map.insert(name.clone(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let ids: Vec<u32> = vec![1, 5, 9, 300, 2, 7];
    let reference = no_grad(|| model.forward(&ids, 1, ids.len(), None).unwrap()).to_f64_vec();
    for folder in ["single", "sharded"] {
        let loaded = load_hf(&dir.join(folder)).unwrap();
        assert_eq!(loaded.config, config);
        assert!(loaded.lm_head.is_none());
        let logits = no_grad(|| loaded.forward(&ids, 1, ids.len(), None).unwrap()).to_f64_vec();
        assert_eq!(
            logits, reference,
            "{folder}: identical weights give identical logits"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_rope_scaling_is_an_error_not_a_silent_default() {
    let dir = std::env::temp_dir().join(format!("tapegrad-hf-rope-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data().join("model/config.json")).unwrap()).unwrap();
    json["rope_parameters"]["rope_type"] = "yarn".into();
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let err = load_hf(&dir)
        .err()
        .expect("yarn is not supported")
        .to_string();
    assert!(err.contains("rope type \"yarn\""), "{err}");
    // The transformers 4 layout: a top-level rope_theta.
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("rope_parameters");
    old["rope_theta"] = 500000.0.into();
    let config = tapegrad::llama::hf::config_from_json(&old, &dir.join("config.json")).unwrap();
    assert_eq!(config.rope_theta, 500000.0);
    std::fs::remove_dir_all(&dir).unwrap();
}
