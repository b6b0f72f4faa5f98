//! Generation with a KV cache: each new token runs the model on one position and attends to the cached keys
//! and values, so it costs O(T) instead of O(T²). Sampling: greedy, temperature and top-p (nucleus).

use super::kv_cache::KvCache;
use super::model::Llama;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tape::no_grad;

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
