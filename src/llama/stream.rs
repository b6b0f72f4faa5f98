//! Text as it is generated: [`TextStream`] turns token ids, one at a time, into the text that is final so far
//! — holding back an unfinished UTF-8 sequence (a token may carry part of a character) and any ending that
//! could be the start of a stop string — and reports the first stop string, cutting the text before it.

use super::pretrained::TextTokenizer;

/// Decodes generated ids incrementally; see the module docs.
pub struct TextStream<'t> {
    tokenizer: &'t TextTokenizer,
    stops: Vec<String>,
    ids: Vec<u32>,
    /// The decoded text handed out so far.
    emitted: String,
    stopped: bool,
}

impl<'t> TextStream<'t> {
    /// A stream decoding with `tokenizer` that ends at the first of `stops` (empty strings are ignored).
    pub fn new(tokenizer: &'t TextTokenizer, stops: &[String]) -> TextStream<'t> {
        TextStream {
            tokenizer,
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ids: Vec::new(),
            emitted: String::new(),
            stopped: false,
        }
    }

    /// Adds one token; returns the text that became final with it, and whether a stop string was reached
    /// (the text then ends just before it, and later tokens add nothing).
    pub fn push(&mut self, id: u32) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids);
        // The earliest stop string anywhere in the text ends it.
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            return (self.take(&text[..at]), true);
        }
        // Hold back an unfinished character and any ending that a stop string begins with.
        let complete = text.trim_end_matches('\u{fffd}');
        let held = self
            .stops
            .iter()
            .flat_map(|s| s.char_indices().skip(1).map(move |(i, _)| &s[..i]))
            .filter(|prefix| complete.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        (self.take(&complete[..complete.len() - held]), false)
    }

    /// Ends the stream: whatever was held back (unless a stop string was reached).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let text = self.tokenizer.decode(&self.ids);
        self.take(&text)
    }

    /// All the text handed out.
    pub fn text(&self) -> &str {
        &self.emitted
    }

    /// The part of `upto` not handed out yet (nothing if decoding changed what was handed out).
    fn take(&mut self, upto: &str) -> String {
        match upto.strip_prefix(self.emitted.as_str()) {
            Some(new) if !new.is_empty() => {
                let new = new.to_string();
                self.emitted.push_str(&new);
                new
            }
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Tokenizer;

    /// Our byte-level tokenizer with no merges: one id per byte (plus the specials).
    fn bytes() -> TextTokenizer {
        TextTokenizer::Ours(Tokenizer::train(&[b"x"], 258).unwrap())
    }

    fn ids(t: &TextTokenizer, s: &str) -> Vec<u32> {
        t.encode(s)
    }

    #[test]
    fn characters_split_across_tokens_come_out_whole() {
        let t = bytes();
        let mut stream = TextStream::new(&t, &[]);
        let pieces: Vec<String> = ids(&t, "aé🦙b")
            .into_iter()
            .map(|id| stream.push(id).0)
            .collect();
        assert_eq!(pieces, ["a", "", "é", "", "", "", "🦙", "b"]);
        assert_eq!(stream.finish(), "");
        assert_eq!(stream.text(), "aé🦙b");
    }

    #[test]
    fn a_stop_string_cuts_the_text_and_what_might_begin_one_waits() {
        let t = bytes();
        let stops = ["</end>".to_string(), "\n\n".to_string(), String::new()];
        let mut stream = TextStream::new(&t, &stops);
        let mut out = Vec::new();
        let mut stopped = false;
        for id in ids(&t, "hi </e> ok</end> more") {
            let (text, stop) = stream.push(id);
            out.push(text);
            if stop {
                stopped = true;
                break;
            }
        }
        assert!(stopped);
        assert_eq!(out.concat(), "hi </e> ok");
        assert_eq!(stream.text(), "hi </e> ok");
        // "</e" is held back until the '>' shows it is not "</end>".
        assert_eq!(out[3..7], ["", "", "", "</e>"]);
        assert_eq!(stream.push(ids(&t, "x")[0]), (String::new(), true));
        assert_eq!(stream.finish(), "");
        // Without a stop, what was held back comes out at the end.
        let mut stream = TextStream::new(&t, &stops);
        let held: String = ids(&t, "ok\n")
            .into_iter()
            .map(|id| stream.push(id).0)
            .collect();
        assert_eq!(held, "ok");
        assert_eq!(stream.finish(), "\n");
    }
}
