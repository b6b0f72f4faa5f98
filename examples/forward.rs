//! Runs a model on token ids and writes what the parity tests compare: logits, the next-token loss and,
//! with `--grads`, every parameter's gradient.
//!
//! `cargo run --release --example forward -- --model <hf-dir | file.gguf> --input ids.json --out out.safetensors [--grads] [--adapter DIR]`
//! where `ids.json` is `[[id, ...], ...]` (rows of equal length). With `--text STRING` instead of `--input`, the
//! string is tokenized with the model's own tokenizer (no special tokens) and `input_ids` is written too.
//! Output tensors: `logits` f32 `[B, T, V]`, `loss` f32 `[1]`, `grad.<name>` f32, `input_ids` i64 `[1, T]`.

use clap::Parser;
use safetensors::tensor::{Dtype, TensorView};
use std::path::PathBuf;
use tapegrad::llama::pretrained::load_pretrained;
use tapegrad::{Error, Result, Tensor};

#[derive(Parser, Debug)]
#[command(about = "Logits, loss and gradients of a LLaMA model on given tokens")]
struct Args {
    /// A Hugging Face folder or a GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// A JSON file of token id rows.
    #[arg(long, conflicts_with = "text")]
    input: Option<PathBuf>,
    /// Text to tokenize with the model's tokenizer.
    #[arg(long)]
    text: Option<String>,
    /// The safetensors file to write.
    #[arg(long)]
    out: PathBuf,
    /// Also write every parameter's gradient (with --adapter: every adapter's).
    #[arg(long)]
    grads: bool,
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

fn read_rows(path: &PathBuf) -> Result<(Vec<u32>, usize, usize)> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let rows: Vec<Vec<u32>> = serde_json::from_slice(&text)
        .map_err(|e| Error::format(path, format!("expected [[id, ...], ...]: {e}")))?;
    let t = rows.first().map_or(0, Vec::len);
    if rows.is_empty() || rows.iter().any(|r| r.len() != t) {
        return Err(Error::format(
            path,
            "rows must be non-empty and of equal length",
        ));
    }
    Ok((rows.concat(), rows.len(), t))
}

fn run(args: Args) -> Result<()> {
    tapegrad::backend::cpu::keep_freed_memory();
    let (mut model, tokenizer) = load_pretrained(&args.model)?;
    if let Some(dir) = &args.adapter {
        tapegrad::llama::peft::load_adapter(&mut model, dir)?;
    }
    let (ids, batch, seq_len) = match (&args.input, &args.text) {
        (Some(path), None) => read_rows(path)?,
        (None, Some(text)) => {
            let tokenizer = tokenizer.ok_or_else(|| {
                Error::invalid(
                    "--text",
                    format!("{} has no tokenizer", args.model.display()),
                )
            })?;
            let ids = tokenizer.encode(text);
            let n = ids.len();
            (ids, 1, n)
        }
        _ => {
            return Err(Error::invalid(
                "--input",
                "give exactly one of --input and --text",
            ))
        }
    };
    let vocab = model.config.vocab_size;
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::invalid(
            "--input",
            format!("token id {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    let out = model.causal_lm(&ids, batch, seq_len, args.grads)?;
    let mut tensors: Vec<(String, Tensor)> = vec![
        (
            "logits".into(),
            out.logits.to_dtype(tapegrad::DType::F32)?.contiguous()?,
        ),
        (
            "loss".into(),
            Tensor::from_vec(vec![out.loss as f32], &[1])?,
        ),
    ];
    for (name, g) in out.grads.unwrap_or_default() {
        tensors.push((
            format!("grad.{name}"),
            g.to_dtype(tapegrad::DType::F32)?.contiguous()?,
        ));
    }
    let id_bytes: Vec<u8> = ids.iter().flat_map(|&i| (i as i64).to_le_bytes()).collect();
    let mut views = Vec::new();
    for (name, t) in &tensors {
        views.push((
            name.clone(),
            TensorView::new(Dtype::F32, t.shape().to_vec(), t.as_bytes()?).expect("sizes match"),
        ));
    }
    if args.text.is_some() {
        views.push((
            "input_ids".into(),
            TensorView::new(Dtype::I64, vec![1, seq_len], &id_bytes).expect("sizes match"),
        ));
    }
    let bytes = safetensors::serialize(views, &None)
        .map_err(|e| Error::invalid("safetensors", e.to_string()))?;
    std::fs::write(&args.out, bytes).map_err(|e| Error::io(&args.out, e))?;
    eprintln!(
        "{} x {} tokens: loss {:.6}, wrote {}",
        batch,
        seq_len,
        out.loss,
        args.out.display()
    );
    Ok(())
}
