//! LoRA: the adapter layer by finite differences (over a dense and a quantized base), a fresh adapter leaving
//! the model unchanged, only adapters training while the base stays bit-for-bit frozen, merging, dropout
//! masks that a recomputed block draws again, LoRA over a quantized base learning, adapter runs resuming bit
//! for bit (checkpoints hold the adapters and a checked reference to the base), gradient accumulation equal
//! to one larger batch, and PEFT's adapter layout both ways.

mod common;

use common::{check_op, random_quant, values};
use std::path::{Path, PathBuf};
use tapegrad::data::Tokenizer;
use tapegrad::io::gguf::GgmlType;
use tapegrad::llama::checkpoint::save_model;
use tapegrad::llama::lora::Lora;
use tapegrad::llama::peft::{load_adapter, save_adapter};
use tapegrad::llama::pretrained::Quantization;
use tapegrad::llama::train::{TrainOptions, Trainer};
use tapegrad::llama::{Config, Llama, LoraConfig, Recompute, Target, Weight};
use tapegrad::optim::{AdamW, AdamWConfig};
use tapegrad::{no_grad, DType, Tape, Tensor};

fn tiny() -> Config {
    let mut c = Config::preset("tiny").unwrap().config;
    // Rows of whole 32-element blocks, so every projection can be quantized.
    c.ffn_dim = 192;
    c
}

fn batch() -> (Vec<u32>, Vec<u32>) {
    let ids: Vec<u32> = (0..2 * 16 + 1).map(|i| (i * 37 % 500) as u32).collect();
    (ids[..32].to_vec(), ids[1..].to_vec())
}

/// The loss and the gradient of every parameter for one batch.
fn loss_and_grads(model: &mut Llama) -> (f64, Vec<Tensor>) {
    let (inputs, targets) = batch();
    let tape = Tape::new();
    let leaves = model.watch(&tape);
    let loss = model.loss(&inputs, &targets, 2, 16).unwrap();
    model.unwatch();
    let mut grads = tape.backward(&loss).unwrap();
    let grads = leaves
        .iter()
        .map(|l| {
            grads
                .remove(l)
                .unwrap_or_else(|| Tensor::zeros(l.shape(), l.dtype()))
        })
        .collect();
    (loss.item().unwrap(), grads)
}

fn train(model: &mut Llama, steps: usize, lr: f64) -> Vec<f64> {
    let mut sizes = Vec::new();
    model.visit(&mut |_, p| sizes.push(p.numel()));
    let mut opt = AdamW::new(
        AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        },
        &sizes,
    );
    (0..steps)
        .map(|_| {
            let (loss, grads) = loss_and_grads(model);
            opt.step(&mut model.params_mut(), &grads, lr).unwrap();
            loss
        })
        .collect()
}

fn logits(model: &Llama) -> Vec<f64> {
    let (inputs, _) = batch();
    no_grad(|| model.forward(&inputs, 2, 16, None).unwrap()).to_f64_vec()
}

fn base_values(model: &Llama) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    model.visit_weights(&mut |_, w| out.push(w.dequantized().unwrap().to_f64_vec()));
    out
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn the_adapter_layer_matches_finite_differences_over_dense_and_quantized_bases() {
    let (out, inp, rank) = (5, 32, 3);
    let dense = Weight::Dense(values(&[out, inp], -0.5, 0.5, 1));
    let quantized = Weight::Quantized(random_quant(GgmlType::Q4_K, out, 256, 2));
    for (base, inp) in [(dense, inp), (quantized, 256)] {
        let x = values(&[2, 3, inp], -1.0, 1.0, 3);
        let a = values(&[rank, inp], -0.3, 0.3, 4);
        let b = values(&[out, rank], -0.3, 0.3, 5);
        let layer = |xs: &[Tensor]| {
            let lora = Lora {
                a: xs[1].clone(),
                b: xs[2].clone(),
                scale: 2.5,
                dropout: 0.0,
            };
            base.linear(&xs[0])?.add(&lora.apply(&xs[0], None)?)
        };
        let reference = |xs: &[Tensor]| {
            let w = base.dequantized()?.to_dtype(DType::F64)?;
            let delta = xs[2].matmul(&xs[1])?.scale(2.5)?;
            xs[0].linear(&w.add(&delta)?)
        };
        check_op(&[x, a, b], layer, Some(&reference));
    }
}

