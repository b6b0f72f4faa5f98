//! Samples text from a model with the KV cache, streaming it as it comes; `--chat` talks to it, a turn per line
//! of input, through its chat template.
//!
//! `cargo run --release --example generate -- --checkpoint out/checkpoints --prompt "ROMEO:"`
//! `cargo run --release --example generate -- --checkpoint model.gguf --chat --system "Be brief."`

use clap::Parser;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tapegrad::llama::chat::Message;
use tapegrad::llama::checkpoint::latest_dir;
use tapegrad::llama::generate::{generate_with, Sampling};
use tapegrad::llama::pretrained::{load_pretrained_with, Quantization, TextTokenizer};
use tapegrad::llama::stream::TextStream;
use tapegrad::llama::{KvCache, Llama};
use tapegrad::{Error, Result, Rng};

#[derive(Parser, Debug)]
#[command(about = "Generate text from a tapegrad checkpoint, or chat with it")]
struct Args {
    /// A checkpoint folder (or a folder of checkpoints with a `latest` file), a Hugging Face folder, or a
    /// GGUF file.
    #[arg(long, default_value = "out/checkpoints")]
    checkpoint: PathBuf,
    #[arg(long, default_value = "ROMEO:\n")]
    prompt: String,
    /// New tokens to generate (per turn with --chat).
    #[arg(long, default_value_t = 200)]
    max_tokens: usize,
    /// 0 for greedy decoding.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Drop tokens less likely than this times the most likely one (0: none).
    #[arg(long, default_value_t = 0.0)]
    min_p: f64,
    /// Penalize tokens already in the context (CTRL's penalty: 1 is none, 1.1 is mild).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f64,
    /// Stop when the text reaches this string (repeatable); the string is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// The same seed and settings give the same text.
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
    /// Talk to the model: each line of standard input is a user turn, and the answer streams back; the
    /// conversation is rendered with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// With --chat: a system message opening the conversation.
    #[arg(long)]
    system: Option<String>,
    /// With --chat: a Jinja chat template file to use instead of the model's own (or for a model without one).
    #[arg(long)]
    chat_template: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty,
    };
    sampling.check()?;
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
    let prompt = tokenizer.encode_prompt(&args.prompt);
    if !args.chat {
        // The context this generation needs and no more; then the loading temporaries go back to the system.
        model.limit_context(prompt.len() + args.max_tokens)?;
    }
    tapegrad::backend::cpu::release_freed_memory();
    let model = &model;
    let generation = Generation {
        model,
        tokenizer: &tokenizer,
        sampling,
        max_tokens: args.max_tokens,
        stop_ids: tokenizer
            .eos_id()
            .filter(|_| !args.ignore_eos)
            .into_iter()
            .collect(),
        stops: args.stop.clone(),
    };
    let mut rng = Rng::new(args.seed);
    if args.chat {
        return chat(&args, &path, &generation, &mut rng);
    }
    let prefill = if args.timing {
        let start = Instant::now();
        tapegrad::no_grad(|| {
            let mut cache = KvCache::new();
            model.forward_last(&prompt, 1, prompt.len(), Some(&mut cache))
        })?;
        Some(start.elapsed().as_secs_f64())
    } else {
        None
    };
    print!("{}", args.prompt);
    let mut cache = KvCache::with_capacity(prompt.len() + args.max_tokens);
    let start = Instant::now();
    let new = generation.answer(&mut cache, &prompt, &mut rng)?.0;
    let secs = start.elapsed().as_secs_f64();
    println!();
    eprintln!(
        "{} prompt + {} new tokens in {:.2} s: {:.0} tokens/s (KV cache, {} threads); peak RSS {}",
        prompt.len(),
        new,
        secs,
        new as f64 / secs,
        rayon::current_num_threads(),
        peak_rss()
    );
    if let Some(prefill) = prefill {
        eprintln!(
            "prompt: {:.1} tokens/s; generation: {:.1} tokens/s",
            prompt.len() as f64 / prefill,
            new as f64 / (secs - prefill).max(1e-9)
        );
    }
    Ok(())
}

/// What every answer is generated with.
struct Generation<'a> {
    model: &'a Llama,
    tokenizer: &'a TextTokenizer,
    sampling: Sampling,
    max_tokens: usize,
    /// Token ids that end an answer (end of sequence), not printed.
    stop_ids: Vec<u32>,
    /// Texts that end an answer, not printed.
    stops: Vec<String>,
}

impl Generation<'_> {
    /// Continues `context` (reusing what `cache` holds of it), printing the text as it comes; returns the
    /// number of new tokens and the text.
    fn answer(
        &self,
        cache: &mut KvCache,
        context: &[u32],
        rng: &mut Rng,
    ) -> Result<(usize, String)> {
        let mut stream = TextStream::new(self.tokenizer, &self.stops);
        let mut stdout = std::io::stdout();
        let new = generate_with(
            self.model,
            cache,
            context,
            self.max_tokens,
            self.sampling,
            &self.stop_ids,
            rng,
            |id| {
                if self.stop_ids.contains(&id) {
                    return Ok(false);
                }
                let (text, stopped) = stream.push(id);
                print!("{text}");
                stdout
                    .flush()
                    .map_err(|e| Error::io("standard output", e))?;
                Ok(!stopped)
            },
        )?;
        print!("{}", stream.finish());
        Ok((new.len(), stream.text().to_string()))
    }
}

/// The conversation loop of `--chat`: a user turn per line of standard input until it ends.
fn chat(args: &Args, path: &Path, generation: &Generation, rng: &mut Rng) -> Result<()> {
    let tokenizer = generation.tokenizer;
    let template = tokenizer
        .chat_template_or_file(args.chat_template.as_deref())
        .map_err(|e| Error::invalid("--chat", format!("{}: {e}", path.display())))?;
    let mut messages: Vec<Message> = args
        .system
        .iter()
        .map(|s| Message::new("system", s.as_str()))
        .collect();
    eprintln!("chatting: one message per line; end the input (Ctrl-D) to stop");
    let mut cache = KvCache::new();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        eprint!("> ");
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| Error::io("standard input", e))?;
        if line.trim().is_empty() {
            continue;
        }
        messages.push(Message::new("user", line));
        let context = tokenizer.encode_with_special(&template.render(&messages, true)?);
        let start = Instant::now();
        let (new, text) = generation.answer(&mut cache, &context, rng)?;
        println!();
        eprintln!(
            "[{new} tokens, {:.1} tokens/s; context {} tokens]",
            new as f64 / start.elapsed().as_secs_f64(),
            context.len() + new
        );
        messages.push(Message::new("assistant", text));
    }
    eprintln!();
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
