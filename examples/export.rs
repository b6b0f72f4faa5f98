//! Writes a model as a GGUF file that llama.cpp and Ollama run: a checkpoint of ours (adapters merged), a
//! Hugging Face folder or a GGUF file, with its tokenizer and chat template.
//!
//! `cargo run --release --example export -- --checkpoint out/checkpoints --out model.gguf --type q8_0`

use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;
use tapegrad::io::gguf::GgmlType;
use tapegrad::llama::checkpoint::latest_dir;
use tapegrad::llama::export::{export_gguf, EXPORT_TYPES};
use tapegrad::llama::pretrained::{load_pretrained_with, Quantization};
use tapegrad::{Error, Result};

#[derive(Parser, Debug)]
#[command(about = "Export a model to GGUF for llama.cpp and Ollama")]
struct Args {
    /// A checkpoint folder (or a folder of checkpoints with a `latest` file), a folder of adapters (merged
    /// into their base), a Hugging Face folder, or a GGUF file.
    #[arg(long, default_value = "out/checkpoints")]
    checkpoint: PathBuf,
    /// The GGUF file to write.
    #[arg(long)]
    out: PathBuf,
    /// The matrices' type: f32, f16, q8_0 or q4_0 (norms stay f32).
    #[arg(long = "type", default_value = "f16")]
    ty: String,
    /// `general.name` in the file (default: the checkpoint's folder or file name).
    #[arg(long)]
    name: Option<String>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let ty = EXPORT_TYPES
        .iter()
        .copied()
        .find(|t| t.to_string().eq_ignore_ascii_case(&args.ty))
        .ok_or_else(|| {
            Error::invalid(
                "--type",
                format!("{:?} is not one of f32, f16, q8_0, q4_0", args.ty),
            )
        })?;
    let path = if args.checkpoint.is_dir() {
        latest_dir(&args.checkpoint)?
    } else {
        args.checkpoint.clone()
    };
    let started = Instant::now();
    let (model, tokenizer) = load_pretrained_with(&path, Quantization::Dense)?;
    let name = args.name.clone().unwrap_or_else(|| {
        let stem = path.file_stem().unwrap_or(path.as_os_str());
        stem.to_string_lossy().into_owned()
    });
    export_gguf(&model, tokenizer.as_ref(), &args.out, ty, &name)?;
    let bytes = std::fs::metadata(&args.out).map_or(0, |m| m.len());
    eprintln!(
        "wrote {} ({}, {:.1} MB, {} tokenizer) in {:.1} s",
        args.out.display(),
        if ty == GgmlType::F32 {
            "F32".to_string()
        } else {
            ty.to_string()
        },
        bytes as f64 / 1e6,
        if tokenizer.is_some() {
            "with its"
        } else {
            "no"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
