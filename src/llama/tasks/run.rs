//! Scores a task's documents and gathers what the harness reports: `acc` (the likeliest choice is the gold
//! one), `acc_norm` (likelihoods divided by each choice's length in characters), their standard errors (the
//! sample standard deviation over √n; for MMLU pooled over its subjects, whose accuracies are weighted by
//! size), and for LAMBADA the greedy-match accuracy and the perplexity `exp(−mean log-likelihood)`.

use super::score::{encode, score_batched, Encoded, PrefixScorer, Scored};
use super::{Doc, Task};
use crate::backend::Device;
use crate::error::Result;
use crate::llama::model::Llama;
use crate::llama::pretrained::TextTokenizer;
use std::time::Instant;

/// How to run a task.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Sequences per forward pass.
    pub batch: usize,
    /// Share each document's prefix through a KV cache (CPU only); otherwise whole requests in batches.
    pub shared_prefix: bool,
}

impl Options {
    /// The way that suits the model's device: shared prefixes on the CPU, whole-request batches elsewhere.
    pub fn for_model(model: &Llama, batch: usize) -> Options {
        Options {
            batch,
            shared_prefix: model.device() == Device::Cpu,
        }
    }
}

/// A task's figures.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TaskResult {
    pub task: String,
    /// Documents scored.
    pub n: usize,
    pub acc: f64,
    pub acc_stderr: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm_stderr: Option<f64>,
    /// LAMBADA's `exp(−mean log-likelihood of the last word)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    pub seconds: f64,
    pub examples_per_s: f64,
    /// Positions run through the model (padding included; a shared prefix once).
    pub positions: usize,
    /// Requests whose continuation alone exceeds the model's context (only its last tokens are scored; the
    /// harness refuses them).
    pub clipped: usize,
}

