//! Our tokenizer as a vocabulary other tools read: [`Tokenizer::gguf_metadata`] gives the GGUF `tokenizer.*`
//! metadata of a byte-level (`gpt2`) vocabulary — tokens spelled in GPT-2's bytes-to-unicode alphabet, ids
//! and merge ranks as ours, BOS and EOS as control tokens — which `hf_tokenizer::hf_from_metadata` turns into
//! Hugging Face's `tokenizer.json` (so `AutoTokenizer.from_pretrained(checkpoint)` gives our ids: our
//! pre-tokenization rules as a `Split` regex, [`PATTERN`], then a `ByteLevel` step that only maps bytes) and
//! the GGUF export writes as it is. Text that is valid UTF-8 encodes to the same ids (`tests/tokenizer_hf.rs`
//! checks it against the `tokenizers` library).

use super::{Tokenizer, BOS_ID, EOS_ID};
use crate::data::bpe_vocab::{byte_to_char_table, token_type, PreTokenizer};
use crate::io::gguf::Value;
use std::collections::BTreeMap;

/// [`super::pre_tokenize`]'s chunks as an Oniguruma regex: an optional space and a run of letters (ASCII
/// letters and everything non-ASCII), an optional space and one digit, an optional space and a run of other
/// ASCII, a whitespace run that leaves its last space to a following chunk, or a whitespace run.
pub const PATTERN: &str = concat!(
    r" ?[A-Za-z\x{80}-\x{10FFFF}]+",
    r"| ?[0-9]",
    r"| ?[^A-Za-z0-9\t\n\x0b\x0c\r \x{80}-\x{10FFFF}]+",
    r"|[\t\n\x0b\x0c\r ]+(?= [^\t\n\x0b\x0c\r ])",
    r"|[\t\n\x0b\x0c\r ]+",
);

impl Tokenizer {
    /// The token's spelling in GPT-2's bytes-to-unicode alphabet (the specials: their names).
    fn spelling(&self, id: u32, table: &[char; 256]) -> String {
        match id {
            BOS_ID => self.special_names[0].clone(),
            EOS_ID => self.special_names[1].clone(),
            _ => self
                .token_bytes(id)
                .iter()
                .map(|&b| table[b as usize])
                .collect(),
        }
    }

    /// The GGUF `tokenizer.*` metadata of this vocabulary with the pre-tokenizer named `pre` (ours,
    /// [`PreTokenizer::Tapegrad`], for Hugging Face's files; llama.cpp knows only its own names).
    pub fn gguf_metadata(&self, pre: PreTokenizer) -> BTreeMap<String, Value> {
        let table = byte_to_char_table();
        let n = self.vocab_size() as u32;
        let tokens = (0..n)
            .map(|id| Value::String(self.spelling(id, &table)))
            .collect();
        let types = (0..n)
            .map(|id| {
                Value::I32(if id == BOS_ID || id == EOS_ID {
                    token_type::CONTROL
                } else {
                    token_type::NORMAL
                })
            })
            .collect();
        let merges = self
            .merges
            .iter()
            .map(|&(l, r)| {
                Value::String(format!(
                    "{} {}",
                    self.spelling(l, &table),
                    self.spelling(r, &table)
                ))
            })
            .collect();
        let s = |v: &str| Value::String(v.into());
        BTreeMap::from([
            ("tokenizer.ggml.model".into(), s("gpt2")),
            ("tokenizer.ggml.pre".into(), s(pre.name())),
            ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
            ("tokenizer.ggml.token_type".into(), Value::Array(types)),
            ("tokenizer.ggml.merges".into(), Value::Array(merges)),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(BOS_ID)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(EOS_ID)),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ])
    }

    /// Whether every token has its own spelling (byte-level BPE can learn the same bytes twice through
    /// different merges, or the bytes of a special token's name; the Hugging Face vocabulary, a map from
    /// spelling to id, then keeps the first).
    pub fn spellings_are_unique(&self) -> bool {
        let table = byte_to_char_table();
        let mut seen = std::collections::HashSet::new();
        (0..self.vocab_size() as u32).all(|id| seen.insert(self.spelling(id, &table)))
    }
}
