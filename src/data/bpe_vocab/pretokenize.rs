//! The pre-tokenizers of byte-level BPE vocabularies: how text is split into pieces before merging (GPT-2's
//! pattern, and the same with every digit its own piece), written out by hand instead of with a regex engine.

/// How byte-level BPE text is split into pieces before merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2's pattern: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    Gpt2,
    /// Every numeric character is its own piece; the text between is split with the GPT-2 pattern
    /// (`smollm`, `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`, `minerva`).
    Gpt2IndividualDigits,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp associates with `tokenizer.ggml.pre` = `name`; `None` if not supported.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        match name {
            "gpt-2" | "gpt2" | "default" => Some(PreTokenizer::Gpt2),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva" => Some(PreTokenizer::Gpt2IndividualDigits),
            _ => None,
        }
    }

    /// Splits `text` into the pieces BPE works on; the pieces concatenate back to `text`.
    pub fn split(self, text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        match self {
            PreTokenizer::Gpt2 => gpt2_split(text, &mut out),
            PreTokenizer::Gpt2IndividualDigits => {
                let mut run_start = 0;
                for (i, c) in text.char_indices() {
                    if c.is_numeric() {
                        gpt2_split(&text[run_start..i], &mut out);
                        out.push(&text[i..i + c.len_utf8()]);
                        run_start = i + c.len_utf8();
                    }
                }
                gpt2_split(&text[run_start..], &mut out);
            }
        }
        out
    }
}

fn is_letter(c: char) -> bool {
    c.is_alphabetic()
}

fn is_other(c: char) -> bool {
    !c.is_whitespace() && !c.is_alphabetic() && !c.is_numeric()
}

/// Length in bytes of the run of chars at the start of `s` that satisfy `pred`.
fn run_len(s: &str, pred: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| !pred(c))
        .map_or(s.len(), |(i, _)| i)
}

/// Splits `text` with GPT-2's pattern, written out by hand. Letters are `char::is_alphabetic`, numbers
/// `char::is_numeric`, spaces `char::is_whitespace` (close to `\p{L}`, `\p{N}`, `\s`; combining marks count
/// as letters here).
fn gpt2_split<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    let mut rest = text;
    while !rest.is_empty() {
        let n = gpt2_match(rest);
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
        } else if c.is_numeric() {
            Some(|c: char| c.is_numeric())
        } else if is_other(c) {
            Some(is_other)
        } else {
            None
        };
        if let Some(class) = class {
            return skip + run_len(&s[skip..], class);
        }
    }
    // `\s+(?!\S)|\s+`: a whitespace run; if something follows it, leave the run's last char to that.
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
