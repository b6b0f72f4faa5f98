//! Samples text from a trained checkpoint with the KV cache.
//!
//! `cargo run --release --example generate -- --checkpoint out/checkpoints --prompt "ROMEO:"`

use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;
use tapegrad::llama::checkpoint::latest_dir;
use tapegrad::llama::generate::{generate, Sampling};
use tapegrad::llama::pretrained::{load_pretrained_with, Quantization};
use tapegrad::{Error, Result, Rng};

#[derive(Parser, Debug)]
#[command(about = "Generate text from a tapegrad checkpoint")]
struct Args {
    /// A checkpoint folder (or a folder of checkpoints with a `latest` file), a Hugging Face folder, or a
    /// GGUF file.
    #[arg(long, default_value = "out/checkpoints")]
    checkpoint: PathBuf,
    #[arg(long, default_value = "ROMEO:\n")]
    prompt: String,
    /// New tokens to generate.
    #[arg(long, default_value_t = 200)]
    max_tokens: usize,
    /// 0 for greedy decoding.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How the matrices are held: `keep` (a GGUF file's quantized blocks stay as they are, read by the
    /// quantized kernels), `dense` (everything dequantized to f32), or a format to quantize the projections to
    /// (`q8_0`, `q4_0`, `q4_1`).
    #[arg(long, default_value = "keep")]
    weights: String,
    /// Keep generating past the end-of-sequence token (for timing a fixed number of tokens).
    #[arg(long)]
    ignore_eos: bool,
    /// Also time the prompt alone first, and report prompt and generation speeds apart (as llama-bench does).
    #[arg(long)]
    timing: bool,
    /// LoRA adapters to add to the model (a folder in PEFT's layout: ours or PEFT's).
    #[arg(long)]
    adapter: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        return Err(Error::invalid(
            "--top-p",
            format!("{} is not in (0, 1]", args.top_p),
        ));
    }
    let quantization = Quantization::parse("--weights", &args.weights)?;
    tapegrad::backend::cpu::keep_freed_memory();
    let path = if args.checkpoint.is_dir() {
        latest_dir(&args.checkpoint)?
    } else {
        args.checkpoint.clone()
    };
    let started = Instant::now();
    let (mut model, tokenizer) = load_pretrained_with(&path, quantization)?;
    if let Some(dir) = &args.adapter {
        tapegrad::llama::peft::load_adapter(&mut model, dir)?;
    }
    let quantized = model.quantized_weights();
    eprintln!(
        "loaded {} in {:.2} s ({})",
        path.display(),
        started.elapsed().as_secs_f64(),
        if quantized.is_empty() {
            "dense f32".to_string()
        } else {
            format!("quantized matrices: {quantized:?}")
        }
    );
    let tokenizer = tokenizer.ok_or_else(|| {
        Error::invalid(
            "--checkpoint",
            format!("{} has no tokenizer", path.display()),
        )
    })?;
    let prompt = tokenizer.encode(&args.prompt);
    let sampling = Sampling {
        temperature: args.temperature,
        top_p: args.top_p,
    };
    let prefill = if args.timing {
        let start = Instant::now();
        tapegrad::no_grad(|| {
            let mut cache = tapegrad::llama::KvCache::new();
            model.forward_last(&prompt, 1, prompt.len(), Some(&mut cache))
        })?;
        Some(start.elapsed().as_secs_f64())
    } else {
        None
    };
    let start = Instant::now();
    let out = generate(
        &model,
        &prompt,
        args.max_tokens,
        sampling,
        tokenizer.eos_id().filter(|_| !args.ignore_eos),
        &mut Rng::new(args.seed),
    )?;
    let secs = start.elapsed().as_secs_f64();
    println!("{}{}", args.prompt, tokenizer.decode(&out));
    eprintln!(
        "{} prompt + {} new tokens in {:.2} s: {:.0} tokens/s (KV cache, {} threads); peak RSS {}",
        prompt.len(),
        out.len(),
        secs,
        out.len() as f64 / secs,
        rayon::current_num_threads(),
        peak_rss()
    );
    if let Some(prefill) = prefill {
        eprintln!(
            "prompt: {:.1} tokens/s; generation: {:.1} tokens/s",
            prompt.len() as f64 / prefill,
            out.len() as f64 / (secs - prefill).max(1e-9)
        );
    }
    Ok(())
}

/// The process's peak resident set (`VmHWM` of /proc/self/status), where the system reports it.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "not reported".into())
}
