//! Evaluation as in the LLaMA paper: perplexity and bits per byte on a text, and multiple-choice tasks scored
//! by the log-likelihood of each choice given the context (as EleutherAI's lm-evaluation-harness does), with
//! accuracy raw and normalized by the choice's length in bytes.

use super::model::Llama;
use super::pretrained::TextTokenizer;
use super::tasks::run::argmax;
use crate::error::{Error, Result};
use crate::tape::no_grad;
use std::path::Path;

/// Language-modelling figures on a text.
#[derive(Clone, Copy, Debug)]
pub struct TextScore {
    pub tokens: usize,
    pub nats_per_token: f64,
    pub perplexity: f64,
    /// Total nats / ln 2 over the bytes of the predicted tokens.
    pub bits_per_byte: f64,
}

/// Sum of `log p(ids[i] | ids[..i])` for `i` in `from..ids.len()`, in one forward pass.
pub fn log_likelihood(model: &Llama, ids: &[u32], from: usize) -> Result<f64> {
    if from == 0 || from > ids.len() {
        return Err(Error::invalid(
            "log_likelihood",
            format!("scored span {from}..{} needs a context", ids.len()),
        ));
    }
    let t = ids.len();
    no_grad(|| {
        let logits = model.forward(ids, 1, t, None)?;
        let v = model.config.vocab_size;
        let logp = logits.reshape(&[t, v])?.log_softmax()?.to_f64_vec();
        Ok((from..t).map(|i| logp[(i - 1) * v + ids[i] as usize]).sum())
    })
}

/// Perplexity and bits per byte of `text`, in consecutive windows of `seq_len` tokens (each window's first
/// token is the previous window's last, so every token after the first is predicted once).
pub fn score_text(
    model: &Llama,
    tokenizer: &TextTokenizer,
    text: &str,
    seq_len: usize,
) -> Result<TextScore> {
    let ids = tokenizer.encode(text);
    if ids.len() < 2 || seq_len < 2 {
        return Err(Error::invalid(
            "text",
            "needs at least two tokens and seq_len >= 2",
        ));
    }
    let seq_len = seq_len.min(model.config.max_seq_len);
    let mut total = 0.0;
    let mut start = 0;
    while start + 1 < ids.len() {
        let end = (start + seq_len).min(ids.len());
        total -= log_likelihood(model, &ids[start..end], 1)?;
        start = end - 1;
    }
    let predicted = ids.len() - 1;
    let predicted_bytes = tokenizer.decode(&ids[1..]).len().max(1);
    let nats = total / predicted as f64;
    Ok(TextScore {
        tokens: predicted,
        nats_per_token: nats,
        perplexity: nats.exp(),
        bits_per_byte: total / std::f64::consts::LN_2 / predicted_bytes as f64,
    })
}

/// One multiple-choice question.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Question {
    pub context: String,
    pub choices: Vec<String>,
    pub answer: usize,
}

/// Accuracy over a task.
#[derive(Clone, Copy, Debug)]
pub struct TaskScore {
    pub questions: usize,
    /// Fraction where the choice with the highest log-likelihood is the answer.
    pub accuracy: f64,
    /// The same with each log-likelihood divided by the choice's length in bytes.
    pub accuracy_normalized: f64,
}

/// Reads a JSONL task: one `{"context": ..., "choices": [...], "answer": i}` per line.
pub fn read_task(path: &Path) -> Result<Vec<Question>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let q: Question = serde_json::from_str(line)
            .map_err(|e| Error::format(path, format!("line {}: {e}", i + 1)))?;
        if q.choices.is_empty() || q.answer >= q.choices.len() {
            return Err(Error::format(
                path,
                format!(
                    "line {}: answer {} is not one of the choices",
                    i + 1,
                    q.answer
                ),
            ));
        }
        out.push(q);
    }
    Ok(out)
}

/// The log-likelihood of each choice given the context (context and choice tokenized separately, as the
/// harness does), with each choice's length in bytes.
pub fn score_choices(
    model: &Llama,
    tokenizer: &TextTokenizer,
    q: &Question,
) -> Result<Vec<(f64, usize)>> {
    let context = tokenizer.encode(&q.context);
    q.choices
        .iter()
        .map(|choice| {
            let mut ids = context.clone();
            ids.extend(tokenizer.encode(choice));
            Ok((
                log_likelihood(model, &ids, context.len().max(1))?,
                choice.len().max(1),
            ))
        })
        .collect()
}

/// The choice picked by log-likelihood and the one picked by log-likelihood per byte, from each choice's
/// `(log-likelihood, bytes)`; on equal scores the first choice wins, as the evaluation harness's argmax picks it.
pub fn picks(scores: &[(f64, usize)]) -> (usize, usize) {
    let raw: Vec<f64> = scores.iter().map(|s| s.0).collect();
    let per_byte: Vec<f64> = scores.iter().map(|s| s.0 / s.1 as f64).collect();
    (argmax(&raw), argmax(&per_byte))
}

