//! Encodes a text file with a model's tokenizer and reports the speed (one thread, as `tokenizers`' `encode`
//! runs): a checkpoint or Hugging Face folder (`tokenizer.json`), or a GGUF file.
//!
//! `cargo run --release --example tokenize -- --tokenizer target/tokenizers/llama-3 --text data/austen.txt`

use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;
use tapegrad::io::gguf::Gguf;
use tapegrad::llama::pretrained::TextTokenizer;
use tapegrad::{Error, Result};

#[derive(Parser, Debug)]
#[command(about = "Encode a text file with a model's tokenizer and time it")]
struct Args {
    /// A folder with a tokenizer (ours or Hugging Face's `tokenizer.json`), or a GGUF file.
    #[arg(long)]
    tokenizer: PathBuf,
    /// The text file to encode.
    #[arg(long)]
    text: PathBuf,
    /// Times to encode it (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Write the ids here as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let tokenizer = if args.tokenizer.is_dir() {
        TextTokenizer::load(&args.tokenizer)?.ok_or_else(|| {
            Error::invalid(
                "--tokenizer",
                format!("{} holds no tokenizer", args.tokenizer.display()),
            )
        })?
    } else {
        let file = Gguf::open(&args.tokenizer)?;
        TextTokenizer::Vocab(
            Box::new(tapegrad::data::bpe_vocab::VocabTokenizer::from_gguf(&file)?),
            Vec::new(),
        )
    };
    let text = std::fs::read_to_string(&args.text).map_err(|e| Error::io(&args.text, e))?;
    let mut times = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let start = Instant::now();
        ids = tokenizer.encode_with_special(&text);
        times.push(start.elapsed().as_secs_f64());
    }
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    let mb_s = |secs: f64| text.len() as f64 / secs / 1e6;
    println!(
        "{}: {} bytes -> {} ids: first {:.2} MB/s, best of {} {:.2} MB/s (later runs reuse the piece cache)",
        args.text.display(),
        text.len(),
        ids.len(),
        mb_s(times[0]),
        times.len(),
        mb_s(best)
    );
    if let Some(out) = &args.out {
        let json = serde_json::to_vec(&ids).expect("ids serialize");
        std::fs::write(out, json).map_err(|e| Error::io(out, e))?;
    }
    Ok(())
}