#[test]
fn a_fresh_adapter_changes_nothing_and_only_adapters_are_parameters() {
    let mut model = Llama::new(tiny(), DType::F32, 1).unwrap();
    let before = logits(&model);
    let config = LoraConfig {
        targets: vec![Target::Q, Target::V, Target::Down],
        ..LoraConfig::new(4)
    };
    model.add_lora(&config, 7).unwrap();
    assert_eq!(logits(&model), before);
    let mut names = Vec::new();
    model.visit(&mut |n, t| names.push((n.to_string(), t.shape().to_vec())));
    assert_eq!(names.len(), 2 * 3 * 2, "{names:?}");
    assert_eq!(
        names[0],
        (
            "model.layers.0.self_attn.q_proj.lora_A.weight".into(),
            vec![4, 64]
        )
    );
    assert_eq!(
        names[1],
        (
            "model.layers.0.self_attn.q_proj.lora_B.weight".into(),
            vec![64, 4]
        )
    );
    assert_eq!(
        names[5],
        (
            "model.layers.0.mlp.down_proj.lora_B.weight".into(),
            vec![64, 4]
        )
    );
    assert!(model
        .add_lora(&config, 7)
        .unwrap_err()
        .to_string()
        .contains("adapters already"));
    for bad in [
        LoraConfig {
            rank: 0,
            ..LoraConfig::new(4)
        },
        LoraConfig {
            alpha: -1.0,
            ..LoraConfig::new(4)
        },
        LoraConfig {
            dropout: 1.0,
            ..LoraConfig::new(4)
        },
    ] {
        assert!(Llama::new(tiny(), DType::F32, 1)
            .unwrap()
            .add_lora(&bad, 1)
            .is_err());
    }
}

#[test]
fn training_moves_the_adapters_only_and_merging_keeps_the_function() {
    let mut model = Llama::new(tiny(), DType::F32, 1).unwrap();
    model.add_lora(&LoraConfig::new(4), 7).unwrap();
    let base = base_values(&model);
    let losses = train(&mut model, 30, 1e-2);
    assert!(losses[29] < losses[0] - 0.5, "LoRA losses {losses:?}");
    assert_eq!(base_values(&model), base, "a frozen base weight changed");
    let adapted = logits(&model);
    model.merge_lora().unwrap();
    assert!(model.lora.is_none());
    let merged = logits(&model);
    assert!(
        max_diff(&adapted, &merged) < 1e-4,
        "merged logits differ by {}",
        max_diff(&adapted, &merged)
    );
    // After merging, every weight is a parameter again.
    let mut n = 0;
    model.visit(&mut |_, _| n += 1);
    assert_eq!(
        n,
        2 * 9 + 3,
        "the embedding, every block weight, the norm and the head"
    );
}

#[test]
fn dropout_masks_follow_the_seed_and_replay_under_recomputation() {
    let mut model = Llama::new(tiny(), DType::F32, 1).unwrap();
    model
        .add_lora(
            &LoraConfig {
                dropout: 0.3,
                ..LoraConfig::new(4)
            },
            7,
        )
        .unwrap();
    // B starts at zero, so dropout only shows once the adapters have trained a little.
    train(&mut model, 3, 1e-2);
    let plain = loss_and_grads(&mut model).0;
    model.dropout_seed = Some(11);
    let (first, grads) = loss_and_grads(&mut model);
    let (again, _) = loss_and_grads(&mut model);
    assert_eq!(first, again, "one seed, one mask");
    assert_ne!(first, plain, "dropout changed nothing");
    model.dropout_seed = Some(12);
    assert_ne!(
        loss_and_grads(&mut model).0,
        first,
        "another seed, the same mask"
    );
    model.dropout_seed = Some(11);
    for recompute in [Recompute::Selective, Recompute::Full] {
        model.recompute = recompute;
        let (loss, replayed) = loss_and_grads(&mut model);
        assert_eq!(loss, first, "{recompute:?}");
        for (g, r) in grads.iter().zip(&replayed) {
            assert_eq!(
                g.to_f64_vec(),
                r.to_f64_vec(),
                "{recompute:?}: a replayed block drew another mask"
            );
        }
    }
}

