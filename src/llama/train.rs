//! The training loop behind `train_llama`: data preparation (tokenizer trained once and cached, shards
//! memory-mapped), one AdamW step per call on a fresh tape, validation in nats per token and bits per byte,
//! and resumable checkpoints holding the weights, both moments, the data position and the schedule.

use super::base::BaseRef;
use super::checkpoint::{load_latest_intact, save_checkpoint};
use super::config::Config;
use super::lora::LoraConfig;
use super::model::Llama;
use super::parallel::{CommStats, DataParallel};
use super::pretrained::{load_pretrained_with, Quantization, TextTokenizer};
use super::sft::{SftData, IGNORE};
use crate::backend::Device;
use crate::data::{prepare_source, Batch, Mixture, MixtureState, Tokenizer, DEFAULT_VAL_FRACTION};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::optim::{AdamW, AdamWConfig, CosineSchedule};
use crate::rng::Rng;
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
    /// Micro-batches per optimizer step (gradient accumulation): a step averages the gradients of
    /// `grad_accum` batches of `batch_size` rows, the update of one batch `grad_accum` times larger.
    pub grad_accum: usize,
    /// Train LoRA adapters over the frozen pretrained model instead of the whole model (`from_pretrained`).
    pub lora: Option<LoraConfig>,
    /// How a pretrained model's matrices are held (`from_pretrained`): quantized ones are frozen, so anything
    /// but `Dense` needs `lora`.
    pub weights: Quantization,
}

impl Default for TrainOptions {
    /// The `tiny` preset at its own sizes on no data, one micro-batch a step, every weight trained.
    fn default() -> TrainOptions {
        let preset = Config::preset("tiny").expect("a built-in preset");
        TrainOptions {
            batch_size: (preset.batch_tokens / preset.config.max_seq_len).max(1),
            seq_len: preset.config.max_seq_len,
            config: preset.config,
            steps: 100,
            lr: 1e-3,
            warmup_steps: 10,
            final_lr_fraction: 0.1,
            data: Vec::new(),
            cache_dir: PathBuf::from("cache"),
            seed: 0,
            optimizer: AdamWConfig::default(),
            grad_accum: 1,
            lora: None,
            weights: Quantization::Dense,
        }
    }
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
    /// Supervised finetuning: when set, batches come from these conversations (loss on the assistant's turns
    /// only) instead of the corpora, and validation scores its held-out conversations.
    pub sft: Option<SftData>,
}

