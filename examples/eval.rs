//! Evaluates a model: perplexity and bits per byte on a text file, and accuracy on benchmarks scored as
//! lm-evaluation-harness scores them (HellaSwag, PIQA, ARC, WinoGrande, BoolQ, OpenBookQA, SIQA, LAMBADA,
//! MMLU; data from `scripts/fetch-evals.sh`) or on a JSONL multiple-choice file of our own.
//!
//! `cargo run --release --example eval -- --model target/models/SmolLM2-135M-Instruct.Q4_1.gguf --tasks hellaswag,piqa --limit 200`
//! `cargo run --release --example eval -- --model out/checkpoints --text data/austen.txt --tasks data/tasks/english-basics.jsonl`

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use tapegrad::llama::checkpoint::latest_dir;
use tapegrad::llama::eval::{read_task, score_task, score_text};
use tapegrad::llama::pretrained::{load_pretrained_with, Quantization};
use tapegrad::llama::tasks::{self, Options, Task, TaskResult};
use tapegrad::{Device, Error, Result};

#[derive(Parser, Debug)]
#[command(about = "Perplexity, bits per byte and benchmark accuracy of a LLaMA model")]
struct Args {
    /// A checkpoint folder (or a folder of checkpoints with `latest`), a Hugging Face folder, or a GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// LoRA adapters to add to the model (a folder in PEFT's layout).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// How the matrices are held: `keep` (a GGUF file's blocks as they are), `dense`, or a format to
    /// quantize the projections to (`q8_0`, `q4_0`, `q4_1`).
    #[arg(long, default_value = "keep")]
    weights: String,
    /// `cpu` or `cuda[:N]`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// A UTF-8 text file to score.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Score at most this many bytes of the text (0: all).
    #[arg(long, default_value_t = 200_000)]
    max_bytes: usize,
    /// Window length for the text.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Comma-separated benchmarks (`hellaswag,piqa,arc_easy,arc_challenge,winogrande,boolq,openbookqa,siqa,
    /// lambada,mmlu`, or `all`) and JSONL multiple-choice files of our own.
    #[arg(long)]
    tasks: Option<String>,
    /// The folder `scripts/fetch-evals.sh` filled.
    #[arg(long, default_value = "target/evals")]
    data: PathBuf,
    /// Examples in each prompt (default: 5 for MMLU, 0 elsewhere; only MMLU has examples to give).
    #[arg(long)]
    shots: Option<usize>,
    /// Score at most this many documents per task (per subject for MMLU).
    #[arg(long)]
    limit: Option<usize>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Run each document's shared prefix once through a KV cache (`on`, the CPU's way) or every request
    /// whole in padded batches (`off`, the GPU's way); `auto` picks by device.
    #[arg(long, default_value = "auto")]
    shared_prefix: String,
    /// Write the benchmark figures as a JSON object keyed by task name.
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
    if args.text.is_none() && args.tasks.is_none() {
        return Err(Error::invalid("--text", "give --text, --tasks or both"));
    }
    // The task list is checked before the model loads.
    let mut benchmarks = Vec::new();
    let mut files = Vec::new();
    for item in args.tasks.iter().flat_map(|t| t.split(',')) {
        if item.ends_with(".jsonl") {
            files.push(PathBuf::from(item));
        } else if !item.trim().is_empty() {
            benchmarks.extend(tasks::parse_list(item)?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    benchmarks.retain(|t| seen.insert(*t));
    let device: Device = args.device.parse()?;
    let path = if args.model.is_dir() {
        latest_dir(&args.model)?
    } else {
        args.model.clone()
    };
    let (mut model, tokenizer) =
        load_pretrained_with(&path, Quantization::parse("--weights", &args.weights)?)?;
    if let Some(dir) = &args.adapter {
        tapegrad::llama::peft::load_adapter(&mut model, dir)?;
    }
    model.to_device(device)?;
    let tokenizer = tokenizer
        .ok_or_else(|| Error::invalid("--model", format!("{} has no tokenizer", path.display())))?;
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
    for task_path in &files {
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
    let mut options = Options::for_model(&model, args.batch);
    options.shared_prefix = match args.shared_prefix.as_str() {
        "auto" => options.shared_prefix,
        "on" => true,
        "off" => false,
        other => {
            return Err(Error::invalid(
                "--shared-prefix",
                format!("{other:?} is not auto, on or off"),
            ))
        }
    };
    let mut results: Vec<TaskResult> = Vec::new();
    for task in benchmarks {
        let shots = args.shots.unwrap_or(task.default_shots());
        let docs = tasks::load(task, &args.data, shots, args.limit)?;
        let bar = ProgressBar::new(docs.len() as u64).with_style(
            ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(task.name());
        let result = tasks::evaluate(&model, &tokenizer, task, &docs, options, &mut || bar.inc(1))?;
        bar.finish_and_clear();
        eprintln!("{}", line(task, shots, &result));
        results.push(result);
    }
    if !results.is_empty() {
        print_table(&results);
    }
    if let Some(out) = &args.out {
        let object: serde_json::Map<String, serde_json::Value> = results
            .iter()
            .map(|r| {
                (
                    r.task.clone(),
                    serde_json::to_value(r).expect("plain numbers"),
                )
            })
            .collect();
        let text = serde_json::to_string_pretty(&object).expect("plain numbers");
        std::fs::write(out, text + "\n").map_err(|e| Error::io(out, e))?;
    }
    Ok(())
}

/// One task's figures as a line.
fn line(task: Task, shots: usize, r: &TaskResult) -> String {
    let mut s = format!(
        "{} ({} split, {shots}-shot): n {}, acc {:.4} ± {:.4}",
        r.task,
        task.split(),
        r.n,
        r.acc,
        r.acc_stderr
    );
    if let (Some(a), Some(se)) = (r.acc_norm, r.acc_norm_stderr) {
        s += &format!(", acc_norm {a:.4} ± {se:.4}");
    }
    if let Some(p) = r.perplexity {
        s += &format!(", perplexity {p:.3}");
    }
    if r.clipped > 0 {
        s += &format!(
            ", {} continuations longer than the context scored on their last tokens",
            r.clipped
        );
    }
    s + &format!(", {:.1} s ({:.2} examples/s)", r.seconds, r.examples_per_s)
}

/// The results as a Markdown table, in percent as the paper gives them.
fn print_table(results: &[TaskResult]) {
    println!("| task | n | acc % | acc_norm % | seconds | examples/s |");
    println!("|---|---|---|---|---|---|");
    for r in results {
        let norm = match (r.acc_norm, r.acc_norm_stderr) {
            (Some(a), Some(se)) => format!("{:.1} ± {:.1}", 100.0 * a, 100.0 * se),
            _ => "–".into(),
        };
        println!(
            "| {} | {} | {:.1} ± {:.1} | {norm} | {:.0} | {:.2} |",
            r.task,
            r.n,
            100.0 * r.acc,
            100.0 * r.acc_stderr,
            r.seconds,
            r.examples_per_s
        );
    }
}
