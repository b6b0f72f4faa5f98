//! The LLaMA module: overfitting one batch, checkpoint round trips, KV-cache generation against the full
//! forward pass, and the training loop on the bundled corpus.

use std::path::PathBuf;
use tapegrad::llama::checkpoint::{load_checkpoint, load_model, save_checkpoint, save_model};
use tapegrad::llama::train::{TrainOptions, Trainer};
use tapegrad::llama::KvCache;
use tapegrad::llama::{Config, Llama};
use tapegrad::optim::{AdamW, AdamWConfig, CosineSchedule};
use tapegrad::{no_grad, DType, Tape, Tensor};

fn tiny() -> Config {
    Config::preset("tiny").unwrap().config
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tapegrad-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec()
}

#[test]
fn tiny_overfits_one_batch() {
    let mut model = Llama::new(tiny(), DType::F32, 1).unwrap();
    let (b, t) = (2, 16);
    let ids: Vec<u32> = (0..b * t + 1).map(|i| (i * 37 % 500) as u32).collect();
    let inputs: Vec<u32> = ids[..b * t].to_vec();
    let targets: Vec<u32> = ids[1..].to_vec();
    let mut sizes = Vec::new();
    model.visit(&mut |_, p| sizes.push(p.numel()));
    let mut opt = AdamW::new(
        AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        },
        &sizes,
    );
    let schedule = CosineSchedule::new(3e-3, 10, 300, 0.1);
    let mut last = f64::INFINITY;
    for step in 0..300 {
        let tape = Tape::new();
        let leaves = model.watch(&tape);
        let loss = model.loss(&inputs, &targets, b, t).unwrap();
        model.unwatch();
        let mut grads = tape.backward(&loss).unwrap();
        let grads: Vec<Tensor> = leaves.iter().map(|l| grads.remove(l).unwrap()).collect();
        opt.step(&mut model.params_mut(), &grads, schedule.lr(step))
            .unwrap();
        last = loss.item().unwrap();
        if last < 0.05 {
            break;
        }
    }
    assert!(last < 0.05, "loss after training on one batch: {last}");
}

