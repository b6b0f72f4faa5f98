//! Finetuning a pretrained folder with its own tokenizer, and the evaluation helpers: log-likelihoods agree
//! with the training loss, tasks are read and scored, bad task files are errors.

use std::path::PathBuf;
use tapegrad::data::Tokenizer;
use tapegrad::llama::checkpoint::{latest_dir, save_model};
use tapegrad::llama::eval::{log_likelihood, read_task, score_task, score_text};
use tapegrad::llama::pretrained::{load_pretrained, TextTokenizer};
use tapegrad::llama::train::{TrainOptions, Trainer};
use tapegrad::llama::{Config, Llama};
use tapegrad::optim::AdamWConfig;
use tapegrad::DType;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tapegrad-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny pretrained folder: a random model whose vocabulary is a tokenizer trained on `text`.
fn pretrained(dir: &std::path::Path, text: &str) -> Llama {
    let tokenizer = Tokenizer::train(&[text.as_bytes()], 400).unwrap();
    let mut config = Config::preset("tiny").unwrap().config;
    config.vocab_size = tokenizer.vocab_size();
    let model = Llama::new(config, DType::F32, 4).unwrap();
    save_model(&model, dir).unwrap();
    tokenizer.save(dir.join("tokenizer.json")).unwrap();
    model
}

fn corpus() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    std::fs::read_to_string(root.join("austen.txt")).unwrap()[..100_000].to_string()
}

#[test]
fn finetuning_a_pretrained_folder_keeps_its_tokenizer_and_config() {
    let dir = temp_dir("finetune");
    let text = corpus();
    pretrained(&dir.join("base"), &text);
    std::fs::write(dir.join("corpus.txt"), &text).unwrap();
    let options = TrainOptions {
        config: Config::preset("small").unwrap().config, // replaced by the pretrained model's
        steps: 2,
        batch_size: 2,
        seq_len: 32,
        lr: 1e-3,
        warmup_steps: 1,
        final_lr_fraction: 0.1,
        data: vec![(dir.join("corpus.txt"), 1.0)],
        cache_dir: dir.join("cache"),
        seed: 1,
        optimizer: AdamWConfig::default(),
        ..Default::default()
    };
    let mut trainer = Trainer::from_pretrained(&dir.join("base"), options).unwrap();
    assert_eq!(
        trainer.model.config.dim, 64,
        "the tiny model's width, not small's"
    );
    for _ in 0..2 {
        assert!(trainer.train_step().unwrap().loss.is_finite());
    }
    trainer.save(&dir.join("ckpts"), 2).unwrap();
    let (model, tokenizer) = load_pretrained(&latest_dir(&dir.join("ckpts")).unwrap()).unwrap();
    assert_eq!(model.config, trainer.model.config);
    assert!(matches!(tokenizer, Some(TextTokenizer::Ours(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn log_likelihood_agrees_with_the_training_loss_and_tasks_score() {
    let dir = temp_dir("eval");
    let text = corpus();
    let mut model = pretrained(&dir, &text);
    let (_, tokenizer) = load_pretrained(&dir).unwrap();
    let tokenizer = tokenizer.unwrap();
    let ids = tokenizer.encode("It is a truth universally acknowledged");
    let out = model.causal_lm(&ids, 1, ids.len(), false).unwrap();
    let ll = log_likelihood(&model, &ids, 1).unwrap();
    let expected = -out.loss * (ids.len() - 1) as f64;
    assert!(
        (ll - expected).abs() < 1e-4 * expected.abs(),
        "{ll} vs {expected}"
    );

    let score = score_text(&model, &tokenizer, &text[..5_000], 64).unwrap();
    assert!(score.perplexity.is_finite() && score.bits_per_byte > 0.0);
    // A random model is near uniform over its vocabulary: perplexity within a factor of a few of V.
    let v = model.config.vocab_size as f64;
    assert!(
        score.perplexity > v / 4.0 && score.perplexity < v * 4.0,
        "{}",
        score.perplexity
    );

    let task = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/tasks/english-basics.jsonl");
    let questions = read_task(&task).unwrap();
    assert_eq!(questions.len(), 12);
    let result = score_task(&model, &tokenizer, &questions).unwrap();
    assert_eq!(result.questions, 12);
    assert!(
        (0.0..=1.0).contains(&result.accuracy) && (0.0..=1.0).contains(&result.accuracy_normalized)
    );

    std::fs::write(
        dir.join("bad.jsonl"),
        "{\"context\": \"a\", \"choices\": [\"b\"], \"answer\": 3}\n",
    )
    .unwrap();
    let err = read_task(&dir.join("bad.jsonl")).err().unwrap().to_string();
    assert!(
        err.contains("line 1: answer 3 is not one of the choices"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
