//! Log-likelihood requests as lm-evaluation-harness scores them: `log p(continuation | context)` summed over the
//! continuation's tokens, and whether greedy decoding would have produced them. Context and continuation are
//! tokenized as the harness does (trailing spaces of the context move to the continuation; the continuation's
//! tokens are those the whole text has beyond the context's), and sequences longer than the model's context
//! lose tokens on the left.
//!
//! Two ways to run them, with the same results up to rounding:
//! - [`PrefixScorer`] (CPU): the requests of one document share their longest common prefix, which runs once
//!   into a KV cache; the rest of every request runs as one batch over copies of that cache. The cache is kept
//!   between documents, so a prefix they share (MMLU's five examples) runs once per subject.
//! - [`score_batched`] (any device): whole requests, sorted by length, right-padded into batches.

use crate::error::{Error, Result};
use crate::llama::model::Llama;
use crate::llama::pretrained::TextTokenizer;
use crate::llama::KvCache;
use crate::tape::no_grad;
use crate::tensor::Tensor;
use crate::DType;

/// A request's tokens: `ids[..from]` is the context, `ids[from..]` the scored continuation (`1 ≤ from <
/// ids.len()`, as [`encode`] makes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    ids: Vec<u32>,
    from: usize,
    clipped: bool,
}

impl Encoded {
    /// Context and continuation.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Where the continuation starts.
    pub fn from(&self) -> usize {
        self.from
    }

    /// Whether the continuation itself was longer than the model's context, so only its last tokens (those
    /// after the first position kept) are scored. The harness refuses such a request; we score what fits.
    pub fn clipped(&self) -> bool {
        self.clipped
    }
}

/// What a request scored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// `Σ log p(continuation token | everything before it)`, nats.
    pub log_likelihood: f64,
    /// Whether each continuation token was the most likely one (greedy decoding would have produced it).
    pub greedy: bool,
}

/// Python's `str.isspace`, which `rstrip` strips: Unicode white space and the four separators `\x1c..\x1f`.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Tokenizes a request as the harness (0.4.10 on) does: each text with BOS where the tokenizer adds it to
/// prompts, and at most `max_len + 1` tokens kept (the last is only predicted). An empty context becomes the
/// BOS token (the end-of-text token where there is none), unless the continuation starts with it.
pub fn encode(
    tokenizer: &TextTokenizer,
    context: &str,
    continuation: &str,
    max_len: usize,
) -> Result<Encoded> {
    let kept = context.trim_end_matches(python_space).len();
    let (context, moved) = context.split_at(kept);
    let (mut ids, from) = if context.is_empty() {
        let continuation = format!("{moved}{continuation}");
        let prefix = tokenizer.bos_id().or(tokenizer.eos_id()).ok_or_else(|| {
            Error::invalid(
                "eval request",
                "an empty context needs a BOS or end-of-text token",
            )
        })?;
        let continuation = tokenizer.encode(&continuation);
        if continuation.first() == Some(&prefix) {
            (continuation, 1)
        } else {
            (std::iter::once(prefix).chain(continuation).collect(), 1)
        }
    } else {
        let whole = tokenizer.encode_prompt(&format!("{context}{moved}{continuation}"));
        let context_ids = tokenizer.encode_prompt(context);
        let mut ids = context_ids.clone();
        ids.extend_from_slice(whole.get(context_ids.len()..).unwrap_or(&[]));
        (ids, context_ids.len())
    };
    if ids.len() == from {
        return Err(Error::invalid(
            "eval request",
            format!("the continuation {continuation:?} has no tokens of its own"),
        ));
    }
    let clipped = ids.len() - from > max_len;
    let (ids, from) = if ids.len() > max_len + 1 {
        let cut = ids.len() - (max_len + 1);
        ids.drain(..cut);
        (ids, from.saturating_sub(cut).max(1))
    } else {
        (ids, from)
    };
    Ok(Encoded { ids, from, clipped })
}

/// `log softmax(row)[target]` and whether `target` is the row's first maximum.
fn pick(row: &[f32], target: u32) -> (f64, bool) {
    let (mut best, mut max) = (0usize, f32::NEG_INFINITY);
    for (i, &x) in row.iter().enumerate() {
        if x > max {
            (best, max) = (i, x);
        }
    }
    let sum: f64 = row
        .iter()
        .map(|&x| (f64::from(x) - f64::from(max)).exp())
        .sum();
    let logp = f64::from(row[target as usize]) - f64::from(max) - sum.ln();
    (logp, best == target as usize)
}

