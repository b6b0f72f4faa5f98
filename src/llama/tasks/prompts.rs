//! Each benchmark's documents as lm-evaluation-harness 0.4 turns them into requests: its prompt template, its
//! preprocessing (HellaSwag's bracket removal, WinoGrande's partial scoring, LAMBADA's last word, MMLU's
//! lettered choices and five dev-split examples), its choices and its gold answer.

use super::Doc;
use crate::error::{Error, Result};
use serde_json::Value;

/// A field of a row, as the error names it when it is missing or of another type.
pub(super) struct Row<'a> {
    pub value: &'a Value,
    /// `file line N` for errors.
    pub place: &'a str,
}

impl Row<'_> {
    fn field(&self, name: &str) -> Result<&Value> {
        self.value
            .get(name)
            .ok_or_else(|| self.error(format!("has no field {name:?}")))
    }

    pub fn str(&self, name: &str) -> Result<&str> {
        self.field(name)?
            .as_str()
            .ok_or_else(|| self.error(format!("field {name:?} is not a string")))
    }

    pub fn strings(&self, name: &str) -> Result<Vec<String>> {
        let list = self.field(name)?;
        let strings = list.as_array().and_then(|items| {
            items
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        });
        match strings {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(self.error(format!("field {name:?} is not a list of strings"))),
        }
    }

    /// An index given as a number or as a decimal string (`"3"`), minus `base`.
    pub fn index(&self, name: &str, base: usize) -> Result<usize> {
        let v = self.field(name)?;
        let n = v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
        n.and_then(|n| (n as usize).checked_sub(base))
            .ok_or_else(|| self.error(format!("field {name:?} is not an index: {v}")))
    }

    pub fn bool(&self, name: &str) -> Result<bool> {
        self.field(name)?
            .as_bool()
            .ok_or_else(|| self.error(format!("field {name:?} is not true or false")))
    }

    pub fn error(&self, msg: String) -> Error {
        Error::Format {
            path: self.place.into(),
            msg,
        }
    }
}

/// A document whose requests are `(context, " " + choice)` for each choice, as most tasks are.
fn choose(row: &Row, context: String, choices: Vec<String>, gold: usize) -> Result<Doc> {
    if gold >= choices.len() {
        return Err(row.error(format!(
            "the answer {gold} is not one of the {} choices",
            choices.len()
        )));
    }
    Ok(Doc {
        requests: choices
            .iter()
            .map(|c| (context.clone(), format!(" {c}")))
            .collect(),
        choices,
        gold,
        group: 0,
    })
}

