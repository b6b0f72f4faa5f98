//! Data sources, their mixture, and batch sampling. [`prepare_source`] turns a UTF-8 text file into a
//! [`Source`]: the last `val_fraction` of its bytes (cut at a newline) become the validation split, both
//! splits are tokenized and cached as shards named by the corpus content hash and the tokenizer
//! fingerprint. A [`Mixture`] then draws each training window from one source with a fixed probability (the
//! source weights, normalised, as in Table 1 of the LLaMA paper) at a uniformly random start; its state
//! (generator, tokens drawn per source, batches drawn) serialises, and restoring it reproduces the exact
//! batches that would have followed. Validation windows are deterministic and never share a target token.
//!
//! Bits per byte: if a model's mean loss over the validation windows is `L` nats per target token, then
//! `bpb = L · tokens / bytes / ln 2`, where `tokens` is the number of target tokens evaluated and `bytes`
//! the number of text bytes they stand for, each source contributing its target tokens times its
//! validation split's bytes per token (`val_bytes / val_shard.len()`); see [`ValCounts`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::shard::Shard;
use crate::error::{Error, Result};
use crate::io::fnv1a_64;
use crate::rng::Rng;

/// The validation fraction LLaMA-style runs use unless told otherwise.
pub const DEFAULT_VAL_FRACTION: f64 = 0.05;

/// One tokenized corpus: its train and validation shards, their sizes in text bytes, and its place in a
/// mixture.
#[derive(Debug)]
pub struct Source {
    /// A short name for reports and cache files.
    pub name: String,
    /// The training split.
    pub train: Shard,
    /// The validation split (possibly empty).
    pub val: Shard,
    /// The number of text bytes the training split was made from.
    pub train_bytes: u64,
    /// The number of text bytes the validation split was made from.
    pub val_bytes: u64,
    /// The relative probability of drawing a training window from this source (normalised over sources).
    pub weight: f64,
    /// The number of epochs the run is planned to take of this source (informational).
    pub epochs: f64,
}

impl Source {
    /// Sets the sampling weight.
    pub fn with_weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the planned number of epochs.
    pub fn with_epochs(mut self, epochs: f64) -> Self {
        self.epochs = epochs;
        self
    }

    /// Text bytes per token of the validation split (0 when it is empty).
    pub fn val_bytes_per_token(&self) -> f64 {
        if self.val.is_empty() {
            0.0
        } else {
            self.val_bytes as f64 / self.val.len() as f64
        }
    }
}

/// Reads the UTF-8 text file `text_path`, keeps its last `val_fraction` of bytes (cut just after the newline
/// nearest that point) for validation, tokenizes both parts and writes them as shards in `cache_dir`, named
/// `<name>-<content hash>-<tokenizer fingerprint>-val<fraction>.{train,val}.tgs`. Shards already there that
/// open cleanly are reused; broken ones are rebuilt. The source gets weight 1 and 1 planned epoch.
pub fn prepare_source(
    name: &str,
    text_path: impl AsRef<Path>,
    tokenizer: &dyn crate::data::Encoder,
    cache_dir: impl AsRef<Path>,
    val_fraction: f64,
) -> Result<Source> {
    let text_path = text_path.as_ref();
    let cache_dir = cache_dir.as_ref();
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::invalid(
            "val_fraction",
            format!("must be in [0, 1), got {val_fraction}"),
        ));
    }
    let text = read_text(text_path)?;
    let cut = split_point(&text, val_fraction);
    let (train_text, val_text) = text.as_bytes().split_at(cut);
    std::fs::create_dir_all(cache_dir).map_err(|error| Error::io(cache_dir, error))?;
    let stem = format!(
        "{}-{:016x}-{:016x}-val{val_fraction}",
        file_safe_name(name),
        fnv1a_64(text.as_bytes()),
        tokenizer.fingerprint()
    );
    let vocab_size = tokenizer.vocab_size() as u32;
    let train = cached_shard(
        &cache_dir.join(format!("{stem}.train.tgs")),
        vocab_size,
        || tokenizer.encode_text(train_text.as_ref()),
    )?;
    let val = cached_shard(
        &cache_dir.join(format!("{stem}.val.tgs")),
        vocab_size,
        || tokenizer.encode_text(val_text.as_ref()),
    )?;
    Ok(Source {
        name: name.to_string(),
        train,
        val,
        train_bytes: train_text.len() as u64,
        val_bytes: val_text.len() as u64,
        weight: 1.0,
        epochs: 1.0,
    })
}

