//! Supervised finetuning data (the LLaMA paper's section 4): conversations from JSON lines — `{"messages":
//! [{"role", "content"}, ...]}` as TRL reads them, or Alpaca's `{"instruction", "input", "output"}` — rendered
//! with the model's chat template and tokenized with the loss on the assistant's turns only: each assistant
//! message's text as the template writes it (its content and its end-of-turn marker), found as what the
//! conversation up to that message adds to the same conversation with the generation prompt. Each example is
//! one row of a batch, cut to the row's length and padded; padding and everything outside the assistant's
//! turns get the target [`IGNORE`], which the loss skips. Examples are shuffled per epoch from the run's seed,
//! and batch `k`'s rows depend only on the seed and `k`, so a resumed run draws what an uninterrupted one would.

use super::chat::{ChatTemplate, Message};
use super::pretrained::TextTokenizer;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::rng::Rng;
use std::path::Path;

/// The target of a position the loss skips (the cross-entropy's ignore index).
pub const IGNORE: u32 = u32::MAX;

/// One tokenized conversation: its ids and, for each, whether it is a token the model learns to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftExample {
    pub ids: Vec<u32>,
    pub trained: Vec<bool>,
}

/// The conversations of a JSON-lines file (`messages`, or Alpaca's `instruction`/`input`/`output`); an error
/// names the file and line.
pub fn read_conversations(path: &Path) -> Result<Vec<Vec<Message>>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| Error::format(path, format!("line {}: {msg}", i + 1));
        let json: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("invalid json: {e}")))?;
        let messages = if let Some(list) = json.get("messages") {
            serde_json::from_value::<Vec<Message>>(list.clone())
                .map_err(|e| bad(format!("messages: {e}")))?
        } else if let (Some(instruction), Some(output)) = (
            json.get("instruction").and_then(|v| v.as_str()),
            json.get("output").and_then(|v| v.as_str()),
        ) {
            let input = json.get("input").and_then(|v| v.as_str()).unwrap_or("");
            let user = if input.is_empty() {
                instruction.to_string()
            } else {
                format!("{instruction}\n\n{input}")
            };
            vec![
                Message::new("user", user),
                Message::new("assistant", output),
            ]
        } else {
            return Err(bad(
                "neither \"messages\" nor Alpaca's \"instruction\" and \"output\"".into(),
            ));
        };
        if !messages.iter().any(|m| m.role == "assistant") {
            return Err(bad("no assistant message to learn from".into()));
        }
        out.push(messages);
    }
    if out.is_empty() {
        return Err(Error::format(path, "no conversations"));
    }
    Ok(out)
}

/// `messages` rendered with `template` and tokenized, the assistant's turns marked as trained (see the module
/// docs). An error if the template does not render a conversation as a prefix of its continuation.
pub fn tokenize_conversation(
    template: &ChatTemplate,
    tokenizer: &TextTokenizer,
    messages: &[Message],
) -> Result<SftExample> {
    let mut example = SftExample {
        ids: Vec::new(),
        trained: Vec::new(),
    };
    let mut done = String::new();
    let mut add = |text: &str, trained: bool, done: &mut String| -> Result<()> {
        let Some(new) = text.strip_prefix(done.as_str()) else {
            return Err(Error::invalid(
                "chat template",
                "a conversation is not rendered as the start of its continuation, so the assistant's turns \
                 cannot be told apart",
            ));
        };
        let ids = tokenizer.encode_with_special(new);
        example
            .trained
            .extend(std::iter::repeat_n(trained, ids.len()));
        example.ids.extend(ids);
        *done = text.to_string();
        Ok(())
    };
    for (i, m) in messages.iter().enumerate() {
        if m.role == "assistant" {
            add(&template.render(&messages[..i], true)?, false, &mut done)?;
            add(&template.render(&messages[..=i], false)?, true, &mut done)?;
        }
    }
    add(&template.render(messages, false)?, false, &mut done)?;
    Ok(example)
}

/// Tokenized training and held-out conversations, and the batches drawn from them.
pub struct SftData {
    pub train: Vec<SftExample>,
    pub val: Vec<SftExample>,
    /// The id padding fills rows with (never a target).
    pub pad: u32,
    seed: u64,
}