/// Adds position `k`'s prediction of `ids[k + 1]` to a score.
fn add(score: &mut Scored, row: &[f32], target: u32) {
    let (logp, top) = pick(row, target);
    score.log_likelihood += logp;
    score.greedy &= top;
}

const FRESH: Scored = Scored {
    log_likelihood: 0.0,
    greedy: true,
};

/// Logits `[rows, V]` as f32 rows.
fn rows_of(logits: &Tensor) -> Result<Vec<f32>> {
    logits
        .to_dtype(DType::F32)?
        .to_device(crate::backend::Device::Cpu)?
        .to_vec::<f32>()
}

/// Scores whole requests in right-padded batches of at most `batch` sequences, longest first; works on every
/// device the model runs on. Also returns the positions run (padding included).
pub fn score_batched(
    model: &Llama,
    requests: &[Encoded],
    batch: usize,
) -> Result<(Vec<Scored>, usize)> {
    let vocab = model.config.vocab_size;
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(requests[i].ids.len()));
    let mut out = vec![FRESH; requests.len()];
    let mut run = 0;
    no_grad(|| {
        for chunk in order.chunks(batch.max(1)) {
            let t = requests[chunk[0]].ids.len() - 1;
            run += chunk.len() * t;
            let mut ids = vec![0u32; chunk.len() * t];
            for (row, &i) in chunk.iter().enumerate() {
                let input = &requests[i].ids[..requests[i].ids.len() - 1];
                ids[row * t..][..input.len()].copy_from_slice(input);
            }
            let logits = rows_of(&model.forward(&ids, chunk.len(), t, None)?)?;
            for (row, &i) in chunk.iter().enumerate() {
                let r = &requests[i];
                for k in r.from - 1..r.ids.len() - 1 {
                    add(
                        &mut out[i],
                        &logits[(row * t + k) * vocab..][..vocab],
                        r.ids[k + 1],
                    );
                }
            }
        }
        Ok((out, run))
    })
}

/// Scores each document's requests over their shared prefix, keeping the prefix's KV cache for the next
/// document (CPU).
pub struct PrefixScorer<'a> {
    model: &'a Llama,
    batch: usize,
    cache: KvCache,
    /// The logits row of the cache's last position.
    last: Vec<f32>,
    /// Positions run so far (padding included).
    run: usize,
}