#[test]
fn lora_over_a_quantized_base_learns_and_leaves_the_blocks_alone() {
    let mut model = Llama::new(tiny(), DType::F32, 1).unwrap();
    let dense = logits(&model);
    model.quantize_projections(GgmlType::Q8_0).unwrap();
    assert_eq!(model.quantized_weights(), vec![(GgmlType::Q8_0, 2 * 7)]);
    // Q8_0 keeps the function close.
    assert!(max_diff(&logits(&model), &dense) < 0.05);
    let mut sizes = 0;
    model.visit(&mut |_, _| sizes += 1);
    assert_eq!(sizes, 2 * 2 + 3, "quantized projections are not parameters");
    model.add_lora(&LoraConfig::new(4), 7).unwrap();
    let base = base_values(&model);
    let losses = train(&mut model, 30, 1e-2);
    assert!(losses[29] < losses[0] - 0.5, "QLoRA losses {losses:?}");
    assert_eq!(base_values(&model), base);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tapegrad-lora-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny pretrained folder (random weights, a tokenizer trained on the corpus) and the corpus file.
fn pretrained(dir: &Path) -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let text = std::fs::read_to_string(root.join("austen.txt")).unwrap()[..60_000].to_string();
    let tokenizer = Tokenizer::train(&[text.as_bytes()], 400).unwrap();
    let mut config = tiny();
    config.vocab_size = tokenizer.vocab_size();
    let base = dir.join("base");
    save_model(&Llama::new(config, DType::F32, 4).unwrap(), &base).unwrap();
    tokenizer.save(base.join("tokenizer.json")).unwrap();
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, text).unwrap();
    (base, corpus)
}

fn options(
    dir: &Path,
    corpus: &Path,
    lora: Option<LoraConfig>,
    weights: Quantization,
) -> TrainOptions {
    TrainOptions {
        steps: 6,
        batch_size: 2,
        seq_len: 32,
        lr: 1e-2,
        warmup_steps: 1,
        data: vec![(corpus.to_path_buf(), 1.0)],
        cache_dir: dir.join("cache"),
        seed: 3,
        lora,
        weights,
        ..Default::default()
    }
}