/// HellaSwag's `preprocess`: strip, `" [title]"` → `". "`, bracketed spans removed, double spaces halved.
pub fn hellaswag_clean(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    // Python's re.sub("\\[.*?\\]", "", text): the shortest `[...]` not crossing a line end.
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find([']', '\n']) {
            Some(close) if after.as_bytes()[close] == b']' => rest = &after[close + 1..],
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

/// Python's `str.capitalize`: the first character upper case, the rest lower case.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

pub(super) fn hellaswag(row: &Row) -> Result<Doc> {
    let context = format!("{} {}", row.str("ctx_a")?, capitalize(row.str("ctx_b")?));
    let query = hellaswag_clean(&format!("{}: {context}", row.str("activity_label")?));
    let choices = row
        .strings("endings")?
        .iter()
        .map(|e| hellaswag_clean(e))
        .collect();
    choose(row, query, choices, row.index("label", 0)?)
}

pub(super) fn piqa(row: &Row) -> Result<Doc> {
    let query = format!("Question: {}\nAnswer:", row.str("goal")?);
    let choices = vec![row.str("sol1")?.to_owned(), row.str("sol2")?.to_owned()];
    choose(row, query, choices, row.index("label", 0)?)
}

/// ARC and OpenBookQA rows as OLMo's request files hold them: `query` is `"Question: ...\nAnswer:"`, with
/// `choices` and `gold`. OpenBookQA's harness prompt is the bare question stem.
pub(super) fn olmo_choice(row: &Row, bare_stem: bool) -> Result<Doc> {
    let query = row.str("query")?;
    let query = if bare_stem {
        query
            .strip_prefix("Question: ")
            .and_then(|q| q.strip_suffix("\nAnswer:"))
            .ok_or_else(|| row.error("query is not \"Question: ...\\nAnswer:\"".into()))?
    } else {
        query
    };
    choose(
        row,
        query.to_owned(),
        row.strings("choices")?,
        row.index("gold", 0)?,
    )
}

/// WinoGrande's partial scoring: the blank filled with each option is the context, and the text after the
/// blank (the same for both) is the scored continuation.
pub(super) fn winogrande(row: &Row) -> Result<Doc> {
    let sentence = row.str("sentence")?;
    let blank = sentence
        .find('_')
        .ok_or_else(|| row.error("the sentence has no blank \"_\"".into()))?;
    let target = sentence[blank + 1..].trim();
    let choices: Vec<String> = [row.str("option1")?, row.str("option2")?]
        .iter()
        .map(|o| format!("{}{o}", &sentence[..blank]))
        .collect();
    let gold = row.index("answer", 1)?;
    if gold > 1 {
        return Err(row.error(format!("answer {} is not 1 or 2", gold + 1)));
    }
    Ok(Doc {
        requests: choices
            .iter()
            .map(|c| (c.clone(), format!(" {target}")))
            .collect(),
        choices,
        gold,
        group: 0,
    })
}

pub(super) fn boolq(row: &Row) -> Result<Doc> {
    let query = format!(
        "{}\nQuestion: {}?\nAnswer:",
        row.str("passage")?,
        row.str("question")?
    );
    let gold = usize::from(row.bool("answer")?);
    choose(row, query, vec!["no".into(), "yes".into()], gold)
}

pub(super) fn siqa(row: &Row) -> Result<Doc> {
    let query = format!("Q: {} {}\nA:", row.str("context")?, row.str("question")?);
    let choices = ["answerA", "answerB", "answerC"]
        .iter()
        .map(|f| row.str(f).map(str::to_owned))
        .collect::<Result<Vec<_>>>()?;
    choose(row, query, choices, row.index("label", 1)?)
}

/// LAMBADA (OpenAI's text, from OLMo's request file: `query` and `answers_text`): the text but its last
/// space-separated word is the context, `" " + word` the continuation.
pub(super) fn lambada(row: &Row) -> Result<Doc> {
    let answers = row.strings("answers_text")?;
    let text = format!("{} {}", row.str("query")?, answers[0]);
    let (context, word) = text.rsplit_once(' ').expect("a space was put in");
    Ok(Doc {
        requests: vec![(context.to_owned(), format!(" {word}"))],
        choices: Vec::new(),
        gold: 0,
        group: 0,
    })
}

/// One MMLU question without its subject's description: the question, the lettered choices, `Answer:`.
fn mmlu_question(row: &Row) -> Result<(String, usize)> {
    let choices = row.strings("choices")?;
    if choices.len() != 4 {
        return Err(row.error(format!("has {} choices, not 4", choices.len())));
    }
    let mut text = row.str("question")?.trim().to_owned();
    for (letter, choice) in ["A", "B", "C", "D"].iter().zip(&choices) {
        text.push_str(&format!("\n{letter}. {choice}"));
    }
    text.push_str("\nAnswer:");
    let gold = row.index("answer", 0)?;
    if gold > 3 {
        return Err(row.error(format!("answer {gold} is not 0..=3")));
    }
    Ok((text, gold))
}

/// The prefix of every question of an MMLU subject: its description and the first `examples` of its dev
/// split, each answered.
pub(super) fn mmlu_prefix(subject: &str, examples: &[Row]) -> Result<String> {
    let mut prefix = format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        subject.replace('_', " ")
    );
    for row in examples {
        let (text, gold) = mmlu_question(row)?;
        prefix.push_str(&format!("{text} {}\n\n", ["A", "B", "C", "D"][gold]));
    }
    Ok(prefix)
}

pub(super) fn mmlu(row: &Row, prefix: &str, group: usize) -> Result<Doc> {
    let (text, gold) = mmlu_question(row)?;
    let choices = ["A", "B", "C", "D"].map(str::to_owned).to_vec();
    let doc = choose(row, format!("{prefix}{text}"), choices, gold)?;
    Ok(Doc { group, ..doc })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(json: &str, f: fn(&Row) -> Result<Doc>) -> Result<Doc> {
        let value: Value = serde_json::from_str(json).unwrap();
        f(&Row {
            value: &value,
            place: "test line 1",
        })
    }

    #[test]
    fn hellaswag_brackets_and_capitals_go_as_the_harness_removes_them() {
        assert_eq!(
            hellaswag_clean(" How to cook [title] Heat the pan. [step] Add oil.  Stir [x"),
            "How to cook. Heat the pan. Add oil. Stir [x"
        );
        assert_eq!(hellaswag_clean("a [b\n] c"), "a [b\n] c");
        assert_eq!(
            hellaswag_clean("a   b"),
            "a  b",
            "Python's replace is one pass"
        );
        let doc = row(
            r#"{"activity_label": "Roof", "ctx_a": "A man sits.", "ctx_b": "he IS", "endings": ["x [y] z", "w"], "label": "1"}"#,
            hellaswag,
        )
        .unwrap();
        assert_eq!(
            doc.requests[0],
            ("Roof: A man sits. He is".into(), " x z".into())
        );
        assert_eq!((doc.choices[0].as_str(), doc.gold), ("x z", 1));
    }

    #[test]
    fn winogrande_scores_the_text_after_the_blank_given_each_filling() {
        let doc = row(
            r#"{"sentence": "Sarah beat Maria so _ won the cup. ", "option1": "Sarah", "option2": "Maria", "answer": "2"}"#,
            winogrande,
        )
        .unwrap();
        assert_eq!(
            doc.requests,
            [
                (
                    "Sarah beat Maria so Sarah".to_owned(),
                    " won the cup.".to_owned()
                ),
                (
                    "Sarah beat Maria so Maria".to_owned(),
                    " won the cup.".to_owned()
                )
            ]
        );
        assert_eq!(doc.gold, 1);
        let err = row(
            r#"{"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}"#,
            winogrande,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no blank"), "{err}");
    }

    #[test]
    fn each_template_is_the_harness_one() {
        let doc = row(
            r#"{"goal": "Open a jar", "sol1": "twist", "sol2": "bite", "label": 0}"#,
            piqa,
        )
        .unwrap();
        assert_eq!(
            doc.requests[1],
            ("Question: Open a jar\nAnswer:".into(), " bite".into())
        );
        let doc = row(
            r#"{"passage": "P.", "question": "is it", "answer": true}"#,
            boolq,
        )
        .unwrap();
        assert_eq!(
            doc.requests[1],
            ("P.\nQuestion: is it?\nAnswer:".into(), " yes".into())
        );
        assert_eq!(doc.gold, 1);
        let doc = row(
            r#"{"context": "C.", "question": "Why?", "answerA": "a", "answerB": "b", "answerC": "c", "label": "3"}"#,
            siqa,
        )
        .unwrap();
        assert_eq!(doc.requests[2], ("Q: C. Why?\nA:".into(), " c".into()));
        assert_eq!(doc.gold, 2);
        let doc = row(
            r#"{"query": "He said hello to", "answers_text": ["Anna"]}"#,
            lambada,
        )
        .unwrap();
        assert_eq!(doc.requests, [("He said hello to".into(), " Anna".into())]);
        let obqa = |json: &str| {
            let value: Value = serde_json::from_str(json).unwrap();
            olmo_choice(
                &Row {
                    value: &value,
                    place: "t",
                },
                true,
            )
        };
        let doc = obqa(
            r#"{"query": "Question: Sun is\nAnswer:", "choices": ["hot", "cold"], "gold": 0}"#,
        )
        .unwrap();
        assert_eq!(doc.requests[0], ("Sun is".into(), " hot".into()));
        assert!(obqa(r#"{"query": "Sun is", "choices": ["a"], "gold": 0}"#).is_err());
        assert!(obqa(r#"{"query": "Question: a\nAnswer:", "choices": ["a"], "gold": 1}"#).is_err());
    }

    #[test]
    fn mmlu_questions_follow_their_subject_and_answered_examples() {
        let dev: Vec<Value> = (0..2)
            .map(|i| {
                serde_json::json!({"question": format!(" Q{i}? "), "choices": ["w", "x", "y", "z"], "answer": i})
            })
            .collect();
        let rows: Vec<Row> = dev
            .iter()
            .map(|value| Row {
                value,
                place: "dev",
            })
            .collect();
        let prefix = mmlu_prefix("high_school_physics", &rows).unwrap();
        assert_eq!(
            prefix,
            "The following are multiple choice questions (with answers) about high school physics.\n\n\
             Q0?\nA. w\nB. x\nC. y\nD. z\nAnswer: A\n\nQ1?\nA. w\nB. x\nC. y\nD. z\nAnswer: B\n\n"
        );
        let value =
            serde_json::json!({"question": "Q?", "choices": ["1", "2", "3", "4"], "answer": 3});
        let doc = mmlu(
            &Row {
                value: &value,
                place: "t",
            },
            &prefix,
            7,
        )
        .unwrap();
        assert_eq!(doc.requests[3].1, " D");
        assert!(doc.requests[0]
            .0
            .ends_with("Answer: B\n\nQ?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"));
        assert_eq!((doc.gold, doc.group), (3, 7));
    }
}