impl<'a> PrefixScorer<'a> {
    /// A scorer running at most `batch` continuations at once.
    pub fn new(model: &'a Llama, batch: usize) -> PrefixScorer<'a> {
        PrefixScorer {
            model,
            batch: batch.max(1),
            cache: KvCache::new(),
            last: Vec::new(),
            run: 0,
        }
    }

    /// Positions run so far (padding included): the work done, where the requests' lengths count each shared
    /// prefix again.
    pub fn positions_run(&self) -> usize {
        self.run
    }

    /// Scores requests (any number; they need not share anything): their common prefix once through the
    /// cache, then one row per distinct remaining input.
    pub fn score(&mut self, requests: &[Encoded]) -> Result<Vec<Scored>> {
        let first = match requests.first() {
            Some(first) => first,
            None => return Ok(Vec::new()),
        };
        let shared = shared_prefix(requests);
        if shared == 0 {
            let mut out = Vec::with_capacity(requests.len());
            for r in requests {
                out.extend(self.score(std::slice::from_ref(r))?);
            }
            return Ok(out);
        }
        no_grad(|| {
            self.run_prefix(&first.ids[..shared])?;
            // One row per distinct input after the prefix (requests that differ only in the token they
            // predict share one), longest first so that batches carry little padding.
            let mut rows: Vec<&[u32]> = Vec::new();
            let mut users: Vec<Vec<usize>> = Vec::new();
            let mut index = std::collections::HashMap::new();
            for (i, r) in requests.iter().enumerate() {
                let input = &r.ids[shared..r.ids.len() - 1];
                let row = *index.entry(input).or_insert_with(|| {
                    rows.push(input);
                    users.push(Vec::new());
                    rows.len() - 1
                });
                users[row].push(i);
            }
            let mut order: Vec<usize> = (0..rows.len()).collect();
            order.sort_by_key(|&j| std::cmp::Reverse(rows[j].len()));
            let mut out = vec![FRESH; requests.len()];
            for chunk in order.chunks(self.batch) {
                let chunk: Vec<(&[u32], &[usize])> =
                    chunk.iter().map(|&j| (rows[j], &users[j][..])).collect();
                self.run_rests(requests, &chunk, shared, &mut out)?;
            }
            Ok(out)
        })
    }

    /// Leaves `prefix` in the cache and its last logits row in `self.last`, running only what the cache does
    /// not hold of it already.
    fn run_prefix(&mut self, prefix: &[u32]) -> Result<()> {
        let held = if self.cache.ids.len() == self.cache.len() {
            common(&self.cache.ids, prefix)
        } else {
            0
        };
        if held == prefix.len() && self.cache.len() == held {
            return Ok(());
        }
        // At least the last token runs, for its logits.
        let keep = held.min(prefix.len() - 1);
        self.cache.truncate(keep);
        self.cache.ids = prefix[..keep].to_vec();
        let fresh = &prefix[keep..];
        self.run += fresh.len();
        let logits = self
            .model
            .forward_last(fresh, 1, fresh.len(), Some(&mut self.cache))?;
        self.cache.ids.extend_from_slice(fresh);
        self.last = rows_of(&logits)?;
        Ok(())
    }

    /// Runs `rows` (each an input after the shared `prefix` positions, with the requests it serves) as one
    /// right-padded batch over copies of the cache, and scores those requests.
    fn run_rests(
        &mut self,
        requests: &[Encoded],
        rows: &[(&[u32], &[usize])],
        prefix: usize,
        out: &mut [Scored],
    ) -> Result<()> {
        let vocab = self.model.config.vocab_size;
        let width = rows.iter().map(|(input, _)| input.len()).max().unwrap_or(0);
        let logits = if width == 0 {
            Vec::new()
        } else {
            let mut ids = vec![0u32; rows.len() * width];
            for (row, (input, _)) in rows.iter().enumerate() {
                ids[row * width..][..input.len()].copy_from_slice(input);
            }
            self.run += rows.len() * width;
            let mut cache = self.cache.repeated(rows.len(), prefix + width)?;
            rows_of(
                &self
                    .model
                    .forward(&ids, rows.len(), width, Some(&mut cache))?,
            )?
        };
        for (row, (_, users)) in rows.iter().enumerate() {
            for &i in users.iter() {
                let r = &requests[i];
                for k in r.from - 1..r.ids.len() - 1 {
                    let logits_row = if k + 1 == prefix {
                        &self.last[..]
                    } else {
                        &logits[(row * width + k - prefix) * vocab..][..vocab]
                    };
                    add(&mut out[i], logits_row, r.ids[k + 1]);
                }
            }
        }
        Ok(())
    }
}

/// The longest prefix all `requests` share, ending at or before every context's end.
fn shared_prefix(requests: &[Encoded]) -> usize {
    let Some(first) = requests.first() else {
        return 0;
    };
    let mut shared = requests.iter().map(|r| r.from).min().unwrap_or(0);
    for r in &requests[1..] {
        shared = shared.min(common(&first.ids, &r.ids));
    }
    shared
}

/// Length of the common prefix of `a` and `b`.
fn common(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::Config;

    fn bytes() -> TextTokenizer {
        // 258 tokens: the 256 bytes and two specials, no merges, so a byte is a token.
        TextTokenizer::Ours(crate::data::Tokenizer::train(&[b"abcd"], 258).unwrap())
    }

    #[test]
    fn trailing_spaces_move_to_the_continuation_and_long_requests_lose_their_left() {
        let tok = bytes();
        let e = encode(&tok, "ab ", "c", 100).unwrap();
        assert_eq!(e.ids, tok.encode("ab c"));
        assert_eq!(e.from, 2, "the space is scored with the continuation");
        let e = encode(&tok, "abcdef", "gh", 4).unwrap();
        assert_eq!(e.ids, tok.encode("defgh"));
        assert_eq!(e.from, 3);
        let e = encode(&tok, "", "xy", 10).unwrap();
        assert_eq!((e.ids[0], e.from), (tok.bos_id().unwrap(), 1));
        let err = encode(&tok, "ab", "", 10).unwrap_err().to_string();
        assert!(err.contains("no tokens of its own"), "{err}");
        let e = encode(&tok, "ab", "cdef", 4).unwrap();
        assert_eq!((e.ids, e.from, e.clipped), (tok.encode("bcdef"), 1, false));
        // A continuation longer than the context: its last 4 tokens are scored after the one before them.
        let e = encode(&tok, "ab", "cdefg", 4).unwrap();
        assert_eq!((e.ids, e.from, e.clipped), (tok.encode("cdefg"), 1, true));
    }

    #[test]
    fn the_row_pick_is_a_log_softmax_and_ties_go_to_the_first() {
        let (logp, top) = pick(&[1.0, 3.0, 3.0, 0.0], 2);
        let z: f64 = [1.0f64, 3.0, 3.0, 0.0].iter().map(|x| x.exp()).sum();
        assert!((logp - (3.0 - z.ln())).abs() < 1e-12);
        assert!(!top, "index 1 is the first maximum");
        assert!(pick(&[1.0, 3.0, 3.0, 0.0], 1).1);
    }

    #[test]
    fn the_prefix_scorer_agrees_with_whole_batches_and_with_one_request_at_a_time() {
        let model = Llama::new(Config::preset("tiny").unwrap().config, DType::F32, 3).unwrap();
        let tok = bytes();
        // (context, continuations, longest sequence kept).
        let docs: Vec<Vec<Encoded>> = [
            ("the cat sat on the mat", vec![" on", " under the", "!"], 64),
            // Its whole prefix is in the cache, which holds more: the last token runs again for its logits.
            ("the cat sat", vec![" on", " by"], 64),
            ("the cat ran", vec![" far", " away"], 64),
            ("a", vec!["b"], 64),
            // Answers of one token after a shared space (MMLU's letters): one row serves all three.
            ("pick one:", vec![" a", " b", " c"], 64),
            ("", vec!["just text"], 64),
            // Cut on the left to 8 positions + the predicted one.
            ("a long context that gets cut", vec![" off", " down"], 8),
        ]
        .iter()
        .map(|(ctx, conts, max_len)| {
            conts
                .iter()
                .map(|c| encode(&tok, ctx, c, *max_len).unwrap())
                .collect()
        })
        .collect();
        let mut docs = docs;
        // Winogrande's shape: contexts differ, the continuation is shared; and requests sharing no first token.
        for (one, other) in [("so the cat", "so the dog"), ("cat", "dog")] {
            docs.push(vec![
                encode(&tok, one, " slept.", 64).unwrap(),
                encode(&tok, other, " slept.", 64).unwrap(),
            ]);
        }
        assert_eq!(docs[6][0].ids.len(), 9);
        let letters = &docs[5];
        let mut scorer = PrefixScorer::new(&model, 8);
        scorer.score(letters).unwrap();
        assert_eq!(
            scorer.positions_run(),
            letters[0].ids.len() - 1,
            "the context once, then the one input the three answers share"
        );
        let all: Vec<Encoded> = docs.iter().flatten().cloned().collect();
        let whole = score_batched(&model, &all, 3).unwrap().0;
        let alone: Vec<Scored> = all
            .iter()
            .flat_map(|r| score_batched(&model, std::slice::from_ref(r), 1).unwrap().0)
            .collect();
        for batch in [1, 2, 8] {
            let mut scorer = PrefixScorer::new(&model, batch);
            let shared: Vec<Scored> = docs.iter().flat_map(|d| scorer.score(d).unwrap()).collect();
            let lengths: usize = all.iter().map(|r| r.ids.len()).sum();
            assert!(scorer.positions_run() < lengths, "shared prefixes run once");
            for ((s, w), a) in shared.iter().zip(&whole).zip(&alone) {
                for other in [w, a] {
                    assert!(
                        (s.log_likelihood - other.log_likelihood).abs() < 1e-4,
                        "batch {batch}: {s:?} {other:?}"
                    );
                    assert_eq!(s.greedy, other.greedy);
                }
            }
        }
        // By hand: the log-likelihood of " on" after "the cat sat" is the sum over its tokens.
        let r = &all[0];
        let logits = rows_of(&model.forward(&r.ids, 1, r.ids.len(), None).unwrap()).unwrap();
        let v = model.config.vocab_size;
        let by_hand: f64 = (r.from..r.ids.len())
            .map(|k| pick(&logits[(k - 1) * v..][..v], r.ids[k]).0)
            .sum();
        assert!((whole[0].log_likelihood - by_hand).abs() < 1e-4);
    }
}