#[test]
fn kv_cache_and_last_position_logits_match_the_full_forward() {
    let model = Llama::new(tiny(), DType::F32, 2).unwrap();
    let ids: Vec<u32> = vec![5, 17, 300, 2, 99, 41, 7, 8, 250, 3];
    no_grad(|| {
        let full = model.forward(&ids, 1, ids.len(), None).unwrap();
        let mut cache = KvCache::new();
        // A prompt of 4, then one token at a time.
        let mut rows = vec![model.forward(&ids[..4], 1, 4, Some(&mut cache)).unwrap()];
        for &id in &ids[4..] {
            rows.push(model.forward(&[id], 1, 1, Some(&mut cache)).unwrap());
        }
        let cached = Tensor::cat(&rows, 1).unwrap();
        for (a, b) in values(&full).iter().zip(values(&cached)) {
            // f32, same arithmetic per position except the summation order over keys: 1e-4 absolute.
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        assert_eq!(cache.len(), ids.len());
        // The last positions alone, for a batch of two, are those positions of the full logits.
        let two: Vec<u32> = ids.iter().chain(ids.iter().rev()).copied().collect();
        let full = model.forward(&two, 2, ids.len(), None).unwrap();
        let last = model.forward_last(&two, 2, ids.len(), None).unwrap();
        assert_eq!(last.shape(), &[2, 1, 512]);
        let expected = full.narrow(1, ids.len() - 1, 1).unwrap();
        for (a, b) in values(&expected).iter().zip(values(&last)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    });
}

#[test]
fn model_and_training_checkpoints_round_trip() {
    let dir = temp_dir("ckpt");
    let mut config = tiny();
    config.tie_embeddings = true;
    let model = Llama::new(config, DType::F32, 3).unwrap();
    save_model(&model, &dir.join("model")).unwrap();
    let loaded = load_model(&dir.join("model")).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    model.visit(&mut |n, t| a.push((n.to_string(), values(t))));
    loaded.visit(&mut |n, t| b.push((n.to_string(), values(t))));
    assert_eq!(a, b);
    assert!(
        !a.iter().any(|(n, _)| n == "lm_head.weight"),
        "tied models store no head"
    );

    let sizes: Vec<usize> = a.iter().map(|(_, v)| v.len()).collect();
    let mut opt = AdamW::new(AdamWConfig::default(), &sizes);
    opt.step = 7;
    opt.m[0][3] = 0.25;
    opt.v[1][0] = 0.5;
    let state = serde_json::json!({"position": 42});
    for step in [1, 2, 3, 4] {
        save_checkpoint(&dir.join("ckpts"), step, &model, &opt, &state, 2, &|_| {
            Ok(())
        })
        .unwrap();
    }
    let kept: Vec<_> = std::fs::read_dir(dir.join("ckpts"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(kept.len(), 3, "two checkpoints and `latest`: {kept:?}");
    let ckpt = load_checkpoint(&dir.join("ckpts")).unwrap();
    assert_eq!(ckpt.step, 4);
    assert_eq!(ckpt.optimizer.step, 7);
    assert_eq!(ckpt.optimizer.m, opt.m);
    assert_eq!(ckpt.optimizer.v, opt.v);
    assert_eq!(ckpt.state, state);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn training_on_the_bundled_corpus_resumes_exactly() {
    let dir = temp_dir("train");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    // A small slice of the corpus keeps the test quick; the full files are used by the main job.
    let text = std::fs::read_to_string(root.join("shakespeare.txt")).unwrap();
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, &text[..200_000]).unwrap();
    let options = TrainOptions {
        config: tiny(),
        steps: 6,
        batch_size: 2,
        seq_len: 32,
        lr: 1e-3,
        warmup_steps: 2,
        final_lr_fraction: 0.1,
        data: vec![(corpus, 1.0)],
        cache_dir: dir.join("cache"),
        seed: 5,
        optimizer: AdamWConfig::default(),
        ..Default::default()
    };
    let mut straight = Trainer::new(options.clone()).unwrap();
    let losses: Vec<f64> = (0..6)
        .map(|_| straight.train_step().unwrap().loss)
        .collect();
    assert!(losses.iter().all(|l| l.is_finite()));

    let mut first = Trainer::new(options.clone()).unwrap();
    for _ in 0..3 {
        first.train_step().unwrap();
    }
    first.save(&dir.join("ckpts"), 3).unwrap();
    let mut resumed = Trainer::resume(&dir.join("ckpts"), options).unwrap();
    assert_eq!(resumed.step, 3);
    let rest: Vec<f64> = (0..3).map(|_| resumed.train_step().unwrap().loss).collect();
    assert_eq!(
        rest,
        losses[3..].to_vec(),
        "a resumed run repeats the uninterrupted one bit for bit"
    );
    let eval = resumed.evaluate(2).unwrap();
    assert!(eval.bits_per_byte.is_finite() && eval.bits_per_byte > 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_checkpoint_is_detected_and_the_previous_intact_one_used() {
    let dir = temp_dir("torn");
    let model = Llama::new(tiny(), DType::F32, 6).unwrap();
    let mut sizes = Vec::new();
    model.visit(&mut |_, p| sizes.push(p.numel()));
    let opt = AdamW::new(AdamWConfig::default(), &sizes);
    let root = dir.join("ckpts");
    for step in [10, 20] {
        save_checkpoint(
            &root,
            step,
            &model,
            &opt,
            &serde_json::json!({}),
            3,
            &|_| Ok(()),
        )
        .unwrap();
    }
    // Tear the newest checkpoint's weights: same length, one byte changed near the end.
    let weights = root.join("step-00000020/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    let err = load_checkpoint(&root)
        .err()
        .expect("the torn file is detected")
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("checksum"),
        "{err}"
    );
    let (ckpt, passed_over) = tapegrad::llama::checkpoint::load_latest_intact(&root).unwrap();
    assert_eq!(ckpt.step, 10);
    assert_eq!(passed_over.len(), 1);
    assert!(passed_over[0].contains("step-00000020"), "{passed_over:?}");
    // A truncated file is detected the same way.
    let truncated = root.join("step-00000010/optimizer.safetensors");
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = tapegrad::llama::checkpoint::load_latest_intact(&root)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no intact checkpoint"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_non_finite_loss_skips_the_update_and_is_counted() {
    let dir = temp_dir("nan");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let text = std::fs::read_to_string(root.join("austen.txt")).unwrap();
    std::fs::write(dir.join("corpus.txt"), &text[..100_000]).unwrap();
    let options = TrainOptions {
        config: tiny(),
        steps: 4,
        batch_size: 2,
        seq_len: 16,
        lr: 1e-3,
        warmup_steps: 1,
        final_lr_fraction: 0.1,
        data: vec![(dir.join("corpus.txt"), 1.0)],
        cache_dir: dir.join("cache"),
        seed: 2,
        optimizer: AdamWConfig::default(),
        ..Default::default()
    };
    let mut trainer = Trainer::new(options).unwrap();
    assert!(!trainer.train_step().unwrap().skipped);
    // Poison one gain: every loss from now on is NaN.
    trainer.model.norm.data_mut::<f32>().unwrap()[0] = f32::NAN;
    let before = values(trainer.model.blocks[0].wq.dense().unwrap());
    for expected in 1..=2 {
        let stats = trainer.train_step().unwrap();
        assert!(stats.skipped && stats.loss.is_nan());
        assert_eq!(
            (trainer.skipped_steps, trainer.skipped_in_a_row),
            (expected, expected)
        );
    }
    assert_eq!(
        values(trainer.model.blocks[0].wq.dense().unwrap()),
        before,
        "skipped steps change no weight"
    );
    assert_eq!(trainer.optimizer.step, 1, "nor the optimizer's step count");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_whose_shapes_do_not_fit_its_config_is_an_error_naming_file_and_tensor() {
    let dir = temp_dir("misfit");
    let model = Llama::new(tiny(), DType::F32, 8).unwrap();
    save_model(&model, &dir).unwrap();
    let config_path = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    json["intermediate_size"] = 256.into();
    std::fs::write(&config_path, json.to_string()).unwrap();
    let err = load_model(&dir)
        .err()
        .expect("176-wide MLP weights do not fit 256")
        .to_string();
    assert!(err.contains(dir.to_str().unwrap()), "{err}");
    assert!(
        err.contains("mlp.gate_proj.weight is [176, 64], expected [256, 64]"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Mixed precision (`activations = Some(BF16)`): the parameters and their gradients stay f32, the loss is within
/// bf16 rounding of the f32 model's, and training still learns. (The same code path runs on a GPU, where the
/// bf16 ops run natively.)
#[test]
fn bf16_activations_keep_f32_parameters_and_learn() {
    let (b, t) = (2, 16);
    let ids: Vec<u32> = (0..b * t + 1).map(|i| (i * 37 % 500) as u32).collect();
    let mut losses = Vec::new();
    for activations in [None, Some(DType::BF16)] {
        let mut model = Llama::new(tiny(), DType::F32, 1).unwrap();
        model.activations = activations;
        let mut sizes = Vec::new();
        model.visit(&mut |_, p| sizes.push(p.numel()));
        let mut opt = AdamW::new(AdamWConfig::default(), &sizes);
        let mut run = Vec::new();
        for _ in 0..8 {
            let tape = Tape::new();
            let leaves = model.watch(&tape);
            let loss = model.loss(&ids[..b * t], &ids[1..], b, t).unwrap();
            model.unwatch();
            assert_eq!(loss.dtype(), DType::F32);
            let mut grads = tape.backward(&loss).unwrap();
            let grads: Vec<Tensor> = leaves.iter().map(|l| grads.remove(l).unwrap()).collect();
            assert!(grads.iter().all(|g| g.dtype() == DType::F32));
            opt.step(&mut model.params_mut(), &grads, 3e-3).unwrap();
            run.push(loss.item().unwrap());
        }
        losses.push(run);
    }
    let (f32_run, bf16_run) = (&losses[0], &losses[1]);
    assert_ne!(bf16_run[0], f32_run[0], "the activations really are bf16");
    assert!(
        (bf16_run[0] - f32_run[0]).abs() <= 0.01 * f32_run[0],
        "{bf16_run:?} vs {f32_run:?}"
    );
    assert!(
        bf16_run[7] < bf16_run[0] - 0.5,
        "bf16 activations learn: {bf16_run:?}"
    );
}

/// The loss and every parameter gradient of one training step of `tiny`, as bits.
fn step_bits(model: &mut Llama, inputs: &[u32], targets: &[u32], b: usize, t: usize) -> Vec<u64> {
    let tape = Tape::new();
    let leaves = model.watch(&tape);
    let loss = model.loss(inputs, targets, b, t).unwrap();
    model.unwatch();
    let grads = tape.backward(&loss).unwrap();
    let mut bits = vec![loss.item().unwrap().to_bits()];
    for leaf in &leaves {
        bits.extend(values(grads.get(leaf).unwrap()).iter().map(|v| v.to_bits()));
    }
    bits
}

#[test]
fn every_kernel_of_a_training_step_writes_its_whole_output() {
    use tapegrad::backend::cpu::recycle::poison_buffers;
    let mut model = Llama::new(tiny(), DType::F32, 5).unwrap();
    let (b, t) = (3, 40);
    let ids: Vec<u32> = (0..b * t + 1).map(|i| (i * 53 % 480) as u32).collect();
    let (inputs, targets) = (&ids[..b * t], &ids[1..]);
    let clean = step_bits(&mut model, inputs, targets, b, t);
    // Output buffers now start as NaN: any element a kernel leaves unwritten would reach the loss or a
    // gradient.
    poison_buffers(true);
    let poisoned = step_bits(&mut model, inputs, targets, b, t);
    poison_buffers(false);
    assert!(clean.iter().all(|&x| f64::from_bits(x).is_finite()));
    assert_eq!(clean, poisoned);
}
