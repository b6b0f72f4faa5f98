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
    draw(probs, rng.uniform() * mass)
}

/// The id whose cumulative weight first reaches `r` (the last when rounding leaves `r` unreached).
fn draw(probs: &[(u32, f64)], mut r: f64) -> u32 {
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
        let mut cache = KvCache::with_capacity(prompt.len() + max_new.min(room));
        let mut logits = model.forward_last(prompt, 1, prompt.len(), Some(&mut cache))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::Config;
    use crate::DType;

    /// How often each token is drawn from `logits` in `n` draws.
    fn frequencies(logits: &[f32], sampling: Sampling, n: usize) -> Vec<f64> {
        let mut rng = Rng::new(7);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[sample(logits, sampling, &mut rng) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    }

    fn near(got: &[f64], want: &[f64]) -> bool {
        got.iter().zip(want).all(|(g, w)| (g - w).abs() < 0.025)
    }

    #[test]
    fn greedy_takes_the_first_largest_logit() {
        let greedy = Sampling {
            temperature: 0.0,
            top_p: 1.0,
        };
        let mut rng = Rng::new(1);
        assert_eq!(sample(&[0.1, 2.0, -1.0, 2.0], greedy, &mut rng), 1);
        assert_eq!(sample(&[-3.0, -5.0], greedy, &mut rng), 0);
    }

    #[test]
    fn draws_follow_the_tempered_probabilities_within_the_nucleus() {
        let all = |temperature| Sampling {
            temperature,
            top_p: 1.0,
        };
        let l3 = 3f32.ln();
        // p ∝ (1, 3) at temperature 1, (1, √3) at temperature 2.
        let f = frequencies(&[0.0, l3], all(1.0), 8000);
        assert!(near(&f, &[0.25, 0.75]), "{f:?}");
        let s3 = 3f64.sqrt();
        let f = frequencies(&[0.0, l3], all(2.0), 8000);
        assert!(near(&f, &[1.0 / (1.0 + s3), s3 / (1.0 + s3)]), "{f:?}");
        // p = (0.5, 0.3, 0.2): top-p 0.8 keeps the first two, renormalized to (0.625, 0.375).
        let logits = [5f32.ln(), l3, 2f32.ln()];
        let f = frequencies(
            &logits,
            Sampling {
                temperature: 1.0,
                top_p: 0.8,
            },
            8000,
        );
        assert!(near(&f, &[0.625, 0.375, 0.0]) && f[2] == 0.0, "{f:?}");
        // A nucleus reached exactly by the first token holds that token alone.
        let f = frequencies(
            &[0.0, 0.0],
            Sampling {
                temperature: 1.0,
                top_p: 0.5,
            },
            200,
        );
        assert_eq!(f, [1.0, 0.0]);
    }

    #[test]
    fn large_logits_are_sampled_as_their_differences_say() {
        // exp(1000) overflows: the probabilities are taken relative to the largest logit.
        let f = frequencies(
            &[1000.0, 990.0, 0.0],
            Sampling {
                temperature: 1.0,
                top_p: 1.0,
            },
            200,
        );
        assert_eq!(f, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn a_draw_takes_the_first_id_whose_cumulative_weight_reaches_it() {
        let probs = [(7, 0.5), (9, 0.25), (4, 0.25)];
        assert_eq!(draw(&probs, 0.2), 7);
        assert_eq!(draw(&probs, 0.5), 7);
        assert_eq!(draw(&probs, 0.6), 9);
        assert_eq!(draw(&probs, 0.9), 4);
        // Rounding can leave a little of `r` after the last weight: the last id takes it.
        assert_eq!(draw(&probs, 1.0 + 1e-12), 4);
    }

    #[test]
    fn generation_stops_at_the_stop_token_and_the_context_length() {
        let mut config: Config = Config::preset("tiny").unwrap().config;
        config.max_seq_len = 8;
        let model = Llama::new(config, DType::F32, 3).unwrap();
        let greedy = Sampling {
            temperature: 0.0,
            top_p: 1.0,
        };
        let mut rng = Rng::new(1);
        assert!(generate(&model, &[], 4, greedy, None, &mut rng).is_err());
        let free = generate(&model, &[5, 6, 7], 10, greedy, None, &mut rng).unwrap();
        assert_eq!(free.len(), 5, "8 positions, 3 of them the prompt: {free:?}");
        // Greedy with the cache equals greedy over the whole sequence each time.
        let mut ids = vec![5u32, 6, 7];
        for &next in &free[..4] {
            let logits = no_grad(|| model.forward(&ids, 1, ids.len(), None)).unwrap();
            let row = logits.to_vec::<f32>().unwrap();
            let vocab = model.config.vocab_size;
            assert_eq!(sample(&row[row.len() - vocab..], greedy, &mut rng), next);
            ids.push(next);
        }
        let stopped = generate(&model, &[5, 6, 7], 10, greedy, Some(free[1]), &mut rng).unwrap();
        assert_eq!(stopped, free[..2]);
    }
}
