//! Trains a LLaMA on the bundled corpora (or your own) on the CPU.
//!
//! `cargo run --release --example train_llama` trains the `small` config on Shakespeare + Austen: a progress
//! bar with loss, tokens/s, learning rate and ETA; `out/metrics.jsonl`; validation in nats per token and bits
//! per byte; atomic checkpoints under `out/checkpoints/`; samples, `out/loss.png` and `out/metrics.csv` at the end.
//!
//! Data parallel: `mpirun -np N target/release/examples/train_llama ...` (built with `--features mpi`) runs
//! N ranks, each with `--batch-size` rows of every global batch; rank 0 reports and writes checkpoints.

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tapegrad::llama::generate::{generate, Sampling};
use tapegrad::llama::parallel::ParallelOptions;
use tapegrad::llama::pretrained::Quantization;
use tapegrad::llama::sft::SftData;
use tapegrad::llama::tasks;
use tapegrad::llama::train::{TrainOptions, Trainer};
use tapegrad::llama::{Config, LoraConfig, Recompute, Target};
use tapegrad::memory::{memory_stats, reset_peak};
use tapegrad::optim::AdamWConfig;
use tapegrad::{DType, Device, Error, Result, Rng};

#[derive(Parser, Debug)]
#[command(about = "Train a LLaMA model with tapegrad")]
struct Args {
    /// Model preset: tiny, small, medium, gpu-125m, 7b, 13b, 33b, 65b.
    #[arg(long, default_value = "small")]
    config: String,
    /// Optimizer steps.
    #[arg(long, default_value_t = 900)]
    steps: usize,
    /// Sequences per step (default: the preset's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Tokens per sequence (default: the preset's).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Warmup steps (capped at a tenth of the run).
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Corpora as PATH or PATH:WEIGHT, repeatable (default: the bundled Shakespeare and Austen, weight 1 each).
    #[arg(long)]
    data: Vec<String>,
    /// cpu, cuda or cuda:N (GPU builds: --features cuda). On a GPU, matrix products and attention run in
    /// bf16 with f32 accumulation; parameters and optimizer state stay f32.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Activations and matrix products: auto (bf16 on a GPU, f32 on the CPU), bf16 (mixed precision: f32
    /// parameters, gradients and optimizer state; on the CPU the matrix products in bf16 with f32
    /// accumulation, which needs AVX512-BF16) or f32.
    #[arg(long, default_value = "auto")]
    precision: String,
    /// The device's peak dense bf16 TFLOP/s for the MFU figure (default: known from the GPU's name).
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Output folder for metrics, checkpoints, samples and the loss curve.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Resume from the latest checkpoint in OUT/checkpoints.
    #[arg(long)]
    resume: bool,
    /// Finetune a pretrained model (a Hugging Face folder or a GGUF file) with its own tokenizer instead of
    /// training `--config` from scratch.
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Validate every N steps (and at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 8)]
    eval_batches: usize,
    /// Validation batches for the evaluation at the end (0: the whole held-out split).
    #[arg(long, default_value_t = 0)]
    final_eval_batches: usize,
    /// Benchmarks scored at every validation (comma-separated: `hellaswag,piqa,...`; data from
    /// scripts/fetch-evals.sh), as `examples/eval` scores them.
    #[arg(long)]
    eval_tasks: Option<String>,
    /// Documents per benchmark at each validation (per subject for MMLU).
    #[arg(long, default_value_t = 200)]
    eval_limit: usize,
    /// The folder scripts/fetch-evals.sh filled.
    #[arg(long, default_value = "target/evals")]
    eval_data: PathBuf,
    /// Checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 200)]
    save_every: usize,
    /// Stop after this many steps in a row whose loss or gradient norm was not finite (their updates are
    /// skipped); the last checkpoint stays the last good one.
    #[arg(long, default_value_t = 20)]
    max_bad_steps: u64,
    /// What each block keeps for backward: none (recompute nothing), selective (recompute norms, RoPE and
    /// SwiGLU) or full (keep only each block's input and replay the block).
    #[arg(long, default_value = "selective")]
    recompute: Recompute,
    /// Tokens generated per sample at the end (0: none).
    #[arg(long, default_value_t = 120)]
    sample_tokens: usize,
    /// Collectives of a data-parallel run: auto (MPI when started by mpirun with several ranks, NCCL between
    /// GPUs; a single rank otherwise), single, mpi or nccl. --batch-size is per rank.
    #[arg(long, default_value = "auto")]
    comm: String,
    /// Shard the AdamW moments across the ranks (ZeRO-1).
    #[arg(long)]
    zero1: bool,
    /// Gradient bucket size in MiB; each bucket is averaged across ranks as soon as backward has produced it.
    #[arg(long, default_value_t = 4.0)]
    bucket_mb: f64,
    /// Seconds to wait for the other ranks in a collective before stopping with an error.
    #[arg(long, default_value_t = 120)]
    comm_timeout: u64,
    /// Micro-batches per optimizer step: each step averages the gradients of N batches of --batch-size rows
    /// (the update of one batch N times larger, in the memory of one).
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Train LoRA adapters of this rank over the frozen --init model instead of the whole model; they are
    /// written to OUT/adapter (PEFT's layout) at the end, and checkpoints hold them, their AdamW moments and a
    /// reference to the base file.
    #[arg(long, requires = "init")]
    lora: Option<usize>,
    /// LoRA's α (the update is scaled by α / rank); default twice the rank.
    #[arg(long, requires = "lora")]
    lora_alpha: Option<f64>,
    /// Dropout on the adapters' input.
    #[arg(long, default_value_t = 0.0, requires = "lora")]
    lora_dropout: f64,
    /// The projections that get adapters: q, k, v, o, gate, up, down (or q_proj, ...).
    #[arg(long, default_value = "q,k,v,o,gate,up,down", requires = "lora")]
    lora_targets: String,
    /// Quantize the base's projections to q8_0, q4_0 or q4_1 (QLoRA; with --lora). Without it a GGUF base
    /// keeps its own blocks and a Hugging Face base stays f32.
    #[arg(long, requires = "lora")]
    quantize: Option<String>,
    /// With --lora: also write the base with the adapters merged in as a plain Hugging Face folder to
    /// OUT/merged at the end.
    #[arg(long, requires = "lora")]
    merge: bool,
    /// Supervised finetuning on conversations (JSON lines: {"messages": [{"role", "content"}, ...]} or
    /// Alpaca's {"instruction", "input", "output"}), rendered with the model's chat template, the loss on the
    /// assistant's turns only; validation reports the SFT loss on held-out conversations. Replaces --data.
    #[arg(long)]
    sft: Option<PathBuf>,
    /// With --sft: the share of conversations held out for validation.
    #[arg(long, default_value_t = 0.1, requires = "sft")]
    sft_val_fraction: f64,
    /// With --sft: a Jinja chat template file to use instead of the model's own (or for a model without one).
    #[arg(long, requires = "sft")]
    chat_template: Option<PathBuf>,
}

