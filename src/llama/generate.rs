//! Generation with a KV cache: each new token runs the model on one position and attends to the cached keys
//! and values, so it costs O(T) instead of O(T²). Sampling as transformers' logits processors do it, in its
//! order: repetition penalty, then greedy or temperature, top-k, top-p (nucleus) and min-p. [`generate_with`]
//! streams the tokens to a callback and continues from a cache that already holds a prefix of the context (a
//! conversation's earlier turns).

use super::kv_cache::KvCache;
use super::model::Llama;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tape::no_grad;
use std::borrow::Cow;

/// How the next token is chosen. [`Sampling::greedy`] and [`Sampling::new`] leave the filters off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f64,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1: all).
    pub top_p: f64,
    /// Drop tokens less likely than `min_p` times the most likely one (0: none).
    pub min_p: f64,
    /// Logits of tokens already in the context divided by this when positive, multiplied when negative (the
    /// CTRL penalty; 1: none).
    pub repetition_penalty: f64,
}

impl Sampling {
    /// The most likely token every time.
    pub fn greedy() -> Sampling {
        Sampling::new(0.0, 1.0)
    }

    /// Temperature and nucleus sampling, the other filters off.
    pub fn new(temperature: f64, top_p: f64) -> Sampling {
        Sampling {
            temperature,
            top_k: 0,
            top_p,
            min_p: 0.0,
            repetition_penalty: 1.0,
        }
    }

    /// An error naming the first setting out of its range.
    pub fn check(&self) -> Result<()> {
        let bad = |what: &str, value: f64, range: &str| {
            Err(Error::invalid(what, format!("{value} is not in {range}")))
        };
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature", self.temperature, "[0, inf)");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top-p", self.top_p, "(0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min-p", self.min_p, "[0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition-penalty", self.repetition_penalty, "(0, inf)");
        }
        Ok(())
    }
}

/// Picks a token from `logits` (one row); `context` holds the tokens the repetition penalty applies to.
pub fn sample(logits: &[f32], sampling: Sampling, context: &[u32], rng: &mut Rng) -> u32 {
    let logits = penalize(logits, sampling.repetition_penalty, context);
    if sampling.temperature <= 0.0 {
        return argmax(&logits);
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, ((v as f64 - max) / sampling.temperature).exp()))
        .collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    if sampling.top_k > 0 {
        probs.truncate(sampling.top_k);
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (i, p) in probs.iter().enumerate() {
        kept += p.1 / total;
        if kept >= sampling.top_p {
            cut = i + 1;
            break;
        }
    }
    let floor = sampling.min_p * probs[0].1;
    cut = cut.min(probs.iter().take_while(|p| p.1 >= floor).count().max(1));
    let probs = &probs[..cut];
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    draw(probs, rng.uniform() * mass)
}

/// The first largest logit's id.
fn argmax(logits: &[f32]) -> u32 {
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
}

/// `logits` with the repetition penalty applied to every id of `context` (once each).
fn penalize<'a>(logits: &'a [f32], penalty: f64, context: &[u32]) -> Cow<'a, [f32]> {
    if penalty == 1.0 || context.is_empty() {
        return Cow::Borrowed(logits);
    }
    let mut out = logits.to_vec();
    let mut seen = vec![false; logits.len()];
    for &id in context {
        let Some(first) = seen.get_mut(id as usize).filter(|s| !**s) else {
            continue;
        };
        *first = true;
        let l = &mut out[id as usize];
        *l = if *l > 0.0 {
            (*l as f64 / penalty) as f32
        } else {
            (*l as f64 * penalty) as f32
        };
    }
    Cow::Owned(out)
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
    let room = model.config.max_seq_len.saturating_sub(prompt.len());
    let mut cache = KvCache::with_capacity(prompt.len() + max_new.min(room));
    let stop: Vec<u32> = stop.into_iter().collect();
    generate_with(
        model,
        &mut cache,
        prompt,
        max_new,
        sampling,
        &stop,
        rng,
        |_| Ok(true),
    )
}