/// Scores every question of a task.
pub fn score_task(
    model: &Llama,
    tokenizer: &TextTokenizer,
    questions: &[Question],
) -> Result<TaskScore> {
    let (mut raw, mut normalized) = (0usize, 0usize);
    for q in questions {
        let (by_ll, by_byte) = picks(&score_choices(model, tokenizer, q)?);
        raw += (by_ll == q.answer) as usize;
        normalized += (by_byte == q.answer) as usize;
    }
    let n = questions.len().max(1) as f64;
    Ok(TaskScore {
        questions: questions.len(),
        accuracy: raw as f64 / n,
        accuracy_normalized: normalized as f64 / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::Config;
    use crate::DType;

    #[test]
    fn a_scored_span_needs_a_context_and_an_empty_one_scores_zero() {
        let model = Llama::new(Config::preset("tiny").unwrap().config, DType::F32, 1).unwrap();
        let ids = [1u32, 5, 9, 2];
        for from in [0, 5] {
            let err = log_likelihood(&model, &ids, from).unwrap_err().to_string();
            assert!(err.contains("needs a context"), "from {from}: {err}");
        }
        assert_eq!(log_likelihood(&model, &ids, 4).unwrap(), 0.0);
        let (all, last) = (
            log_likelihood(&model, &ids, 1).unwrap(),
            log_likelihood(&model, &ids, 3).unwrap(),
        );
        assert!(all < last && last < 0.0, "{all} {last}");
    }

    #[test]
    fn each_choice_is_scored_given_the_context_and_the_likeliest_is_picked() {
        let model = Llama::new(Config::preset("tiny").unwrap().config, DType::F32, 2).unwrap();
        let tokenizer =
            TextTokenizer::Ours(crate::data::Tokenizer::train(&[b"abcd"], 258).unwrap());
        let q = Question {
            context: "ab".into(),
            choices: vec!["c".into(), "dd".into(), "a".into(), "bcd".into()],
            answer: 0,
        };
        let scores = score_choices(&model, &tokenizer, &q).unwrap();
        let context = tokenizer.encode(&q.context);
        for (choice, &(ll, bytes)) in q.choices.iter().zip(&scores) {
            let mut ids = context.clone();
            ids.extend(tokenizer.encode(choice));
            assert_eq!(ll, log_likelihood(&model, &ids, context.len()).unwrap());
            assert_eq!(bytes, choice.len());
        }
        let best = |xs: Vec<f64>| {
            (0..xs.len())
                .max_by(|&a, &b| xs[a].total_cmp(&xs[b]))
                .unwrap()
        };
        let raw = best(scores.iter().map(|s| s.0).collect());
        let normalized = best(scores.iter().map(|s| s.0 / s.1 as f64).collect());
        for answer in 0..q.choices.len() {
            let one = Question {
                answer,
                ..q.clone()
            };
            let score = score_task(&model, &tokenizer, &[one]).unwrap();
            assert_eq!(
                score.accuracy,
                f64::from(u8::from(answer == raw)),
                "answer {answer}"
            );
            assert_eq!(
                score.accuracy_normalized,
                f64::from(u8::from(answer == normalized)),
                "answer {answer}"
            );
        }
        let all: Vec<Question> = (0..4)
            .map(|answer| Question {
                answer,
                ..q.clone()
            })
            .collect();
        let score = score_task(&model, &tokenizer, &all).unwrap();
        assert_eq!((score.questions, score.accuracy), (4, 0.25));
        // Equal scores: the first choice wins, as the evaluation harness's argmax picks it.
        let tie = Question {
            context: "ab".into(),
            choices: vec!["c".into(), "c".into()],
            answer: 0,
        };
        assert_eq!(
            score_task(&model, &tokenizer, &[tie]).unwrap().accuracy,
            1.0
        );
    }

    #[test]
    fn the_normalized_pick_divides_by_bytes_and_ties_go_to_the_first() {
        // Raw: -3 beats -10. Per byte: -10 / 10 = -1 beats -3 / 1 = -3.
        assert_eq!(picks(&[(-10.0, 10), (-3.0, 1)]), (1, 0));
        assert_eq!(picks(&[(-3.0, 1), (-10.0, 10)]), (0, 1));
        // A longer choice with the same per-byte score as a shorter one: the first keeps it.
        assert_eq!(picks(&[(-4.0, 2), (-8.0, 4), (-3.0, 1)]), (2, 0));
        assert_eq!(picks(&[(-2.0, 1), (-2.0, 1)]), (0, 0));
        assert_eq!(picks(&[(-5.0, 5)]), (0, 0));
    }

    #[test]
    fn a_text_needs_two_tokens_and_windows_of_two() {
        let model = Llama::new(Config::preset("tiny").unwrap().config, DType::F32, 1).unwrap();
        // 258 tokens: the 256 bytes and two specials, no merges, so a byte is a token.
        let bytes = crate::data::Tokenizer::train(&[b"abcd"], 258).unwrap();
        let tokenizer = TextTokenizer::Ours(bytes);
        for (text, seq_len) in [("a", 8), ("ab", 1)] {
            let err = score_text(&model, &tokenizer, text, seq_len).unwrap_err();
            assert!(err.to_string().contains("at least two tokens"), "{err}");
        }
        assert_eq!(score_text(&model, &tokenizer, "ab", 2).unwrap().tokens, 1);
        let whole = score_text(&model, &tokenizer, "abcd", 8).unwrap();
        let pairs = score_text(&model, &tokenizer, "abcd", 2).unwrap();
        assert_eq!((whole.tokens, pairs.tokens), (3, 3));
        // Windows of two overlap by one token: each token after the first is predicted from the one before.
        let ids = tokenizer.encode("abcd");
        let by_hand: f64 = (0..3)
            .map(|i| -log_likelihood(&model, &ids[i..i + 2], 1).unwrap())
            .sum();
        assert!((pairs.nats_per_token * 3.0 - by_hand).abs() < 1e-9 * by_hand);
        // A token is a byte here: bits per byte is nats per token over ln 2.
        let expected = whole.nats_per_token / std::f64::consts::LN_2;
        assert!((whole.bits_per_byte - expected).abs() < 1e-12 * expected);
        assert!((whole.perplexity - whole.nats_per_token.exp()).abs() < 1e-9 * whole.perplexity);
    }
}