fn parse_data(specs: &[String]) -> Result<Vec<(PathBuf, f64)>> {
    if specs.is_empty() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        return Ok(vec![
            (root.join("shakespeare.txt"), 1.0),
            (root.join("austen.txt"), 1.0),
        ]);
    }
    specs
        .iter()
        .map(|spec| match spec.rsplit_once(':') {
            Some((path, w)) if w.parse::<f64>().is_ok() => {
                Ok((PathBuf::from(path), w.parse().unwrap()))
            }
            _ => Ok((PathBuf::from(spec), 1.0)),
        })
        .collect()
}

fn append_json(path: &Path, value: serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{value}").map_err(|e| Error::io(path, e))
}

fn main() {
    let args = Args::parse();
    let f32_only = args.precision == "f32";
    let cpu_bf16 = args.precision == "bf16" && args.device == "cpu";
    let result = tapegrad::ops::with_gpu_bf16(!f32_only, || {
        tapegrad::ops::with_cpu_bf16(cpu_bf16, || run(args))
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    tapegrad::backend::cpu::keep_freed_memory();
    let device: Device = args.device.parse()?;
    // Benchmarks are read before training, so a missing file stops the run at once.
    let mut benchmarks = Vec::new();
    for task in tasks::parse_list(args.eval_tasks.as_deref().unwrap_or(""))? {
        let docs = tasks::load(
            task,
            &args.eval_data,
            task.default_shots(),
            Some(args.eval_limit),
        )?;
        benchmarks.push((task, docs));
    }
    let preset = Config::preset(&args.config)?;
    let default_batch = preset.batch_tokens / preset.config.max_seq_len;
    let options = TrainOptions {
        seq_len: args.seq_len.unwrap_or(preset.config.max_seq_len),
        batch_size: args.batch_size.unwrap_or(default_batch.max(1)),
        config: preset.config,
        steps: args.steps,
        lr: args.lr,
        warmup_steps: args.warmup,
        final_lr_fraction: 0.1,
        data: parse_data(&args.data)?,
        cache_dir: args.out.join("cache"),
        seed: args.seed,
        optimizer: AdamWConfig::default(),
        grad_accum: args.grad_accum,
        lora: match args.lora {
            None => None,
            Some(rank) => Some(LoraConfig {
                alpha: args.lora_alpha.unwrap_or(2.0 * rank as f64),
                dropout: args.lora_dropout,
                targets: Target::parse_list(&args.lora_targets)?,
                ..LoraConfig::new(rank)
            }),
        },
        weights: match (&args.quantize, args.lora) {
            (Some(q), _) => Quantization::parse("--quantize", q)?,
            (None, Some(_)) => Quantization::Keep,
            (None, None) => Quantization::Dense,
        },
    };
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let ckpt_root = args.out.join("checkpoints");
    let metrics = args.out.join("metrics.jsonl");
    let launched = tapegrad::dist::launch(args.comm.parse()?, device)?;
    let (rank, ranks) = (launched.comm.rank(), launched.comm.size());
    let main_rank = rank == 0;
    if ranks > 1 {
        eprintln!(
            "rank {rank} of {ranks} ({}), pid {}",
            launched.comm.engine(),
            std::process::id()
        );
    }
    // Rank 0 trains the tokenizer and writes the shard caches; the others wait, then read them.
    if !main_rank {
        launched.comm.barrier()?;
    }
    let mut trainer = if args.resume {
        Trainer::resume(&ckpt_root, options)?
    } else if let Some(init) = &args.init {
        if main_rank {
            let _ = std::fs::remove_file(&metrics);
        }
        Trainer::from_pretrained(init, options)?
    } else {
        if main_rank {
            let _ = std::fs::remove_file(&metrics);
        }
        Trainer::new(options)?
    };
    if main_rank && ranks > 1 {
        launched.comm.barrier()?;
    }
    if let Some(path) = &args.sft {
        let template = trainer
            .tokenizer
            .chat_template_or_file(args.chat_template.as_deref())?;
        let sft = SftData::load(
            path,
            &template,
            &trainer.tokenizer,
            args.sft_val_fraction,
            args.seed,
        )?;
        let trained: usize = sft
            .train
            .iter()
            .map(|e| e.trained.iter().filter(|&&t| t).count())
            .sum();
        eprintln!(
            "sft: {} training and {} held-out conversations from {} ({trained} assistant tokens to learn)",
            sft.train.len(),
            sft.val.len(),
            path.display()
        );
        trainer.sft = Some(sft);
    }
    trainer.model.recompute = args.recompute;
    trainer.model.to_device(device)?;
    trainer.model.activations = match (args.precision.as_str(), device) {
        ("bf16", Device::Cpu) if !tapegrad::ops::cpu_bf16_available() => {
            return Err(Error::invalid(
                "--precision",
                "bf16 on the CPU needs AVX512-BF16, which this CPU lacks (or TAPEGRAD_SIMD caps); use f32",
            ))
        }
        // Products in bf16 (`with_cpu_bf16`), activations in f32: the CPU's other kernels compute in f32.
        ("bf16", Device::Cpu) => None,
        ("bf16", _) => Some(DType::BF16),
        ("auto", Device::Cuda(_)) => Some(DType::BF16),
        ("auto" | "f32", _) => None,
        (other, _) => {
            return Err(Error::invalid(
                "--precision",
                format!("{other:?} is not auto, bf16 or f32"),
            ))
        }
    };
    let peak_tflops = args.peak_tflops.or_else(|| gpu_peak_tflops(device));
    let _keep = launched.keep;
    if ranks > 1 || args.zero1 || launched.comm.engine() != "single" {
        let options = ParallelOptions {
            bucket_elements: (args.bucket_mb * (1 << 20) as f64 / 4.0).max(1.0) as usize,
            zero1: args.zero1,
            timeout: Duration::from_secs(args.comm_timeout),
        };
        trainer.distribute(launched.comm, options)?;
    }
    let say = |line: String| {
        if main_rank {
            eprintln!("{line}");
        }
    };
    for warning in &trainer.warnings {
        say(format!(
            "warning: {warning}; resuming from the previous intact checkpoint"
        ));
    }
    if args.resume {
        say(format!("resumed at step {}", trainer.step));
    }
    let cfg = &trainer.model.config;
    let flops_per_token = cfg.train_flops_per_token(trainer.options.seq_len);
    say(format!(
        "model {}: {:.2} M parameters, {} layers, dim {}, vocab {}; {} steps of {} x {} tokens, {} threads{}",
        args.init.as_ref().map_or(args.config.clone(), |p| p.display().to_string()),
        cfg.param_count() as f64 / 1e6,
        cfg.n_layers,
        cfg.dim,
        cfg.vocab_size,
        trainer.options.steps,
        trainer.options.batch_size,
        trainer.options.seq_len,
        rayon::current_num_threads(),
        if ranks > 1 {
            format!(
                " per rank; {ranks} ranks{}",
                if args.zero1 { ", ZeRO-1" } else { "" }
            )
        } else {
            String::new()
        }
    ));
    let total = trainer.options.steps as u64;
    let bar = if main_rank {
        ProgressBar::new(total).with_position(trainer.step)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("template"),
    );
    let start = Instant::now();
    reset_peak();
    let mut saved_peak = 0usize;
    let mut history: Vec<(u64, f64)> = Vec::new();
    let mut val_history: Vec<(u64, f64)> = Vec::new();
    let mut tokens_done = 0usize;
    let mut last_eval = None;
    let (mut comm_busy, mut comm_exposed, mut comm_bytes) = (0.0, 0.0, 0usize);
    let show = |line: String| {
        if !main_rank {
        } else if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    while trainer.step < total {
        let t0 = Instant::now();
        let stats = trainer.train_step()?;
        if stats.skipped {
            show(format!(
                "warning: step {} skipped: loss {} / gradient norm {} not finite ({} in a row, {} in all)",
                trainer.step, stats.loss, stats.grad_norm, trainer.skipped_in_a_row, trainer.skipped_steps
            ));
            if trainer.skipped_in_a_row >= args.max_bad_steps {
                bar.abandon();
                return Err(Error::invalid(
                    "training",
                    format!(
                        "stopped after {} non-finite steps in a row; the last checkpoint in {} is the last good one",
                        trainer.skipped_in_a_row,
                        ckpt_root.display()
                    ),
                ));
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        tokens_done += stats.tokens;
        saved_peak = saved_peak.max(stats.saved_bytes);
        let tps = stats.tokens as f64 / dt;
        history.push((trainer.step, stats.loss));
        bar.set_position(trainer.step);
        bar.set_message(format!(
            "loss {:.3} | {:.0} tok/s | {:.1} GFLOP/s | lr {:.2e}",
            stats.loss,
            tps,
            tps * flops_per_token / 1e9,
            stats.lr
        ));
        comm_busy += stats.comm.busy_s;
        comm_exposed += stats.comm.exposed_s;
        comm_bytes = stats.comm.bytes;
        if main_rank {
            let mut line = serde_json::json!({"step": trainer.step, "loss": stats.loss, "skipped": stats.skipped, "lr": stats.lr,
                "grad_norm": stats.grad_norm, "tokens_per_s": tps, "saved_bytes": stats.saved_bytes,
                "elapsed_s": start.elapsed().as_secs_f64()});
            if ranks > 1 {
                line["comm_bytes"] = stats.comm.bytes.into();
                line["comm_busy_s"] = stats.comm.busy_s.into();
                line["comm_exposed_s"] = stats.comm.exposed_s.into();
            }
            append_json(&metrics, line)?;
        }
        let last = trainer.step == total;
        if trainer.step % args.eval_every.max(1) as u64 == 0 || last {
            let eval = trainer.evaluate(args.eval_batches)?;
            val_history.push((trainer.step, eval.nats_per_token));
            last_eval = Some(eval);
            show(format!(
                "step {:>5}: train loss {:.3}, validation {:.3} nats/token, {:.3} bits/byte",
                trainer.step, stats.loss, eval.nats_per_token, eval.bits_per_byte
            ));
            if main_rank {
                append_json(
                    &metrics,
                    serde_json::json!({"step": trainer.step, "val_loss": eval.nats_per_token, "val_bpb": eval.bits_per_byte,
                        "elapsed_s": start.elapsed().as_secs_f64()}),
                )?;
            }
            // Every rank scores the benchmarks (the others would otherwise wait in the next step's collective);
            // the first reports them.
            for (task, docs) in &benchmarks {
                let options = tasks::Options::for_model(&trainer.model, 8);
                let r = tasks::evaluate(
                    &trainer.model,
                    &trainer.tokenizer,
                    *task,
                    docs,
                    options,
                    &mut || {},
                )?;
                if main_rank {
                    let norm = r
                        .acc_norm
                        .map_or(String::new(), |a| format!(", acc_norm {a:.4}"));
                    show(format!(
                        "step {:>5}: {} acc {:.4} ± {:.4}{norm} ({} documents, {:.1} s)",
                        trainer.step, r.task, r.acc, r.acc_stderr, r.n, r.seconds
                    ));
                    let mut line = serde_json::to_value(&r).expect("plain numbers");
                    line["step"] = trainer.step.into();
                    append_json(&metrics, line)?;
                }
            }
        }
        if trainer.step % args.save_every.max(1) as u64 == 0 || last {
            trainer.save(&ckpt_root, 3)?;
        }
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    say(format!(
        "trained {} steps in {:.1} s: {:.0} tokens/s, {:.1} GFLOP/s",
        history.len(),
        elapsed,
        tokens_done as f64 / elapsed,
        tokens_done as f64 * flops_per_token / elapsed / 1e9
    ));
    if ranks > 1 && !history.is_empty() {
        let steps = history.len() as f64;
        say(format!(
            "data parallel over {ranks} ranks: {:.1} MB of gradients per rank and step; collectives {:.1} ms per step, {:.1} ms of it after backward ({:.0}% hidden)",
            comm_bytes as f64 / 1e6,
            1e3 * comm_busy / steps,
            1e3 * comm_exposed / steps,
            100.0 * (1.0 - comm_exposed / comm_busy.max(1e-12)).clamp(0.0, 1.0)
        ));
    }
    if let (Some(peak), true) = (peak_tflops, main_rank) {
        eprintln!(
            "MFU on {device}: {:.1}% of {peak} TFLOP/s",
            100.0 * tokens_done as f64 * flops_per_token / elapsed / (peak * 1e12)
        );
    }
    if main_rank {
        print_device_memory(device);
    }
    say(format!(
        "memory (recompute {}): the tape held at most {:.1} MB of activations for backward; live tensors peaked at {:.1} MB",
        args.recompute,
        saved_peak as f64 / 1e6,
        memory_stats().peak_bytes as f64 / 1e6
    ));
    let mut final_bpb = None;
    if last_eval.is_some() {
        let batches = if args.final_eval_batches == 0 {
            usize::MAX
        } else {
            args.final_eval_batches
        };
        let eval = trainer.evaluate(batches)?;
        if !main_rank {
            return Ok(());
        }
        eprintln!(
            "final validation ({}): {:.4} nats/token, {:.4} bits/byte",
            if batches == usize::MAX {
                "the whole held-out split".to_string()
            } else {
                format!("{batches} batches")
            },
            eval.nats_per_token,
            eval.bits_per_byte
        );
        final_bpb = Some(eval.bits_per_byte);
        append_json(
            &metrics,
            serde_json::json!({"step": trainer.step, "final_val_loss": eval.nats_per_token,
                "final_val_bpb": eval.bits_per_byte, "final_val_batches": batches.min(1 << 30)}),
        )?;
    }
    if !main_rank {
        return Ok(());
    }
    let model_name = args.init.as_ref().map_or(args.config.clone(), |p| {
        p.file_name()
            .unwrap_or(p.as_os_str())
            .to_string_lossy()
            .into_owned()
    });
    let title = format!(
        "{model_name}{} · {:.2} M parameters · {} steps of {} x {} tokens{}",
        args.lora.map_or(String::new(), |r| format!(", LoRA r {r}")),
        trainer.model.config.param_count() as f64 / 1e6,
        trainer.step,
        trainer.options.batch_size,
        trainer.options.seq_len,
        final_bpb.map_or(String::new(), |b| format!(" · final {b:.4} bits/byte"))
    );
    tapegrad::llama::plot::loss_curve(&args.out.join("loss.png"), &title, &history, &val_history)?;
    let table = args.out.join("metrics.csv");
    std::fs::write(
        &table,
        tapegrad::llama::plot::loss_table(&history, &val_history),
    )
    .map_err(|e| Error::io(&table, e))?;
    trainer.model.to_device(Device::Cpu)?;
    if let Some(base) = trainer.model.base.clone() {
        let dir = args.out.join("adapter");
        tapegrad::llama::peft::save_adapter(
            &trainer.model,
            &dir,
            &base.path.display().to_string(),
        )?;
        eprintln!("adapters written to {} (PEFT's layout)", dir.display());
        if args.merge {
            let mut merged = trainer.model.clone();
            merged.merge_lora()?;
            let dir = args.out.join("merged");
            tapegrad::llama::checkpoint::save_model(&merged, &dir)?;
            trainer.tokenizer.save(&dir)?;
            eprintln!("merged model written to {}", dir.display());
        }
    }
    if args.sample_tokens > 0 {
        let mut samples = String::new();
        let mut rng = Rng::new(args.seed);
        for prompt in ["ROMEO:\n", "Elizabeth", "The king"] {
            let ids = trainer.tokenizer.encode(prompt);
            let sampling = Sampling::new(0.8, 0.95);
            let out = generate(
                &trainer.model,
                &ids,
                args.sample_tokens,
                sampling,
                None,
                &mut rng,
            )?;
            let text = format!(
                "--- {prompt:?}\n{}{}\n",
                prompt,
                trainer.tokenizer.decode(&out)
            );
            println!("{text}");
            samples.push_str(&text);
        }
        let path = args.out.join("samples.txt");
        std::fs::write(&path, samples).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// The dense bf16 peak of a known GPU, from its name.
#[cfg(feature = "cuda-backend")]
fn gpu_peak_tflops(device: Device) -> Option<f64> {
    let Device::Cuda(i) = device else { return None };
    let name = tapegrad::backend::cuda::gpu(i).ok()?.name.clone();
    [("H200", 989.0), ("H100", 989.0), ("A100", 312.0)]
        .iter()
        .find(|(model, _)| name.contains(model))
        .map(|(_, peak)| *peak)
}

#[cfg(not(feature = "cuda-backend"))]
fn gpu_peak_tflops(_: Device) -> Option<f64> {
    None
}

/// The GPU pool's figures after a run on a GPU.
#[cfg(feature = "cuda-backend")]
fn print_device_memory(device: Device) {
    if let Device::Cuda(i) = device {
        if let Ok(gpu) = tapegrad::backend::cuda::gpu(i) {
            let m = gpu.memory();
            eprintln!(
                "{device} ({}): peak {:.1} MB in use by tensors, {:.1} MB reserved; {} allocations from the cache, {} from the driver",
                gpu.name,
                m.peak as f64 / 1e6,
                m.reserved as f64 / 1e6,
                m.hits,
                m.misses
            );
        }
    }
}

#[cfg(not(feature = "cuda-backend"))]
fn print_device_memory(_: Device) {}
