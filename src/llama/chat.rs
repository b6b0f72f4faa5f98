//! Chat templates: the Jinja template a model ships with (`tokenizer.chat_template` in GGUF metadata,
//! `chat_template` in a Hugging Face `tokenizer_config.json`, or a `chat_template.jinja` file) rendered with
//! minijinja under the rules transformers' `apply_chat_template` renders it with: blocks trimmed
//! (`trim_blocks`, `lstrip_blocks`), `break`/`continue`, Python's string and dict methods, `raise_exception`,
//! `strftime_now`, a `tojson` that writes what Python's `json.dumps` writes (no HTML escaping), and the
//! variables `messages`, `add_generation_prompt`, `tools` and `documents` (both none), `bos_token`,
//! `eos_token`. A template that raises, or runs past a budget of instructions (`FUEL`), is an error naming
//! the template.

use crate::error::{Error, Result};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One turn of a conversation: `role` is `system`, `user` or `assistant` (templates may accept others).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    /// A message of `role` saying `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The template's name inside its environment.
const NAME: &str = "chat_template";
/// The most template instructions one rendering may run: a conversation of a million tokens needs far fewer,
/// and a hostile template (one in a downloaded model file) that loops without end stops with an error.
const FUEL: u64 = 50_000_000;

/// A compiled chat template with the special tokens it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("source_bytes", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source` (an error names the problem and its line), rendered with these token texts (empty
    /// when the tokenizer has none).
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<ChatTemplate> {
        let source = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.clone())
            .map_err(|e| template_error("compiling", &e))?;
        Ok(ChatTemplate {
            env,
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The conversation as the model reads it; with `add_generation_prompt` the text that opens the
    /// assistant's next turn follows.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| template_error("rendering", &e))?;
        let context = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            tools => Value::from(()),
            documents => Value::from(()),
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        template
            .render(context)
            .map_err(|e| template_error("rendering", &e))
    }
}

/// The error of a template that failed while `doing` something, with minijinja's line and reason.
fn template_error(doing: &str, e: &minijinja::Error) -> Error {
    let mut msg = format!("{doing} failed: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        let _ = write!(msg, ": {inner}");
        source = inner.source();
    }
    Error::invalid("chat template", msg)
}

/// `raise_exception(message)`: the template refuses the conversation.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `value | tojson(indent=None, sort_keys=False)`: what Python's `json.dumps(value, ensure_ascii=False)`
/// writes (`", "` and `": "` between items, or one item per line under `indent`).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    python_json(&value, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(out)
}

/// Appends `value` as Python's `json.dumps` writes it (maps in their own order unless `sort`).
fn python_json(
    value: &Value,
    indent: Option<usize>,
    sort: bool,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), minijinja::Error> {
    let (open, between) = match indent {
        Some(n) => (
            format!("\n{}", " ".repeat(n * (depth + 1))),
            format!(",\n{}", " ".repeat(n * (depth + 1))),
        ),
        None => (String::new(), ", ".to_string()),
    };
    let close = indent.map_or(String::new(), |n| format!("\n{}", " ".repeat(n * depth)));
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => match i64::try_from(value.clone()) {
            Ok(i) if value.is_integer() => write!(out, "{i}").expect("writing to a String"),
            _ => {
                let x = f64::try_from(value.clone())?;
                write!(out, "{x:?}").expect("writing to a String")
            }
        },
        ValueKind::String => python_string(value.as_str().unwrap_or_default(), out),
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if sort {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            out.push_str(&open);
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&between);
                }
                python_string(&key.to_string(), out);
                out.push_str(": ");
                python_json(&value.get_item(key)?, indent, sort, depth + 1, out)?;
            }
            out.push_str(&close);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            out.push_str(&open);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&between);
                }
                python_json(item, indent, sort, depth + 1, out)?;
            }
            out.push_str(&close);
            out.push(']');
        }
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::BadSerialization,
                format!("tojson: cannot write a {} value", value.kind()),
            ))
        }
    }
    Ok(())
}