/// Reads a text corpus, which must exist, be non-empty and be valid UTF-8.
fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|error| Error::io(path, error))?;
    if bytes.is_empty() {
        return Err(Error::format(path, "text corpus is empty"));
    }
    String::from_utf8(bytes).map_err(|error| {
        Error::format(
            path,
            format!(
                "text corpus is not valid utf-8 (first bad byte at offset {})",
                error.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Where the validation split starts: just after the newline nearest `(1 - val_fraction) · len`, or at the
/// character boundary at that point when the text has no newline; `len` when `val_fraction` is 0.
fn split_point(text: &str, val_fraction: f64) -> usize {
    let len = text.len();
    let target = ((len as f64) * (1.0 - val_fraction)).round() as usize;
    if target >= len {
        return len;
    }
    let bytes = text.as_bytes();
    let after_newline_before = bytes[..target]
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map(|index| index + 1);
    let after_newline_from = bytes[target..]
        .iter()
        .position(|&byte| byte == b'\n')
        .map(|index| target + index + 1);
    let nearest = match (after_newline_before, after_newline_from) {
        (Some(before), Some(after)) if after - target < target - before => Some(after),
        (Some(before), _) => Some(before),
        (None, after) => after,
    };
    nearest.unwrap_or_else(|| {
        (target..=len)
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(len)
    })
}

/// `name` with everything but ASCII letters, digits, `-` and `_` replaced by `_`.
fn file_safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Opens the shard at `path` if it is there and valid for `vocab_size`; otherwise writes `tokens()` to it.
fn cached_shard(path: &Path, vocab_size: u32, tokens: impl FnOnce() -> Vec<u32>) -> Result<Shard> {
    if let Ok(shard) = Shard::open_expecting(path, vocab_size) {
        return Ok(shard);
    }
    Shard::write(path, &tokens(), vocab_size)?;
    Shard::open_expecting(path, vocab_size)
}

/// A batch of `batch_size` rows of `seq_len` tokens, row-major `[batch_size, seq_len]`;
/// `targets[r][t] == inputs[r][t + 1]` within the source window, so targets are the next tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Input token ids, `batch_size · seq_len` of them.
    pub inputs: Vec<u32>,
    /// Target token ids, the inputs shifted left by one.
    pub targets: Vec<u32>,
    /// The number of rows.
    pub batch_size: usize,
    /// The number of tokens per row.
    pub seq_len: usize,
}

impl Batch {
    fn with_capacity(batch_size: usize, seq_len: usize) -> Self {
        Batch {
            inputs: Vec::with_capacity(batch_size * seq_len),
            targets: Vec::with_capacity(batch_size * seq_len),
            batch_size: 0,
            seq_len,
        }
    }

    /// Rank `rank`'s share of the rows when they are split among `ranks` as evenly as possible (the first
    /// `batch_size % ranks` ranks get one row more); empty when there are fewer rows than ranks.
    pub fn part(&self, rank: usize, ranks: usize) -> Batch {
        let (base, extra) = (self.batch_size / ranks, self.batch_size % ranks);
        let start = rank * base + rank.min(extra);
        let rows = base + usize::from(rank < extra);
        let span = start * self.seq_len..(start + rows) * self.seq_len;
        Batch {
            inputs: self.inputs[span.clone()].to_vec(),
            targets: self.targets[span].to_vec(),
            batch_size: rows,
            seq_len: self.seq_len,
        }
    }

    /// Appends a window of `seq_len + 1` tokens as one row.
    fn push_window(&mut self, window: &[u32]) {
        self.inputs.extend_from_slice(&window[..window.len() - 1]);
        self.targets.extend_from_slice(&window[1..]);
        self.batch_size += 1;
    }
}

/// The sampler state that a checkpoint must keep to resume the exact batch sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixtureState {
    /// The random generator.
    pub rng: Rng,
    /// The names of the sources, in order.
    pub source_names: Vec<String>,
    /// Target tokens drawn from each source's training split.
    pub tokens_drawn: Vec<u64>,
    /// Batches drawn.
    pub batches_drawn: u64,
}

/// The size of a validation pass, to turn a mean loss into bits per byte.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValCounts {
    /// Target tokens evaluated.
    pub target_tokens: u64,
    /// Text bytes those targets stand for: per source, its target tokens × its val split's bytes per token.
    pub bytes: f64,
}

impl ValCounts {
    /// Bits per byte for a mean loss of `mean_nats_per_token` over these targets:
    /// `nats · tokens / bytes / ln 2` (NaN when there were no targets).
    pub fn bits_per_byte(&self, mean_nats_per_token: f64) -> f64 {
        mean_nats_per_token * self.target_tokens as f64 / self.bytes / std::f64::consts::LN_2
    }
}

/// A weighted mixture of sources that samples training windows and lays out validation windows.
#[derive(Debug)]
pub struct Mixture {
    sources: Vec<Source>,
    seq_len: usize,
    /// Cumulative normalised weights; the last is 1.
    cumulative_weights: Vec<f64>,
    rng: Rng,
    tokens_drawn: Vec<u64>,
    batches_drawn: u64,
    window: Vec<u32>,
}

impl Mixture {
    /// A mixture of `sources` drawing windows of `seq_len + 1` tokens, seeded with `seed`. Fails if there
    /// are no sources, `seq_len` is 0, a weight is negative or not finite, all weights are 0, the shards'
    /// vocab sizes differ, or a source's training split is shorter than `seq_len + 1` tokens.
    pub fn new(sources: Vec<Source>, seq_len: usize, seed: u64) -> Result<Mixture> {
        if sources.is_empty() {
            return Err(Error::invalid(
                "sources",
                "a mixture needs at least one source",
            ));
        }
        if seq_len == 0 {
            return Err(Error::invalid("seq_len", "must be positive"));
        }
        let vocab_size = sources[0].train.vocab_size();
        for source in &sources {
            check_source(source, seq_len, vocab_size)?;
        }
        let total_weight: f64 = sources.iter().map(|source| source.weight).sum();
        if total_weight <= 0.0 || !total_weight.is_finite() {
            return Err(Error::invalid(
                "sources",
                format!("the weights must add up to a positive number, got {total_weight}"),
            ));
        }
        let cumulative_weights = sources
            .iter()
            .scan(0.0, |sum, source| {
                *sum += source.weight / total_weight;
                Some(*sum)
            })
            .collect();
        Ok(Mixture {
            tokens_drawn: vec![0; sources.len()],
            sources,
            seq_len,
            cumulative_weights,
            rng: Rng::new(seed),
            batches_drawn: 0,
            window: vec![0; seq_len + 1],
        })
    }

    /// The sources, in order.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The number of tokens per row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The number of training batches drawn so far.
    pub fn batches_drawn(&self) -> u64 {
        self.batches_drawn
    }

    /// Target tokens drawn from source `index` so far.
    ///
    /// # Panics
    /// If there is no source `index`.
    pub fn tokens_drawn(&self, index: usize) -> u64 {
        self.tokens_drawn[index]
    }

    /// Epochs of source `index` consumed so far: target tokens drawn / tokens in its training split.
    ///
    /// # Panics
    /// If there is no source `index`.
    pub fn epochs_seen(&self, index: usize) -> f64 {
        self.tokens_drawn[index] as f64 / self.sources[index].train.len() as f64
    }

    /// The next training batch: each row picks a source with probability proportional to its weight, then
    /// a window of `seq_len + 1` tokens at a uniformly random start in that source's training split.
    pub fn next_batch(&mut self, batch_size: usize) -> Batch {
        self.next_batch_part(batch_size, 0, 1)
    }

    /// Rank `rank`'s part of the next global batch of `batch_size × ranks` windows, for data-parallel
    /// training: every rank draws the same global batch (the same generator, so the state stays the same on
    /// all ranks and a checkpoint of any of them resumes every rank) and reads only its rows,
    /// `rank · batch_size .. (rank + 1) · batch_size`. The ranks' windows are disjoint rows of one stream, so
    /// the global batch — and the loss curve — do not depend on how it is split; with one rank this is
    /// [`Mixture::next_batch`].
    ///
    /// # Panics
    /// If `rank >= ranks`.
    pub fn next_batch_part(&mut self, batch_size: usize, rank: usize, ranks: usize) -> Batch {
        assert!(rank < ranks, "rank {rank} of {ranks}");
        let mut batch = Batch::with_capacity(batch_size, self.seq_len);
        let mine = rank * batch_size..(rank + 1) * batch_size;
        for row in 0..batch_size * ranks {
            let index = self.pick_source();
            let train = &self.sources[index].train;
            let starts = (train.len() - self.seq_len) as u64;
            let start = self.rng.below(starts) as usize;
            if mine.contains(&row) {
                train.read_into(start, &mut self.window);
                batch.push_window(&self.window);
            }
            self.tokens_drawn[index] += self.seq_len as u64;
        }
        self.batches_drawn += 1;
        batch
    }

    /// A source index drawn with the normalised weights.
    fn pick_source(&mut self) -> usize {
        let draw = self.rng.uniform();
        self.source_for(draw)
    }

    /// The source a uniform `draw` in `[0, 1)` falls to: the first whose cumulative weight exceeds it, so a
    /// source of weight 0 is never chosen, and a draw on a boundary goes to the source after it.
    fn source_for(&self, draw: f64) -> usize {
        self.cumulative_weights
            .iter()
            .position(|&cumulative| draw < cumulative)
            .unwrap_or_else(|| self.last_weighted_source())
    }

    /// The last source with a positive weight (for draws that rounding puts past the last sum).
    fn last_weighted_source(&self) -> usize {
        self.sources
            .iter()
            .rposition(|source| source.weight > 0.0)
            .unwrap_or(0)
    }

    /// The state to save in a checkpoint.
    pub fn state(&self) -> MixtureState {
        MixtureState {
            rng: self.rng.clone(),
            source_names: self
                .sources
                .iter()
                .map(|source| source.name.clone())
                .collect(),
            tokens_drawn: self.tokens_drawn.clone(),
            batches_drawn: self.batches_drawn,
        }
    }

    /// Continues from a saved state; the sources must be the same, in the same order.
    pub fn restore(&mut self, state: MixtureState) -> Result<()> {
        let sources = self.sources.len();
        if state.source_names.len() != sources {
            return Err(Error::invalid(
                "state",
                format!(
                    "the saved state has {} sources but the mixture has {sources}",
                    state.source_names.len()
                ),
            ));
        }
        if state.tokens_drawn.len() != sources {
            return Err(Error::invalid(
                "state",
                format!(
                    "the saved state counts the tokens of {} sources but the mixture has {sources}",
                    state.tokens_drawn.len()
                ),
            ));
        }
        for (index, (saved, source)) in state.source_names.iter().zip(&self.sources).enumerate() {
            if *saved != source.name {
                return Err(Error::invalid(
                    "state",
                    format!(
                        "source {index} is {:?} but the saved state has {saved:?}",
                        source.name
                    ),
                ));
            }
        }
        self.rng = state.rng;
        self.tokens_drawn = state.tokens_drawn;
        self.batches_drawn = state.batches_drawn;
        Ok(())
    }

    /// The validation windows of [`Mixture::val_batches`], as `(source, start)` pairs, at most
    /// `max_windows` of them: every window when they fit, otherwise `max_windows` evenly spaced ones of the
    /// round-robin order, so a short evaluation samples the whole split rather than its beginning.
    fn val_windows(&self, max_windows: usize) -> Vec<(usize, usize)> {
        let seq_len = self.seq_len;
        let window_counts: Vec<usize> = self
            .sources
            .iter()
            .map(|source| source.val.len().saturating_sub(1) / seq_len)
            .collect();
        let rounds = window_counts.iter().copied().max().unwrap_or(0);
        let mut windows = Vec::new();
        for round in 0..rounds {
            for (index, &count) in window_counts.iter().enumerate() {
                if round < count {
                    windows.push((index, round * seq_len));
                }
            }
        }
        if windows.len() <= max_windows {
            return windows;
        }
        let total = windows.len();
        (0..max_windows)
            .map(|i| windows[i * total / max_windows])
            .collect()
    }

    /// Deterministic validation batches of `batch_size` rows, at most `max_batches` of them (the last may
    /// be smaller). Window `k` of a source is its validation tokens `k·T ..= k·T + T` (`T = seq_len`), so
    /// consecutive windows share their boundary token as an input but never a target. Sources take turns:
    /// window 0 of every source in order, then window 1 of every source, and so on, skipping sources that
    /// have run out; a source with fewer than `T + 1` validation tokens contributes nothing. When more
    /// windows exist than `batch_size · max_batches`, evenly spaced ones of that order are taken.
    ///
    /// # Panics
    /// If `batch_size` is 0.
    pub fn val_batches(&self, batch_size: usize, max_batches: usize) -> Vec<Batch> {
        assert!(batch_size > 0, "val_batches: batch_size must be positive");
        let windows = self.val_windows(batch_size.saturating_mul(max_batches));
        let mut window = vec![0u32; self.seq_len + 1];
        windows
            .chunks(batch_size)
            .map(|rows| {
                let mut batch = Batch::with_capacity(rows.len(), self.seq_len);
                for &(index, start) in rows {
                    self.sources[index].val.read_into(start, &mut window);
                    batch.push_window(&window);
                }
                batch
            })
            .collect()
    }

    /// The target tokens and text bytes of the batches [`Mixture::val_batches`] returns for the same
    /// arguments: each window of source `s` counts `seq_len` target tokens and
    /// `seq_len × val_bytes(s) / val_tokens(s)` bytes. Then `bpb = mean nats per target token × tokens /
    /// bytes / ln 2` ([`ValCounts::bits_per_byte`]).
    pub fn val_counts(&self, batch_size: usize, max_batches: usize) -> ValCounts {
        let windows = self.val_windows(batch_size.saturating_mul(max_batches));
        let seq_len = self.seq_len as f64;
        ValCounts {
            target_tokens: (windows.len() * self.seq_len) as u64,
            bytes: windows
                .iter()
                .map(|&(index, _)| seq_len * self.sources[index].val_bytes_per_token())
                .sum(),
        }
    }
}

/// Checks one source of a mixture of windows of `seq_len + 1` tokens over `vocab_size`.
fn check_source(source: &Source, seq_len: usize, vocab_size: u32) -> Result<()> {
    let what = format!("source {:?}", source.name);
    if !source.weight.is_finite() || source.weight < 0.0 {
        return Err(Error::invalid(
            what,
            format!(
                "weight must be finite and non-negative, got {}",
                source.weight
            ),
        ));
    }
    if source.train.len() < seq_len + 1 {
        return Err(Error::invalid(
            what,
            format!(
                "training split has {} tokens, fewer than seq_len + 1 = {}",
                source.train.len(),
                seq_len + 1
            ),
        ));
    }
    if source.train.vocab_size() != vocab_size || source.val.vocab_size() != vocab_size {
        return Err(Error::invalid(
            what,
            format!(
                "shards have vocab sizes {} and {}, but the mixture uses {vocab_size}",
                source.train.vocab_size(),
                source.val.vocab_size()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