/// Scores `docs` of `task`, calling `progress` after each document.
pub fn evaluate(
    model: &Llama,
    tokenizer: &TextTokenizer,
    task: Task,
    docs: &[Doc],
    options: Options,
    progress: &mut dyn FnMut(),
) -> Result<TaskResult> {
    let start = Instant::now();
    let max_len = model.config.max_seq_len;
    let clipped = std::cell::Cell::new(0);
    let encode_doc = |doc: &Doc| -> Result<Vec<Encoded>> {
        let encoded: Vec<Encoded> = doc
            .requests
            .iter()
            .map(|(context, continuation)| encode(tokenizer, context, continuation, max_len))
            .collect::<Result<_>>()?;
        clipped.set(clipped.get() + encoded.iter().filter(|e| e.clipped()).count());
        Ok(encoded)
    };
    let mut scores: Vec<Vec<Scored>> = Vec::with_capacity(docs.len());
    let mut positions = 0;
    if options.shared_prefix {
        let mut scorer = PrefixScorer::new(model, options.batch);
        for doc in docs {
            scores.push(scorer.score(&encode_doc(doc)?)?);
            progress();
        }
        positions = scorer.positions_run();
    } else {
        // Enough documents at a time to fill batches, few enough to show progress.
        for chunk in docs.chunks(options.batch.max(1) * 4) {
            let encoded: Vec<Vec<Encoded>> = chunk.iter().map(encode_doc).collect::<Result<_>>()?;
            let flat: Vec<Encoded> = encoded.iter().flatten().cloned().collect();
            let (scored, run) = score_batched(model, &flat, options.batch)?;
            positions += run;
            let mut scored = scored.into_iter();
            for e in &encoded {
                scores.push(scored.by_ref().take(e.len()).collect());
                progress();
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut result = summarize(task, docs, &scores, seconds, positions);
    result.clipped = clipped.get();
    Ok(result)
}

/// The figures of scored documents.
pub fn summarize(
    task: Task,
    docs: &[Doc],
    scores: &[Vec<Scored>],
    seconds: f64,
    positions: usize,
) -> TaskResult {
    let n = docs.len();
    let (acc, acc_norm, perplexity) = if task == Task::Lambada {
        let hits: Vec<f64> = scores
            .iter()
            .map(|s| f64::from(u8::from(s[0].greedy)))
            .collect();
        let mean_ll = scores.iter().map(|s| s[0].log_likelihood).sum::<f64>() / n.max(1) as f64;
        (hits, None, Some((-mean_ll).exp()))
    } else {
        let (mut raw, mut norm) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (doc, s) in docs.iter().zip(scores) {
            let lls: Vec<f64> = s.iter().map(|s| s.log_likelihood).collect();
            let per_char: Vec<f64> = lls
                .iter()
                .zip(&doc.choices)
                .map(|(ll, c)| ll / c.chars().count() as f64)
                .collect();
            raw.push(f64::from(u8::from(argmax(&lls) == doc.gold)));
            norm.push(f64::from(u8::from(argmax(&per_char) == doc.gold)));
        }
        (raw, task.has_acc_norm().then_some(norm), None)
    };
    let groups: Vec<usize> = docs.iter().map(|d| d.group).collect();
    let (acc, acc_stderr) = grouped_mean_stderr(&acc, &groups);
    let acc_norm = acc_norm.map(|xs| grouped_mean_stderr(&xs, &groups));
    TaskResult {
        task: task.name().to_owned(),
        n,
        acc,
        acc_stderr,
        acc_norm: acc_norm.map(|a| a.0),
        acc_norm_stderr: acc_norm.map(|a| a.1),
        perplexity,
        seconds,
        examples_per_s: n as f64 / seconds.max(1e-9),
        positions,
        clipped: 0,
    }
}

/// Index of the first maximum (numpy's `argmax`).
pub fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// The mean and its standard error, sample standard deviation over √n (the harness's `mean_stderr`; NaN for
/// fewer than two items).
pub fn mean_stderr(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// The mean over groups weighted by their sizes (the mean over all items), with the harness's pooled standard
/// error `sqrt(Σ (nᵢ − 1)·nᵢ·seᵢ² / (N − k) / N)` when there are several groups.
pub fn grouped_mean_stderr(xs: &[f64], groups: &[usize]) -> (f64, f64) {
    let mut ids: Vec<usize> = groups.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() <= 1 {
        return mean_stderr(xs);
    }
    let (mut pooled, mut total) = (0.0, 0.0);
    for id in &ids {
        let members: Vec<f64> = xs
            .iter()
            .zip(groups)
            .filter(|(_, g)| *g == id)
            .map(|(x, _)| *x)
            .collect();
        let size = members.len() as f64;
        // A group of one adds nothing to the pooled variance (its weight nᵢ − 1 is 0; its own is undefined).
        if members.len() > 1 {
            let (_, se) = mean_stderr(&members);
            pooled += (size - 1.0) * se * se * size;
        }
        total += size;
    }
    let mean = xs.iter().sum::<f64>() / total;
    (mean, (pooled / (total - ids.len() as f64) / total).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(choices: &[&str], gold: usize, group: usize) -> Doc {
        Doc {
            requests: choices
                .iter()
                .map(|c| (String::new(), c.to_string()))
                .collect(),
            choices: choices.iter().map(|c| c.to_string()).collect(),
            gold,
            group,
        }
    }

    fn scored(lls: &[f64]) -> Vec<Scored> {
        lls.iter()
            .map(|&log_likelihood| Scored {
                log_likelihood,
                greedy: log_likelihood > -1.0,
            })
            .collect()
    }

    #[test]
    fn standard_errors_are_the_harness_formulas_by_hand() {
        // [1, 0, 1, 1]: mean 0.75, sample variance 0.25, stderr sqrt(0.25 / 4) = 0.25.
        let (mean, se) = mean_stderr(&[1.0, 0.0, 1.0, 1.0]);
        assert_eq!((mean, se), (0.75, 0.25));
        // Two groups: [1, 0] (se 0.5) and [1, 1, 1] (se 0): pooled sqrt((1·2·0.25 + 0) / (5 − 2) / 5).
        let (mean, se) = grouped_mean_stderr(&[1.0, 0.0, 1.0, 1.0, 1.0], &[0, 0, 1, 1, 1]);
        assert_eq!(mean, 0.8);
        assert!((se - (0.5f64 / 3.0 / 5.0).sqrt()).abs() < 1e-15, "{se}");
        // A third group of one (MMLU with --limit 1 on a subject): weight 0, N − k unchanged.
        let (mean, se) = grouped_mean_stderr(&[1.0, 0.0, 1.0, 1.0, 1.0, 0.0], &[0, 0, 1, 1, 1, 2]);
        assert!((mean - 4.0 / 6.0).abs() < 1e-15);
        assert!((se - (0.5f64 / 3.0 / 6.0).sqrt()).abs() < 1e-15, "{se}");
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn acc_norm_divides_by_characters_and_lambada_counts_greedy_words() {
        // Doc 0: raw picks 0 (right); per character -1.5 vs -5/3 picks 0 (right), where per byte (-5/6) would
        // pick 1. Doc 1: raw picks 0 (wrong); per character -2 vs -1 picks 1 (right).
        let docs = [doc(&["ab", "ééé"], 0, 0), doc(&["x", "yyyy"], 1, 0)];
        let scores = [scored(&[-3.0, -5.0]), scored(&[-2.0, -4.0])];
        let r = summarize(Task::Hellaswag, &docs, &scores, 2.0, 10);
        assert_eq!((r.acc, r.acc_norm), (0.5, Some(1.0)));
        assert_eq!((r.n, r.examples_per_s, r.positions), (2, 1.0, 10));
        let r = summarize(Task::Winogrande, &docs, &scores, 1.0, 0);
        assert_eq!(r.acc_norm, None, "the harness reports acc only");
        let docs = [doc(&[], 0, 0), doc(&[], 0, 0)];
        let scores = [scored(&[-0.5]), scored(&[-2.5])];
        let r = summarize(Task::Lambada, &docs, &scores, 1.0, 0);
        assert_eq!(r.acc, 0.5);
        assert!((r.perplexity.unwrap() - 1.5f64.exp()).abs() < 1e-12);
    }
}
