//! The training loop behind `train_llama`: data preparation (tokenizer trained once and cached, shards
//! memory-mapped), one AdamW step per call on a fresh tape, validation in nats per token and bits per byte,
//! and resumable checkpoints holding the weights, both moments, the data position and the schedule.

use super::checkpoint::{load_latest_intact, save_checkpoint};
use super::config::Config;
use super::model::Llama;
use super::parallel::{CommStats, DataParallel};
use super::pretrained::{load_pretrained, TextTokenizer};
use crate::backend::Device;
use crate::data::{prepare_source, Mixture, MixtureState, Tokenizer, DEFAULT_VAL_FRACTION};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::optim::{AdamW, AdamWConfig, CosineSchedule};
use crate::tape::{no_grad, Tape};
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

/// Everything a run is configured by.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub config: Config,
    pub steps: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub final_lr_fraction: f64,
    /// Text corpora and their sampling weights.
    pub data: Vec<(PathBuf, f64)>,
    /// Where tokenizers and shards are cached.
    pub cache_dir: PathBuf,
    pub seed: u64,
    pub optimizer: AdamWConfig,
}

/// What one training step did.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub loss: f64,
    /// The loss or gradient norm was not finite and the update was skipped.
    pub skipped: bool,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    /// The most bytes of activations the tape held for backward (see `Tape::saved_bytes`).
    pub saved_bytes: usize,
    /// Gradient communication (zero without data parallelism).
    pub comm: CommStats,
}

/// Validation figures.
#[derive(Clone, Copy, Debug)]
pub struct EvalStats {
    pub nats_per_token: f64,
    pub bits_per_byte: f64,
}

/// A model, its optimizer, schedule and data stream.
pub struct Trainer {
    pub model: Llama,
    pub optimizer: AdamW,
    pub schedule: CosineSchedule,
    pub mixture: Mixture,
    pub tokenizer: TextTokenizer,
    pub step: u64,
    pub options: TrainOptions,
    /// Steps whose update was skipped for a non-finite loss or gradient norm, in all and in a row.
    pub skipped_steps: u64,
    pub skipped_in_a_row: u64,
    /// What resuming had to pass over (damaged checkpoints), for the caller to report.
    pub warnings: Vec<String>,
    /// Data-parallel state, once [`Trainer::distribute`] has spread the run over ranks.
    pub parallel: Option<DataParallel>,
}

