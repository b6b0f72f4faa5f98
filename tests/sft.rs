//! Supervised finetuning end to end: SmolLM2-135M-Instruct with LoRA over its own Q4_1 blocks (QLoRA) learns
//! the bundled pirate conversations (`data/sft/pirate.jsonl`) through its chat template, the loss on the
//! assistant's turns only — the held-out SFT loss falls, and a resumed run continues bit for bit.

mod common;

use std::path::PathBuf;
use tapegrad::llama::pretrained::Quantization;
use tapegrad::llama::sft::SftData;
use tapegrad::llama::train::{TrainOptions, Trainer};
use tapegrad::llama::LoraConfig;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn trainer(model: &std::path::Path, dir: &std::path::Path) -> Trainer {
    let options = TrainOptions {
        steps: 8,
        batch_size: 2,
        seq_len: 64,
        lr: 2e-3,
        warmup_steps: 1,
        data: vec![(root().join("data/shakespeare.txt"), 1.0)],
        cache_dir: dir.join("cache"),
        seed: 5,
        lora: Some(LoraConfig::new(8)),
        weights: Quantization::Keep,
        ..Default::default()
    };
    let mut trainer = Trainer::from_pretrained(model, options).unwrap();
    let template = trainer.tokenizer.chat_template().unwrap().unwrap();
    let sft = SftData::load(
        &root().join("data/sft/pirate.jsonl"),
        &template,
        &trainer.tokenizer,
        0.1,
        5,
    )
    .unwrap();
    assert_eq!((sft.train.len(), sft.val.len()), (432, 48));
    trainer.sft = Some(sft);
    trainer
}

#[test]
fn qlora_sft_on_smollm2_learns_the_assistants_turns_and_resumes_exactly() {
    let Some(model) = common::smollm2_path() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("tapegrad-sft-{}", std::process::id()));
    let mut t = trainer(&model, &dir);
    let before = t.evaluate(2).unwrap().nats_per_token;
    let losses: Vec<f64> = (0..8).map(|_| t.train_step().unwrap().loss).collect();
    let after = t.evaluate(2).unwrap().nats_per_token;
    eprintln!("held-out SFT loss {before:.3} -> {after:.3}; steps {losses:?}");
    assert!(
        after < 0.6 * before,
        "held-out SFT loss {before} -> {after}"
    );
    // Stop after 4 steps, save, resume: the same four losses after.
    let mut first = trainer(&model, &dir);
    for _ in 0..4 {
        first.train_step().unwrap();
    }
    let ckpt = dir.join("ckpt");
    first.save(&ckpt, 2).unwrap();
    let mut resumed = Trainer::resume(&ckpt, first.options.clone()).unwrap();
    resumed.sft = first.sft.take();
    let tail: Vec<f64> = (0..4).map(|_| resumed.train_step().unwrap().loss).collect();
    assert_eq!(
        tail,
        losses[4..],
        "a resumed SFT run draws the same batches"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
