//! The pre-tokenizers of byte-level BPE vocabularies: how text is split into pieces before merging (GPT-2's
//! pattern, the same with every digit its own piece, Llama 3's pattern, and our own tokenizer's chunks),
//! written out by hand instead of with a regex engine. Letters and numbers are Unicode's general categories
//! `L` and `N` (as `\p{L}` and `\p{N}` in the patterns), spaces Unicode's `White_Space` (`\s`).

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// How byte-level BPE text is split into pieces before merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2's pattern: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    Gpt2,
    /// Every numeric character is its own piece; the text between is split with the GPT-2 pattern
    /// (`smollm`, `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`, `minerva`).
    Gpt2IndividualDigits,
    /// Llama 3's pattern (`llama-bpe`): `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`; a piece that is a whole token is not merged.
    Llama3,
    /// The chunks of our own tokenizer ([`crate::data::pre_tokenize`]), for its Hugging Face files.
    Tapegrad,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp associates with `tokenizer.ggml.pre` = `name`; `None` if not supported.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        match name {
            "gpt-2" | "gpt2" | "default" => Some(PreTokenizer::Gpt2),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva" => Some(PreTokenizer::Gpt2IndividualDigits),
            "llama-bpe" | "llama3" => Some(PreTokenizer::Llama3),
            "tapegrad" => Some(PreTokenizer::Tapegrad),
            _ => None,
        }
    }

    /// The `tokenizer.ggml.pre` name of this pre-tokenizer.
    pub fn name(self) -> &'static str {
        match self {
            PreTokenizer::Gpt2 => "gpt-2",
            PreTokenizer::Gpt2IndividualDigits => "smollm",
            PreTokenizer::Llama3 => "llama-bpe",
            PreTokenizer::Tapegrad => "tapegrad",
        }
    }

    /// Splits `text` into the pieces BPE works on; the pieces concatenate back to `text`.
    pub fn split(self, text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        match self {
            PreTokenizer::Gpt2 => split_with(text, gpt2_match, &mut out),
            PreTokenizer::Gpt2IndividualDigits => {
                let mut run_start = 0;
                for (i, c) in text.char_indices() {
                    if is_number(c) {
                        split_with(&text[run_start..i], gpt2_match, &mut out);
                        out.push(&text[i..i + c.len_utf8()]);
                        run_start = i + c.len_utf8();
                    }
                }
                split_with(&text[run_start..], gpt2_match, &mut out);
            }
            PreTokenizer::Llama3 => split_with(text, llama3_match, &mut out),
            PreTokenizer::Tapegrad => {
                // Chunks end only before ASCII bytes, so each is whole characters.
                let mut at = 0;
                for chunk in crate::data::pre_tokenize(text.as_bytes()) {
                    out.push(&text[at..at + chunk.len()]);
                    at += chunk.len();
                }
            }
        }
        out
    }
}

/// `\p{L}`.
fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    matches!(
        get_general_category(c),
        G::UppercaseLetter
            | G::LowercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter
    )
}

/// `\p{N}`.
fn is_number(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    matches!(
        get_general_category(c),
        G::DecimalNumber | G::LetterNumber | G::OtherNumber
    )
}

/// `[^\s\p{L}\p{N}]`.
fn is_other(c: char) -> bool {
    !c.is_whitespace() && !is_letter(c) && !is_number(c)
}

/// Length in bytes of the run of chars at the start of `s` that satisfy `pred`.
fn run_len(s: &str, pred: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| !pred(c))
        .map_or(s.len(), |(i, _)| i)
}

/// Splits `text` into the successive matches of `first_match` (the byte length of a pattern's match at the
/// start of a non-empty string).
fn split_with<'a>(text: &'a str, first_match: fn(&str) -> usize, out: &mut Vec<&'a str>) {
    let mut rest = text;
    while !rest.is_empty() {
        let n = first_match(rest);
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
}

/// Byte length of the GPT-2 pattern's match at the start of the non-empty `s`.
fn gpt2_match(s: &str) -> usize {
    let bytes = s.as_bytes();
    // 's|'t|'re|'ve|'m|'ll|'d
    if bytes[0] == b'\'' {
        match bytes.get(1..3) {
            Some(b"re") | Some(b"ve") | Some(b"ll") => return 3,
            _ => {}
        }
        if let Some(b's' | b't' | b'm' | b'd') = bytes.get(1) {
            return 2;
        }
    }
    // ` ?X+` for the three classes: an optional ASCII space, then a run of one class.
    let skip = usize::from(bytes[0] == b' ');
    if let Some(c) = s[skip..].chars().next() {
        let class: Option<fn(char) -> bool> = if is_letter(c) {
            Some(is_letter)
        } else if is_number(c) {
            Some(is_number)
        } else if is_other(c) {
            Some(is_other)
        } else {
            None
        };
        if let Some(class) = class {
            return skip + run_len(&s[skip..], class);
        }
    }
    whitespace_match(s)
}

/// `\s+(?!\S)|\s+` at the start of `s`: a whitespace run; if something follows it, the run's last char is
/// left to that (unless the run is that one char).
fn whitespace_match(s: &str) -> usize {
    let n = run_len(s, char::is_whitespace);
    if n == s.len() {
        return n;
    }
    let last = s[..n].chars().next_back().map_or(0, char::len_utf8);
    if n > last {
        n - last
    } else {
        n
    }
}

/// Byte length of the Llama 3 pattern's match at the start of the non-empty `s`.
fn llama3_match(s: &str) -> usize {
    let mut chars = s.chars();
    let c0 = chars.next().expect("non-empty");
    let c1 = chars.next();
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if c0 == '\'' {
        let lower = |c: Option<char>| c.map(|c| c.to_ascii_lowercase());
        let c2 = lower(chars.next());
        match (lower(c1), c2) {
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => return 3,
            (Some('s' | 't' | 'm' | 'd'), _) => return 2,
            _ => {}
        }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    let lead = c0.len_utf8();
    if is_letter(c0) {
        return run_len(s, is_letter);
    }
    if c0 != '\r' && c0 != '\n' && !is_number(c0) && c1.is_some_and(is_letter) {
        return lead + run_len(&s[lead..], is_letter);
    }
    // \p{N}{1,3}
    if is_number(c0) {
        return s
            .char_indices()
            .take_while(|&(_, c)| is_number(c))
            .take(3)
            .map(|(_, c)| c.len_utf8())
            .sum();
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    let skip = usize::from(c0 == ' ' && c1.is_some_and(is_other));
    if is_other(c0) || skip == 1 {
        let n = skip + run_len(&s[skip..], is_other);
        return n + run_len(&s[n..], |c| c == '\r' || c == '\n');
    }
    // \s*[\r\n]+: whitespace up to and including the run's last line break.
    let n = run_len(s, char::is_whitespace);
    if let Some(i) = s[..n].rfind(['\r', '\n']) {
        return i + 1;
    }
    whitespace_match(s)
}