/// Continues `context` by up to `max_new` tokens, handing each to `on_token` as it is chosen (which returns
/// whether to go on), and stopping after any id of `stop` or at the model's context length; returns the new
/// tokens. A `cache` this function filled before is reused as far as its tokens begin `context` (a
/// conversation's earlier turns are not run again); one filled otherwise is started afresh. Afterwards it
/// holds `context` and every new token but the last.
#[allow(clippy::too_many_arguments)]
pub fn generate_with(
    model: &Llama,
    cache: &mut KvCache,
    context: &[u32],
    max_new: usize,
    sampling: Sampling,
    stop: &[u32],
    rng: &mut Rng,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<Vec<u32>> {
    if context.is_empty() {
        return Err(Error::invalid("prompt", "needs at least one token"));
    }
    sampling.check()?;
    let max_len = model.config.max_seq_len;
    if context.len() > max_len {
        return Err(Error::invalid(
            "prompt",
            format!(
                "{} tokens exceed the model's context of {max_len}",
                context.len()
            ),
        ));
    }
    // What the cache holds of `context`, and at least the last token runs so there are logits to sample.
    let known = if cache.ids.len() == cache.len() {
        cache
            .ids
            .iter()
            .zip(context)
            .take_while(|(a, b)| a == b)
            .count()
    } else {
        0
    };
    cache.truncate(known.min(context.len() - 1));
    cache.ids = context[..cache.len()].to_vec();
    let vocab = model.config.vocab_size;
    let mut seen = context.to_vec();
    no_grad(|| {
        let fresh = &context[cache.len()..];
        let mut logits = model.forward_last(fresh, 1, fresh.len(), Some(cache))?;
        cache.ids.extend_from_slice(fresh);
        let limit = max_new.min(max_len - context.len());
        let mut out = Vec::new();
        while out.len() < limit {
            let last = logits
                .narrow(1, logits.dim(1) - 1, 1)?
                .to_dtype(crate::DType::F32)?;
            let row = last.to_vec::<f32>()?;
            let next = sample(&row[row.len() - vocab..], sampling, &seen, rng);
            out.push(next);
            seen.push(next);
            if !on_token(next)? || stop.contains(&next) || out.len() == limit {
                break;
            }
            logits = model.forward(&[next], 1, 1, Some(cache))?;
            cache.ids.push(next);
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
            counts[sample(logits, sampling, &[], &mut rng) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    }

    fn near(got: &[f64], want: &[f64]) -> bool {
        got.iter().zip(want).all(|(g, w)| (g - w).abs() < 0.025)
    }

    #[test]
    fn greedy_takes_the_first_largest_logit() {
        let greedy = Sampling::greedy();
        let mut rng = Rng::new(1);
        assert_eq!(sample(&[0.1, 2.0, -1.0, 2.0], greedy, &[], &mut rng), 1);
        assert_eq!(sample(&[-3.0, -5.0], greedy, &[], &mut rng), 0);
    }

    #[test]
    fn draws_follow_the_tempered_probabilities_within_the_nucleus() {
        let all = |temperature| Sampling::new(temperature, 1.0);
        let l3 = 3f32.ln();
        // p ∝ (1, 3) at temperature 1, (1, √3) at temperature 2.
        let f = frequencies(&[0.0, l3], all(1.0), 8000);
        assert!(near(&f, &[0.25, 0.75]), "{f:?}");
        let s3 = 3f64.sqrt();
        let f = frequencies(&[0.0, l3], all(2.0), 8000);
        assert!(near(&f, &[1.0 / (1.0 + s3), s3 / (1.0 + s3)]), "{f:?}");
        // p = (0.5, 0.3, 0.2): top-p 0.8 keeps the first two, renormalized to (0.625, 0.375).
        let logits = [5f32.ln(), l3, 2f32.ln()];
        let f = frequencies(&logits, Sampling::new(1.0, 0.8), 8000);
        assert!(near(&f, &[0.625, 0.375, 0.0]) && f[2] == 0.0, "{f:?}");
        // A nucleus reached exactly by the first token holds that token alone.
        let f = frequencies(&[0.0, 0.0], Sampling::new(1.0, 0.5), 200);
        assert_eq!(f, [1.0, 0.0]);
    }

    #[test]
    fn large_logits_are_sampled_as_their_differences_say() {
        // exp(1000) overflows: the probabilities are taken relative to the largest logit.
        let f = frequencies(&[1000.0, 990.0, 0.0], Sampling::new(1.0, 1.0), 200);
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
        let greedy = Sampling::greedy();
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
            assert_eq!(
                sample(&row[row.len() - vocab..], greedy, &[], &mut rng),
                next
            );
            ids.push(next);
        }
        let stopped = generate(&model, &[5, 6, 7], 10, greedy, Some(free[1]), &mut rng).unwrap();
        assert_eq!(stopped, free[..2]);
    }

    #[test]
    fn top_k_and_min_p_cut_the_unlikely_tail() {
        // p = (0.5, 0.3, 0.2).
        let logits = [5f32.ln(), 3f32.ln(), 2f32.ln()];
        let with = |top_k, min_p| Sampling {
            top_k,
            min_p,
            ..Sampling::new(1.0, 1.0)
        };
        assert_eq!(frequencies(&logits, with(1, 0.0), 200), [1.0, 0.0, 0.0]);
        let f = frequencies(&logits, with(2, 0.0), 8000);
        assert!(near(&f, &[0.625, 0.375, 0.0]) && f[2] == 0.0, "{f:?}");
        assert!(near(
            &frequencies(&logits, with(0, 0.0), 8000),
            &[0.5, 0.3, 0.2]
        ));
        // min-p 0.5 keeps what is at least 0.25 likely; 0.7 keeps the first alone; 0.4 keeps 0.2 exactly.
        let f = frequencies(&logits, with(0, 0.5), 8000);
        assert!(near(&f, &[0.625, 0.375, 0.0]) && f[2] == 0.0, "{f:?}");
        assert_eq!(frequencies(&logits, with(0, 0.7), 200), [1.0, 0.0, 0.0]);
        assert!(frequencies(&logits, with(0, 0.39), 2000)[2] > 0.1);
        // The filters combine: the shortest cut wins.
        assert_eq!(frequencies(&logits, with(3, 0.7), 200), [1.0, 0.0, 0.0]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits_once() {
        let got = penalize(&[2.0, -1.0, 3.0], 2.0, &[0, 1, 0, 99]);
        assert_eq!(&got[..], &[1.0, -2.0, 3.0]);
        assert!(matches!(penalize(&[1.0], 1.0, &[0]), Cow::Borrowed(_)));
        // Greedy picks the second token once the first has been said.
        let penalized = Sampling {
            repetition_penalty: 2.0,
            ..Sampling::greedy()
        };
        let mut rng = Rng::new(1);
        assert_eq!(sample(&[2.0, 1.5], penalized, &[], &mut rng), 0);
        assert_eq!(sample(&[2.0, 1.5], penalized, &[0], &mut rng), 1);
    }

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        let bad = [
            (Sampling::new(-1.0, 1.0), "temperature"),
            (Sampling::new(f64::NAN, 1.0), "temperature"),
            (Sampling::new(1.0, 0.0), "top-p"),
            (Sampling::new(1.0, 1.5), "top-p"),
            (
                Sampling {
                    min_p: 2.0,
                    ..Sampling::greedy()
                },
                "min-p",
            ),
            (
                Sampling {
                    repetition_penalty: 0.0,
                    ..Sampling::greedy()
                },
                "repetition-penalty",
            ),
        ];
        for (sampling, name) in bad {
            let err = sampling.check().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        assert!(Sampling::greedy().check().is_ok());
    }

    #[test]
    fn a_reused_cache_continues_exactly_as_a_fresh_one() {
        let config: Config = Config::preset("tiny").unwrap().config;
        let model = Llama::new(config, DType::F32, 5).unwrap();
        let greedy = Sampling::greedy();
        let mut rng = Rng::new(1);
        let run = |cache: &mut KvCache, context: &[u32]| {
            let mut streamed = Vec::new();
            let out = generate_with(
                &model,
                cache,
                context,
                4,
                greedy,
                &[],
                &mut Rng::new(1),
                |t| {
                    streamed.push(t);
                    Ok(true)
                },
            )
            .unwrap();
            assert_eq!(out, streamed, "every token is handed over as it comes");
            out
        };
        let mut cache = KvCache::new();
        let first = run(&mut cache, &[5, 6, 7]);
        assert_eq!(
            cache.len(),
            3 + 3,
            "the context and every new token but the last"
        );
        // A second turn that extends the first, one that departs from it, and a cache filled elsewhere.
        let mut longer = vec![5, 6, 7];
        longer.extend(&first);
        longer.extend([9, 10]);
        let departing = [5, 6, 11, 12];
        for context in [&longer[..], &departing[..], &[5, 6, 7][..]] {
            let reused = run(&mut cache, context);
            let fresh = generate(&model, context, 4, greedy, None, &mut rng).unwrap();
            assert_eq!(reused, fresh, "{context:?}");
        }
        let mut elsewhere = KvCache::new();
        no_grad(|| model.forward(&[1, 2, 3], 1, 3, Some(&mut elsewhere))).unwrap();
        let fresh = generate(&model, &[1, 2, 4], 4, greedy, None, &mut rng).unwrap();
        assert_eq!(run(&mut elsewhere, &[1, 2, 4]), fresh);
        // The callback can stop it.
        let mut cache = KvCache::new();
        let out = generate_with(&model, &mut cache, &[5], 9, greedy, &[], &mut rng, |_| {
            Ok(false)
        });
        assert_eq!(out.unwrap().len(), 1);
    }
}
