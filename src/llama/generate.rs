//! Generation with a KV cache: each new token runs the model on one position and attends to the cached keys
//! and values, so it costs O(T) instead of O(T²). Sampling: greedy, temperature and top-p (nucleus).

use super::model::Llama;
use crate::backend::cpu::elementwise::gather;
use crate::backend::cpu::StorageElement;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tape::no_grad;
use crate::tensor::Tensor;

/// Keys and values of every layer for the positions seen so far, `[B, Hkv, T, D]` each.
#[derive(Default)]
pub struct KvCache {
    keys: Vec<Option<Tensor>>,
    values: Vec<Option<Tensor>>,
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends this step's keys and values of `layer` (`[B, Hkv, n, D]`) and returns views of the whole cached
    /// sequence. Each layer's buffers hold `max_len` positions, allocated once; the views returned by the
    /// previous step are dropped by then, so the buffers are written in place.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
        max_len: usize,
    ) -> Result<(Tensor, Tensor)> {
        if self.keys.len() <= layer {
            self.keys.resize(layer + 1, None);
            self.values.resize(layer + 1, None);
        }
        if k.is_cuda() {
            return Err(Error::Device {
                op: "kv cache",
                msg: format!(
                    "generation with a KV cache runs on the cpu; move the model there first (keys are on {})",
                    k.device()
                ),
            });
        }
        let n = k.dim(2);
        if self.len + n > max_len {
            return Err(Error::invalid(
                "kv cache",
                format!(
                    "{} cached + {n} new positions exceed max_seq_len {max_len}",
                    self.len
                ),
            ));
        }
        let len = self.len;
        let write = |slot: &mut Option<Tensor>, new: &Tensor| -> Result<Tensor> {
            let (b, heads, d) = (new.dim(0), new.dim(1), new.dim(3));
            let buffer =
                slot.get_or_insert_with(|| Tensor::zeros(&[b, heads, max_len, d], new.dtype()));
            fn copy<T: StorageElement + Default>(
                buffer: &mut Tensor,
                new: &Tensor,
                len: usize,
                max_len: usize,
            ) -> Result<()> {
                let (heads, n, d) = (new.dim(1), new.dim(2), new.dim(3));
                let rows = gather(new.data::<T>(), new.layout());
                let dst = buffer.data_mut::<T>()?;
                for (r, row) in rows.chunks(d.max(1)).enumerate() {
                    let (bh, t) = (r / n, r % n);
                    let (bi, hi) = (bh / heads, bh % heads);
                    dst[((bi * heads + hi) * max_len + len + t) * d..][..d].copy_from_slice(row);
                }
                Ok(())
            }
            match new.dtype() {
                DType::F32 => copy::<f32>(buffer, new, len, max_len)?,
                DType::F64 => copy::<f64>(buffer, new, len, max_len)?,
                DType::BF16 => copy::<half::bf16>(buffer, new, len, max_len)?,
                DType::F16 => copy::<half::f16>(buffer, new, len, max_len)?,
            }
            buffer.narrow(2, 0, len + n)
        };
        let k = write(&mut self.keys[layer], &k)?;
        let v = write(&mut self.values[layer], &v)?;
        Ok((k, v))
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

/// How the next token is chosen.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f64,
    /// Keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f64,
}

/// Picks a token from `logits` (one row).
pub fn sample(logits: &[f32], sampling: Sampling, rng: &mut Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if sampling.temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, ((v as f64 - max) / sampling.temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (i, p) in probs.iter().enumerate() {
        kept += p.1 / total;
        if kept >= sampling.top_p {
            cut = i + 1;
            break;
        }
    }
    let probs = &probs[..cut];
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.uniform() * mass;
    for &(id, p) in probs {
        r -= p;
        if r <= 0.0 {
            return id;
        }
    }
    probs[probs.len() - 1].0
}

/// Continues `prompt` by up to `max_new` tokens (stopping early at `stop`), returning only the new tokens.
pub fn generate(
    model: &Llama,
    prompt: &[u32],
    max_new: usize,
    sampling: Sampling,
    stop: Option<u32>,
    rng: &mut Rng,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::invalid("prompt", "needs at least one token"));
    }
    let vocab = model.config.vocab_size;
    let room = model.config.max_seq_len.saturating_sub(prompt.len());
    no_grad(|| {
        let mut cache = KvCache::new();
        let mut logits = model.forward(prompt, 1, prompt.len(), Some(&mut cache))?;
        let mut out = Vec::new();
        for _ in 0..max_new.min(room) {
            let last = logits
                .narrow(1, logits.dim(1) - 1, 1)?
                .to_dtype(crate::DType::F32)?;
            let row = last.to_vec::<f32>()?;
            let next = sample(&row[row.len() - vocab..], sampling, rng);
            out.push(next);
            if Some(next) == stop || cache.len() >= model.config.max_seq_len {
                break;
            }
            logits = model.forward(&[next], 1, 1, Some(&mut cache))?;
        }
        Ok(out)
    })
}