impl SftData {
    /// Reads, renders and tokenizes `path`, holding out every `1 / val_fraction`-th conversation (at least one
    /// when there are two or more) for the SFT validation loss.
    pub fn load(
        path: &Path,
        template: &ChatTemplate,
        tokenizer: &TextTokenizer,
        val_fraction: f64,
        seed: u64,
    ) -> Result<SftData> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(Error::invalid(
                "--sft-val-fraction",
                format!("{val_fraction} is not in [0, 1)"),
            ));
        }
        let conversations = read_conversations(path)?;
        let every = if val_fraction > 0.0 && conversations.len() >= 2 {
            ((1.0 / val_fraction).round() as usize).clamp(2, conversations.len())
        } else {
            usize::MAX
        };
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (i, messages) in conversations.iter().enumerate() {
            let example = tokenize_conversation(template, tokenizer, messages)
                .map_err(|e| Error::format(path, format!("conversation {}: {e}", i + 1)))?;
            if (i + 1) % every == 0 {
                val.push(example);
            } else {
                train.push(example);
            }
        }
        Ok(SftData {
            train,
            val,
            pad: tokenizer.eos_id().unwrap_or(0),
            seed,
        })
    }

    /// Rows of `examples` as a batch of `seq_len` positions: inputs `ids[..T]`, targets `ids[1..=T]` where
    /// trained, [`IGNORE`] elsewhere and in the padding.
    pub fn rows(&self, examples: &[&SftExample], seq_len: usize) -> Batch {
        let mut batch = Batch {
            inputs: Vec::with_capacity(examples.len() * seq_len),
            targets: Vec::with_capacity(examples.len() * seq_len),
            batch_size: examples.len(),
            seq_len,
        };
        for e in examples {
            for t in 0..seq_len {
                batch.inputs.push(e.ids.get(t).copied().unwrap_or(self.pad));
                let target = match (e.ids.get(t + 1), e.trained.get(t + 1)) {
                    (Some(&id), Some(true)) if t < e.ids.len() => id,
                    _ => IGNORE,
                };
                batch.targets.push(target);
            }
        }
        batch
    }

    /// The `micro`-th micro-batch of `step` (`rows` rows of `seq_len`): training examples in an order
    /// reshuffled every epoch from the seed, so it depends only on the seed, the step and the micro-batch.
    pub fn batch(
        &self,
        step: u64,
        micro: usize,
        micros: usize,
        rows: usize,
        seq_len: usize,
    ) -> Batch {
        let n = self.train.len().max(1);
        let first = (step as usize * micros + micro) * rows;
        // A batch spans at most a few epochs: shuffle each once.
        let mut shuffled: Option<(usize, Vec<usize>)> = None;
        let picked: Vec<&SftExample> = (first..first + rows)
            .map(|k| {
                let (epoch, at) = (k / n, k % n);
                if shuffled.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    shuffled = Some((epoch, self.order(epoch as u64)));
                }
                let order = &shuffled.as_ref().expect("set above").1;
                &self.train[order[at]]
            })
            .collect();
        self.rows(&picked, seq_len)
    }

    /// The training examples' order in `epoch` (a Fisher–Yates shuffle from the seed and the epoch).
    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        let mut rng = Rng::new(Rng::derive(self.seed ^ 0x5f7, epoch));
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        order
    }

    /// The held-out examples in batches of `rows`.
    pub fn val_batches(&self, rows: usize, seq_len: usize) -> Vec<Batch> {
        let all: Vec<&SftExample> = self.val.iter().collect();
        all.chunks(rows.max(1))
            .map(|chunk| self.rows(chunk, seq_len))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Tokenizer;

    /// ChatML, as SmolLM2 writes it, over our byte tokenizer (one id per byte; `<s>`, `</s>` special).
    fn setup() -> (ChatTemplate, TextTokenizer) {
        let template = ChatTemplate::new(
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>\n{% endfor %}\
             {% if add_generation_prompt %}<assistant>{% endif %}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let tokenizer = TextTokenizer::Ours(Tokenizer::train(&[b"x"], 258).unwrap());
        (template, tokenizer)
    }

    fn trained_text(tokenizer: &TextTokenizer, e: &SftExample) -> String {
        let ids: Vec<u32> = e
            .ids
            .iter()
            .zip(&e.trained)
            .filter(|(_, &t)| t)
            .map(|(&i, _)| i)
            .collect();
        tokenizer.decode(&ids)
    }

    #[test]
    fn only_the_assistants_turns_are_trained() {
        let (template, tokenizer) = setup();
        let chat = [
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello."),
            Message::new("user", "Bye"),
            Message::new("assistant", "Ciao."),
        ];
        let e = tokenize_conversation(&template, &tokenizer, &chat).unwrap();
        assert_eq!(e.ids.len(), e.trained.len());
        let whole = template.render(&chat, false).unwrap();
        assert_eq!(e.ids, tokenizer.encode_with_special(&whole));
        // The content and the end of turn that follows it; "</s>" is one special token (decoded as nothing).
        assert_eq!(trained_text(&tokenizer, &e), "Hello.\nCiao.\n");
        let ends = e
            .ids
            .iter()
            .zip(&e.trained)
            .filter(|(&i, &t)| t && i == 257)
            .count();
        assert_eq!(ends, 2, "each turn's end-of-turn token is learned");
    }

    #[test]
    fn a_template_file_renders_with_our_special_names_and_a_missing_one_is_said() {
        let (_, tokenizer) = setup();
        let err = tokenizer
            .chat_template_or_file(None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--chat-template"), "{err}");
        let dir = crate::data::TempDir::new("template-file");
        let file = dir.path().join("t.jinja");
        std::fs::write(
            &file,
            "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}",
        )
        .unwrap();
        let t = tokenizer.chat_template_or_file(Some(&file)).unwrap();
        let text = t.render(&[Message::new("user", "hi")], false).unwrap();
        assert_eq!(text, "<s>hi</s>");
        assert_eq!(tokenizer.encode_with_special(&text), [256, 104, 105, 257]);
        assert!(tokenizer
            .chat_template_or_file(Some(&dir.path().join("none")))
            .is_err());
    }

    #[test]
    fn a_template_that_rewrites_earlier_turns_is_refused() {
        let (_, tokenizer) = setup();
        // Shows only the last message: a longer conversation does not extend a shorter one.
        let last = ChatTemplate::new(
            "{{ messages[-1].content }}{% if add_generation_prompt %}>{% endif %}",
            "",
            "",
        )
        .unwrap();
        let chat = [Message::new("user", "Hi"), Message::new("assistant", "Yo")];
        let err = tokenize_conversation(&last, &tokenizer, &chat).unwrap_err();
        assert!(
            err.to_string().contains("start of its continuation"),
            "{err}"
        );
    }

    #[test]
    fn conversations_are_read_in_both_layouts_and_bad_lines_are_named() {
        let dir = crate::data::TempDir::new("sft");
        let path = dir.path().join("chats.jsonl");
        std::fs::write(
            &path,
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n\n\
             {\"instruction\": \"Add\", \"input\": \"1 2\", \"output\": \"3\"}\n\
             {\"instruction\": \"Say hi\", \"output\": \"hi\"}\n",
        )
        .unwrap();
        let chats = read_conversations(&path).unwrap();
        assert_eq!(chats.len(), 3);
        assert_eq!(chats[1][0], Message::new("user", "Add\n\n1 2"));
        assert_eq!(chats[1][1], Message::new("assistant", "3"));
        assert_eq!(chats[2][0], Message::new("user", "Say hi"));
        for (bad, why) in [
            ("{\"text\": \"x\"}", "neither"),
            (
                "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}",
                "no assistant",
            ),
            ("{\"messages\": [{\"role\": \"user\"}]}", "messages"),
            ("not json", "invalid json"),
        ] {
            std::fs::write(
                &path,
                format!("{{\"instruction\": \"a\", \"output\": \"b\"}}\n{bad}\n"),
            )
            .unwrap();
            let err = read_conversations(&path).unwrap_err().to_string();
            assert!(err.contains("line 2") && err.contains(why), "{err}");
        }
        std::fs::write(&path, "\n").unwrap();
        assert!(read_conversations(&path)
            .unwrap_err()
            .to_string()
            .contains("no conversations"));
    }

    #[test]
    fn rows_are_cut_padded_and_masked_and_batches_depend_on_the_step_only() {
        let (template, tokenizer) = setup();
        let dir = crate::data::TempDir::new("sft-batches");
        let path = dir.path().join("chats.jsonl");
        let lines: Vec<String> = (0..10)
            .map(|i| format!("{{\"instruction\": \"q{i}\", \"output\": \"answer {i}\"}}"))
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let data = SftData::load(&path, &template, &tokenizer, 0.2, 7).unwrap();
        assert_eq!((data.train.len(), data.val.len()), (8, 2));
        let e = &data.train[0];
        let long = data.rows(&[e], e.ids.len() + 3);
        let n = e.ids.len();
        assert_eq!(&long.inputs[..n], &e.ids[..]);
        assert!(long.inputs[n..].iter().all(|&i| i == data.pad));
        for t in 0..n + 3 {
            let want = if t + 1 < n && e.trained[t + 1] {
                e.ids[t + 1]
            } else {
                IGNORE
            };
            assert_eq!(long.targets[t], want, "position {t}");
        }
        let short = data.rows(&[e], 5);
        assert_eq!(short.inputs, e.ids[..5]);
        // Every example once per epoch of 8 rows; the same step and micro-batch, the same rows.
        let epoch: Vec<Batch> = (0..4).map(|s| data.batch(s, 0, 1, 2, 12)).collect();
        let mut seen: Vec<Vec<u32>> = epoch
            .iter()
            .flat_map(|b| b.inputs.chunks(12).map(|r| r.to_vec()).collect::<Vec<_>>())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 8);
        assert_eq!(
            data.batch(2, 1, 2, 2, 12).inputs,
            data.batch(2, 1, 2, 2, 12).inputs
        );
        assert_eq!(
            data.batch(1, 1, 2, 2, 12).inputs,
            data.batch(3, 0, 1, 2, 12).inputs
        );
        assert_eq!(data.val_batches(3, 12).len(), 1);
    }
}
