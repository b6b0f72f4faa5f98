//! Evaluates a model: perplexity and bits per byte on a text file, and multiple-choice accuracy (raw and
//! length-normalized) on a JSONL task, scoring each choice by its log-likelihood given the context.
//!
//! `cargo run --release --example eval -- --model out/checkpoints --text data/austen.txt --tasks data/tasks/english-basics.jsonl`

use clap::Parser;
use std::path::PathBuf;
use tapegrad::llama::checkpoint::latest_dir;
use tapegrad::llama::eval::{read_task, score_task, score_text};
use tapegrad::llama::pretrained::load_pretrained;
use tapegrad::{Error, Result};

#[derive(Parser, Debug)]
#[command(about = "Perplexity, bits per byte and multiple-choice accuracy of a LLaMA model")]
struct Args {
    /// A checkpoint folder (or a folder of checkpoints with `latest`), a Hugging Face folder, or a GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// A UTF-8 text file to score.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Score at most this many bytes of the text (0: all).
    #[arg(long, default_value_t = 200_000)]
    max_bytes: usize,
    /// A JSONL multiple-choice task.
    #[arg(long)]
    tasks: Option<PathBuf>,
    /// Window length for the text.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    tapegrad::backend::cpu::keep_freed_memory();
    let path = if args.model.is_dir() {
        latest_dir(&args.model)?
    } else {
        args.model.clone()
    };
    let (model, tokenizer) = load_pretrained(&path)?;
    let tokenizer = tokenizer
        .ok_or_else(|| Error::invalid("--model", format!("{} has no tokenizer", path.display())))?;
    if args.text.is_none() && args.tasks.is_none() {
        return Err(Error::invalid("--text", "give --text, --tasks or both"));
    }
    if let Some(text_path) = &args.text {
        let text = std::fs::read_to_string(text_path).map_err(|e| Error::io(text_path, e))?;
        let mut end = if args.max_bytes == 0 {
            text.len()
        } else {
            args.max_bytes.min(text.len())
        };
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let score = score_text(&model, &tokenizer, &text[..end], args.seq_len)?;
        println!(
            "{}: {} tokens, {:.4} nats/token, perplexity {:.2}, {:.4} bits/byte",
            text_path.display(),
            score.tokens,
            score.nats_per_token,
            score.perplexity,
            score.bits_per_byte
        );
    }
    if let Some(task_path) = &args.tasks {
        let questions = read_task(task_path)?;
        let score = score_task(&model, &tokenizer, &questions)?;
        println!(
            "{}: {} questions, accuracy {:.3}, length-normalized {:.3}",
            task_path.display(),
            score.questions,
            score.accuracy,
            score.accuracy_normalized
        );
    }
    Ok(())
}