#[test]
fn adapter_runs_resume_bit_for_bit_over_dense_and_quantized_bases() {
    let dir = temp_dir("resume");
    let (base, corpus) = pretrained(&dir);
    let lora = LoraConfig {
        dropout: 0.1,
        ..LoraConfig::new(4)
    };
    for weights in [Quantization::Dense, Quantization::To(GgmlType::Q8_0)] {
        let options = options(&dir, &corpus, Some(lora.clone()), weights);
        let mut straight = Trainer::from_pretrained(&base, options.clone()).unwrap();
        let losses: Vec<f64> = (0..6)
            .map(|_| straight.train_step().unwrap().loss)
            .collect();
        assert!(losses[5] < losses[0], "{weights:?}: {losses:?}");
        let mut first = Trainer::from_pretrained(&base, options.clone()).unwrap();
        for _ in 0..3 {
            first.train_step().unwrap();
        }
        let ckpts = dir.join(format!("ckpts-{}", weights.flag()));
        let saved = first.save(&ckpts, 2).unwrap().unwrap();
        // The checkpoint holds the adapters and a reference to the base, not the base.
        assert!(
            saved.join("base.json").is_file() && saved.join("adapter_model.safetensors").is_file()
        );
        assert!(!saved.join("model.safetensors").exists());
        let mut resumed = Trainer::resume(&ckpts, options).unwrap();
        assert_eq!(
            resumed.model.quantized_weights(),
            straight.model.quantized_weights()
        );
        let rest: Vec<f64> = (0..3).map(|_| resumed.train_step().unwrap().loss).collect();
        assert_eq!(rest, losses[3..], "{weights:?}: resumed losses differ");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        straight
            .model
            .visit(&mut |n, t| a.push((n.to_string(), t.to_f64_vec())));
        resumed
            .model
            .visit(&mut |n, t| b.push((n.to_string(), t.to_f64_vec())));
        assert_eq!(a, b);
    }
    // A changed base is refused by the checkpoint that refers to it.
    let config = base.join("config.json");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push(' ');
    std::fs::write(&config, text).unwrap();
    let err = Trainer::resume(
        &dir.join("ckpts-dense"),
        options(&dir, &corpus, None, Quantization::Dense),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("base model changed"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gradient_accumulation_is_one_larger_batch() {
    let dir = temp_dir("accum");
    let (base, corpus) = pretrained(&dir);
    let run = |batch_size: usize, grad_accum: usize, lora: Option<LoraConfig>| {
        // A large ε and no clipping make the update follow the gradient's value: Adam's first steps are
        // nearly sign(g)·lr, which turns a last-bit difference in a gradient near zero into a whole step.
        let optimizer = AdamWConfig {
            eps: 1e-3,
            clip_norm: 0.0,
            ..AdamWConfig::default()
        };
        let options = TrainOptions {
            batch_size,
            grad_accum,
            optimizer,
            ..options(&dir, &corpus, lora, Quantization::Dense)
        };
        let mut trainer = Trainer::from_pretrained(&base, options).unwrap();
        let losses: Vec<f64> = (0..2).map(|_| trainer.train_step().unwrap().loss).collect();
        let mut params = Vec::new();
        trainer
            .model
            .visit(&mut |_, t| params.extend(t.to_f64_vec()));
        (losses, params)
    };
    for lora in [None, Some(LoraConfig::new(4))] {
        let (big_losses, big) = run(4, 1, lora.clone());
        let (acc_losses, acc) = run(2, 2, lora.clone());
        for (a, b) in big_losses.iter().zip(&acc_losses) {
            assert!(
                (a - b).abs() < 1e-5,
                "losses {big_losses:?} vs {acc_losses:?}"
            );
        }
        let diff = max_diff(&big, &acc);
        assert!(diff < 1e-6, "parameters after two steps differ by {diff}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn adapters_round_trip_through_peft_s_layout() {
    let dir = temp_dir("peft");
    let mut model = Llama::new(tiny(), DType::F32, 1).unwrap();
    let config = LoraConfig {
        rslora: true,
        targets: vec![Target::K, Target::Up],
        ..LoraConfig::new(3)
    };
    model.add_lora(&config, 5).unwrap();
    train(&mut model, 3, 1e-2);
    save_adapter(&model, &dir, "tiny").unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(
        json["target_modules"],
        serde_json::json!(["k_proj", "up_proj"])
    );
    assert_eq!(json["r"], 3);
    let keys = tapegrad::llama::hf::read_tensors(&dir.join("adapter_model.safetensors")).unwrap();
    assert!(keys.contains_key("base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"));
    assert_eq!(keys.len(), 2 * 2 * 2);
    let mut loaded = Llama::new(tiny(), DType::F32, 1).unwrap();
    load_adapter(&mut loaded, &dir).unwrap();
    assert_eq!(loaded.lora, model.lora);
    assert_eq!(logits(&loaded), logits(&model));

    // What this engine does not compute is refused by name, and a bad file leaves the model untouched.
    let edit = |key: &str, value: serde_json::Value| {
        let mut j = json.clone();
        j[key] = value;
        std::fs::write(
            dir.join("adapter_config.json"),
            serde_json::to_vec(&j).unwrap(),
        )
        .unwrap();
    };
    for (key, value, says) in [
        ("use_dora", serde_json::json!(true), "use_dora"),
        ("bias", serde_json::json!("all"), "bias"),
        (
            "target_modules",
            serde_json::json!(["q_proj", "lm_head"]),
            "lm_head",
        ),
        ("r", serde_json::json!(4), "expected [4, 64]"),
    ] {
        edit(key, value);
        let mut fresh = Llama::new(tiny(), DType::F32, 1).unwrap();
        let err = load_adapter(&mut fresh, &dir).unwrap_err().to_string();
        assert!(err.contains(says), "{key}: {err}");
        assert!(fresh.lora.is_none() && fresh.blocks[0].lora.iter().all(Option::is_none));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