/// Loads the tokenizer cached for these corpora and vocabulary size, or trains and caches it.
pub fn prepare_tokenizer(
    data: &[(PathBuf, f64)],
    vocab_size: usize,
    cache_dir: &Path,
) -> Result<Tokenizer> {
    let mut texts = Vec::new();
    for (path, _) in data {
        texts.push(std::fs::read(path).map_err(|e| Error::io(path, e))?);
    }
    let mut hash = crate::io::checksum::Fnv1a64::new();
    for t in &texts {
        hash.update(t);
    }
    let path = cache_dir.join(format!(
        "tokenizer-{vocab_size}-{:016x}.json",
        hash.finish()
    ));
    if let Ok(tok) = Tokenizer::load(&path) {
        return Ok(tok);
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let slices: Vec<&[u8]> = texts.iter().map(|t| t.as_slice()).collect();
    let tok = Tokenizer::train(&slices, vocab_size)?;
    tok.save(&path)?;
    Ok(tok)
}

impl Trainer {
    /// A fresh run: tokenizer, shards, model and optimizer.
    pub fn new(options: TrainOptions) -> Result<Trainer> {
        Trainer::check(&options)?;
        let tokenizer =
            prepare_tokenizer(&options.data, options.config.vocab_size, &options.cache_dir)?;
        let mut config = options.config.clone();
        // The trained vocabulary can come out smaller than asked on a tiny corpus; the model follows it.
        config.vocab_size = tokenizer.vocab_size();
        let model = Llama::new(config, DType::F32, options.seed)?;
        Trainer::fresh(options, TextTokenizer::Ours(tokenizer), model)
    }

    /// Continues training a pretrained model (a Hugging Face folder or a GGUF file) on the corpora, with the
    /// model's own tokenizer. The model's configuration replaces `options.config`.
    pub fn from_pretrained(path: &Path, mut options: TrainOptions) -> Result<Trainer> {
        let (model, tokenizer) = load_pretrained(path)?;
        let tokenizer = tokenizer.ok_or_else(|| {
            Error::invalid(
                "--init",
                format!("{} has no tokenizer to finetune with", path.display()),
            )
        })?;
        options.config = model.config.clone();
        Trainer::check(&options)?;
        Trainer::fresh(options, tokenizer, model)
    }

    fn fresh(options: TrainOptions, tokenizer: TextTokenizer, model: Llama) -> Result<Trainer> {
        let mut sizes = Vec::new();
        model.visit(&mut |_, t| sizes.push(t.numel()));
        let optimizer = AdamW::new(options.optimizer.clone(), &sizes);
        Trainer::assemble(options, tokenizer, model, optimizer, 0)
    }

    fn check(o: &TrainOptions) -> Result<()> {
        let positive = [
            ("--steps", o.steps),
            ("--batch-size", o.batch_size),
            ("--seq-len", o.seq_len),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(Error::invalid(flag, "must be positive"));
            }
        }
        if o.seq_len > o.config.max_seq_len {
            return Err(Error::invalid(
                "--seq-len",
                format!(
                    "{} exceeds the model's max_seq_len {}",
                    o.seq_len, o.config.max_seq_len
                ),
            ));
        }
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return Err(Error::invalid(
                "--lr",
                format!("{} must be a positive number", o.lr),
            ));
        }
        if o.data.is_empty() {
            return Err(Error::invalid("--data", "no corpus given"));
        }
        for (path, weight) in &o.data {
            if !path.is_file() {
                return Err(Error::invalid(
                    "--data",
                    format!("{} is not a file", path.display()),
                ));
            }
            if !(*weight > 0.0 && weight.is_finite()) {
                return Err(Error::invalid(
                    "--data",
                    format!("weight {weight} of {} must be positive", path.display()),
                ));
            }
        }
        o.config.validate()
    }

    fn assemble(
        options: TrainOptions,
        tokenizer: TextTokenizer,
        model: Llama,
        optimizer: AdamW,
        step: u64,
    ) -> Result<Trainer> {
        let mut sources = Vec::new();
        for (path, weight) in &options.data {
            let name = path
                .file_stem()
                .map_or("corpus".into(), |s| s.to_string_lossy().into_owned());
            let source = prepare_source(
                &name,
                path,
                &tokenizer,
                &options.cache_dir,
                DEFAULT_VAL_FRACTION,
            )?;
            sources.push(source.with_weight(*weight));
        }
        let mixture = Mixture::new(sources, options.seq_len, options.seed)?;
        let schedule = CosineSchedule::new(
            options.lr,
            options.warmup_steps,
            options.steps,
            options.final_lr_fraction,
        );
        Ok(Trainer {
            model,
            optimizer,
            schedule,
            mixture,
            tokenizer,
            step,
            options,
            skipped_steps: 0,
            skipped_in_a_row: 0,
            warnings: Vec::new(),
            parallel: None,
        })
    }

    /// Continues the run saved under `root` (its `latest` checkpoint). The corpora, batch and sequence sizes come
    /// from `options`; the model (and its configuration), tokenizer, optimizer, step and data position from the
    /// checkpoint.
    pub fn resume(root: &Path, mut options: TrainOptions) -> Result<Trainer> {
        let (ckpt, warnings) = load_latest_intact(root)?;
        options.config = ckpt.model.config.clone();
        Trainer::check(&options)?;
        let dir = ckpt.dir.clone();
        let tokenizer = TextTokenizer::load(&dir)?
            .ok_or_else(|| Error::format(&dir, "the checkpoint holds no tokenizer"))?;
        if ckpt.model.config.vocab_size != tokenizer.vocab_size() {
            return Err(Error::format(
                &dir,
                format!(
                    "model vocabulary {} differs from the tokenizer's {}",
                    ckpt.model.config.vocab_size,
                    tokenizer.vocab_size()
                ),
            ));
        }
        let mut trainer =
            Trainer::assemble(options, tokenizer, ckpt.model, ckpt.optimizer, ckpt.step)?;
        let state: MixtureState =
            serde_json::from_value(ckpt.state["mixture"].clone()).map_err(|e| {
                Error::format(root, format!("bad data position in the checkpoint: {e}"))
            })?;
        trainer.mixture.restore(state)?;
        trainer.warnings = warnings;
        Ok(trainer)
    }

    /// Saves a checkpoint of the current step under `root`, keeping the newest `keep`, and returns its folder.
    /// In a data-parallel run every rank calls it (with ZeRO-1 the optimizer shards are gathered first);
    /// rank 0 writes and returns `Some`, the others `None`, once the checkpoint is complete.
    pub fn save(&mut self, root: &Path, keep: usize) -> Result<Option<PathBuf>> {
        let gathered = self.full_optimizer()?;
        let written = if self.rank_and_size().0 == 0 {
            let optimizer = gathered.as_ref().unwrap_or(&self.optimizer);
            Some(self.write_checkpoint(root, keep, optimizer)?)
        } else {
            None
        };
        self.barrier()?;
        Ok(written)
    }

    fn write_checkpoint(&self, root: &Path, keep: usize, optimizer: &AdamW) -> Result<PathBuf> {
        let state =
            serde_json::json!({ "mixture": self.mixture.state(), "schedule": self.schedule });
        let tokenizer = &self.tokenizer;
        let write_tokenizer = |dir: &Path| tokenizer.save(dir);
        // Checkpoints are written from host copies of a model and state that live on a GPU.
        let on_host;
        let (model, optimizer) = if self.model.device() == Device::Cpu {
            (&self.model, optimizer)
        } else {
            let mut model = self.model.clone();
            model.to_device(Device::Cpu)?;
            let mut optimizer = optimizer.clone();
            optimizer.to_host()?;
            on_host = (model, optimizer);
            (&on_host.0, &on_host.1)
        };
        save_checkpoint(
            root,
            self.step,
            model,
            optimizer,
            &state,
            keep,
            &write_tokenizer,
        )
    }

    /// One optimizer step on a fresh batch.
    pub fn train_step(&mut self) -> Result<StepStats> {
        let stats = if self.parallel.is_some() {
            self.parallel_step()?
        } else {
            self.local_step()?
        };
        if stats.skipped {
            self.skipped_steps += 1;
            self.skipped_in_a_row += 1;
        } else {
            self.skipped_in_a_row = 0;
        }
        self.step += 1;
        Ok(stats)
    }

    fn local_step(&mut self) -> Result<StepStats> {
        let (b, t) = (self.options.batch_size, self.options.seq_len);
        let batch = self.mixture.next_batch(b);
        let tape = Tape::new();
        let leaves = self.model.watch(&tape);
        let loss = self.model.loss(&batch.inputs, &batch.targets, b, t);
        self.model.unwatch();
        let loss = loss?;
        let mut grads = tape.backward(&loss)?;
        let grads: Vec<Tensor> = leaves
            .iter()
            .map(|l| {
                grads
                    .remove(l)
                    .map_or_else(|| Tensor::zeros_on(l.shape(), l.dtype(), l.device()), Ok)
            })
            .collect::<Result<_>>()?;
        let saved_bytes = tape.saved_bytes().peak;
        drop((leaves, tape));
        let lr = self.schedule.lr(self.step as usize);
        let loss = loss.item()?;
        let (grad_norm, skipped) = if loss.is_finite() {
            let info = self
                .optimizer
                .step(&mut self.model.params_mut(), &grads, lr)?;
            (info.grad_norm, info.skipped)
        } else {
            (f64::NAN, true)
        };
        Ok(StepStats {
            loss,
            skipped,
            lr,
            grad_norm,
            tokens: b * t,
            saved_bytes,
            comm: CommStats::default(),
        })
    }

    /// Mean validation loss over up to `max_batches` batches, in nats per token and bits per byte. In a
    /// data-parallel run each rank scores its rows of every batch (every rank calls it and gets the same
    /// figures).
    pub fn evaluate(&mut self, max_batches: usize) -> Result<EvalStats> {
        // The global batch size lays the windows out, so the figures do not depend on the number of ranks.
        let (rank, ranks) = self.rank_and_size();
        let b = self.options.batch_size * ranks;
        let batches = self.mixture.val_batches(b, max_batches);
        let (mut total, mut count) = (0.0, 0usize);
        no_grad(|| -> Result<()> {
            for batch in batches.iter().map(|batch| batch.part(rank, ranks)) {
                if batch.batch_size == 0 {
                    continue;
                }
                let loss = self.model.loss(
                    &batch.inputs,
                    &batch.targets,
                    batch.batch_size,
                    batch.seq_len,
                )?;
                let n = batch.targets.len();
                total += loss.item()? * n as f64;
                count += n;
            }
            Ok(())
        })?;
        let (total, count) = self.reduce_eval(total, count)?;
        let nats = total / count.max(1) as f64;
        let counts = self.mixture.val_counts(b, max_batches);
        Ok(EvalStats {
            nats_per_token: nats,
            bits_per_byte: counts.bits_per_byte(nats),
        })
    }
}