/// `sum + grads`, element by element (`grads` itself for the first micro-batch).
pub(crate) fn accumulate(sum: Option<Vec<Tensor>>, grads: Vec<Tensor>) -> Result<Vec<Tensor>> {
    match sum {
        None => Ok(grads),
        Some(sum) => sum.iter().zip(&grads).map(|(a, g)| a.add(g)).collect(),
    }
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
        if options.lora.is_some() || options.weights != Quantization::Dense {
            return Err(Error::invalid(
                "--lora",
                "adapters and quantized weights finetune a pretrained model: give it with --init",
            ));
        }
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
    ///
    /// With `options.lora`, adapters are added and only they train; the model keeps a reference to the base
    /// file (`Llama::base`), which checkpoints hold instead of the base weights.
    pub fn from_pretrained(path: &Path, mut options: TrainOptions) -> Result<Trainer> {
        if options.weights != Quantization::Dense && options.lora.is_none() {
            return Err(Error::invalid(
                "--quantize",
                "quantized weights are frozen: train adapters over them with --lora",
            ));
        }
        let (mut model, tokenizer) = load_pretrained_with(path, options.weights)?;
        if let Some(lora) = &options.lora {
            model.add_lora(lora, options.seed)?;
            model.base = Some(BaseRef::of(path, options.weights)?);
        }
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
            ("--grad-accum", o.grad_accum),
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
            sft: None,
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
        let (b, t, n) = (
            self.options.batch_size,
            self.options.seq_len,
            self.options.grad_accum,
        );
        let (mut total, mut sum, mut saved_bytes) = (0.0, None::<Vec<Tensor>>, 0);
        for micro in 0..n {
            let batch = match &self.sft {
                Some(sft) => sft.batch(self.step, micro, n, b, t),
                None => self.mixture.next_batch(b),
            };
            let (loss, grads, saved) = self.micro_step(micro, &batch)?;
            total += loss;
            saved_bytes = saved_bytes.max(saved);
            sum = Some(accumulate(sum, grads)?);
        }
        // The mean over micro-batches: the gradient of the mean loss over all their tokens.
        let grads: Vec<Tensor> = match sum {
            Some(g) if n > 1 => g
                .iter()
                .map(|g| g.scale(1.0 / n as f64))
                .collect::<Result<_>>()?,
            Some(g) => g,
            None => Vec::new(),
        };
        let loss = total / n as f64;
        let lr = self.schedule.lr(self.step as usize);
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
            tokens: n * b * t,
            saved_bytes,
            comm: CommStats::default(),
        })
    }

    /// The loss, the gradients (in `visit` order) and the peak saved bytes of one micro-batch of the step.
    pub(crate) fn micro_step(
        &mut self,
        micro: usize,
        batch: &Batch,
    ) -> Result<(f64, Vec<Tensor>, usize)> {
        let (tape, leaves, loss) = self.forward_micro(micro, batch)?;
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
        Ok((loss.item()?, grads, saved_bytes))
    }

    /// A micro-batch's forward pass on a fresh tape: the tape, the watched parameters and the loss. Adapter
    /// dropout draws its masks from the run's seed, the step and the micro-batch.
    pub(crate) fn forward_micro(
        &mut self,
        micro: usize,
        batch: &Batch,
    ) -> Result<(Tape, Vec<Tensor>, Tensor)> {
        let (b, t) = (self.options.batch_size, self.options.seq_len);
        let dropout = self.model.lora.as_ref().is_some_and(|l| l.dropout > 0.0);
        self.model.dropout_seed = dropout.then(|| {
            let step = Rng::derive(self.options.seed ^ 0x10ba, self.step);
            Rng::derive(step, micro as u64)
        });
        let tape = Tape::new();
        let leaves = self.model.watch(&tape);
        let loss = self.model.loss(&batch.inputs, &batch.targets, b, t);
        self.model.unwatch();
        self.model.dropout_seed = None;
        Ok((tape, leaves, loss?))
    }

    /// Mean validation loss over up to `max_batches` batches, in nats per token and bits per byte. In a
    /// data-parallel run each rank scores its rows of every batch (every rank calls it and gets the same
    /// figures).
    pub fn evaluate(&mut self, max_batches: usize) -> Result<EvalStats> {
        if self.sft.is_some() {
            return self.evaluate_sft(max_batches);
        }
        // The global batch size (rows per rank × micro-batches × ranks) lays the windows out, so the figures do
        // not depend on how a step's batch is split; each rank scores its rows a micro-batch at a time.
        let (rank, ranks) = self.rank_and_size();
        let micro = self.options.grad_accum;
        let b = self.options.batch_size * micro * ranks;
        let batches = self.mixture.val_batches(b, max_batches);
        let (mut total, mut count) = (0.0, 0usize);
        no_grad(|| -> Result<()> {
            let parts = batches.iter().flat_map(|batch| {
                let mine = batch.part(rank, ranks);
                (0..micro).map(move |i| mine.part(i, micro))
            });
            for batch in parts {
                if batch.batch_size == 0 {
                    continue;
                }
                let n = batch.targets.len();
                total += self.batch_loss(&batch)? * n as f64;
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

    /// The model's mean loss on `batch` (over its targets that are not [`IGNORE`]).
    fn batch_loss(&self, batch: &Batch) -> Result<f64> {
        self.model
            .loss(
                &batch.inputs,
                &batch.targets,
                batch.batch_size,
                batch.seq_len,
            )?
            .item()
    }

    /// The SFT validation loss: the mean over the held-out conversations' assistant tokens (up to
    /// `max_batches` batches), and per byte of those tokens' text.
    fn evaluate_sft(&mut self, max_batches: usize) -> Result<EvalStats> {
        let sft = self.sft.as_ref().expect("called for SFT runs");
        let batches = sft.val_batches(self.options.batch_size, self.options.seq_len);
        let (mut total, mut tokens, mut bytes) = (0.0, 0usize, 0usize);
        no_grad(|| -> Result<()> {
            for batch in batches.iter().take(max_batches.max(1)) {
                let kept: Vec<u32> = batch
                    .targets
                    .iter()
                    .copied()
                    .filter(|&t| t != IGNORE)
                    .collect();
                total += self.batch_loss(batch)? * kept.len() as f64;
                tokens += kept.len();
                bytes += kept
                    .iter()
                    .map(|&id| self.tokenizer.decode(&[id]).len())
                    .sum::<usize>();
            }
            Ok(())
        })?;
        let nats = total / tokens.max(1) as f64;
        Ok(EvalStats {
            nats_per_token: nats,
            bits_per_byte: nats * tokens as f64 / (std::f64::consts::LN_2 * bytes.max(1) as f64),
        })
    }
}