/// Appends `s` quoted as Python's `json.dumps(ensure_ascii=False)` quotes it.
fn python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `strftime_now(format)`: the current UTC date and time in a strftime format (`%d %m %Y %y %b %B %a %A %H
/// %M %S %j %%`; another directive is an error naming it).
fn strftime_now(format: String) -> std::result::Result<String, minijinja::Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    strftime(&format, secs).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// `format` applied to the UTC time `secs` seconds after 1970-01-01.
fn strftime(format: &str, secs: u64) -> std::result::Result<String, String> {
    let days = (secs / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday.
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let month_name = MONTHS[(month - 1) as usize];
        match chars.next() {
            Some('d') => write!(out, "{day:02}"),
            Some('m') => write!(out, "{month:02}"),
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year.rem_euclid(100)),
            Some('b') => write!(out, "{}", &month_name[..3]),
            Some('B') => write!(out, "{month_name}"),
            Some('a') => write!(out, "{}", &DAYS[weekday][..3]),
            Some('A') => write!(out, "{}", DAYS[weekday]),
            Some('H') => write!(out, "{hour:02}"),
            Some('M') => write!(out, "{minute:02}"),
            Some('S') => write!(out, "{second:02}"),
            Some('j') => write!(out, "{day_of_year:03}"),
            Some('%') => write!(out, "%"),
            other => {
                return Err(format!(
                    "strftime_now: directive %{} is not supported",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
        .expect("writing to a String");
    }
    Ok(out)
}

/// The proleptic Gregorian (year, month, day) of `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to the proleptic Gregorian date (`civil_from_days`'s inverse).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Vec<Message> {
        vec![
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello."),
        ]
    }

    #[test]
    fn a_template_sees_the_messages_the_flag_and_the_special_tokens() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m['content'].strip() }}\n{% endfor %}\
             {% if add_generation_prompt %}<assistant>{% endif %}{{ eos_token }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(
            t.render(&chat(), true).unwrap(),
            "<s><system>Be brief.\n<user>Hi\n<assistant>Hello.\n<assistant></s>"
        );
        assert_eq!(t.render(&chat()[1..2], false).unwrap(), "<s><user>Hi\n</s>");
    }

    #[test]
    fn blocks_are_trimmed_as_transformers_trims_them() {
        let t = ChatTemplate::new(
            "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n",
            "",
            "",
        )
        .unwrap();
        assert_eq!(t.render(&chat(), false).unwrap(), "[Hi]\n");
    }

    #[test]
    fn raise_exception_and_bad_syntax_are_errors_that_say_why() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start with the user') }}{% endif %}",
            "",
            "",
        )
        .unwrap();
        let err = t.render(&chat(), false).unwrap_err().to_string();
        assert!(
            err.contains("Conversations must start with the user"),
            "{err}"
        );
        let err = ChatTemplate::new("{% for m in messages %}", "", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chat template") && err.contains("compiling"),
            "{err}"
        );
    }

    #[test]
    fn a_template_that_never_ends_is_stopped() {
        let t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let err = t.render(&chat(), false).unwrap_err().to_string();
        assert!(err.contains("fuel"), "{err}");
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ [] | tojson }}",
            "",
            "",
        )
        .unwrap();
        let m = [Message::new("user", "a \"q\" \\ é\n\u{1}<b>")];
        assert_eq!(
            t.render(&m, false).unwrap(),
            "{\"role\": \"user\", \"content\": \"a \\\"q\\\" \\\\ é\\n\\u0001<b>\"}|\
             {\n  \"role\": \"user\",\n  \"content\": \"a \\\"q\\\" \\\\ é\\n\\u0001<b>\"\n}|[]"
        );
    }

    #[test]
    fn strftime_formats_utc_dates() {
        // 2024-07-26 13:25:09 UTC, a Friday, day 208 of a leap year.
        let secs = 1_722_000_309;
        assert_eq!(
            strftime("%d %b %Y|%B %y %m|%A %a|%H:%M:%S|%j|%%", secs).unwrap(),
            "26 Jul 2024|July 24 07|Friday Fri|13:25:09|208|%"
        );
        assert_eq!(strftime("%Y-%m-%d", 0).unwrap(), "1970-01-01");
        assert_eq!(strftime("%Y-%m-%d", 951_782_400).unwrap(), "2000-02-29");
        assert!(strftime("%Q", 0).unwrap_err().contains("%Q"));
        for days in [-1000, 0, 59, 365, 11_016, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
