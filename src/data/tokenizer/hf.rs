//! Our tokenizer in Hugging Face's `tokenizers` format, so `AutoTokenizer.from_pretrained(checkpoint)` gives
//! our ids: `tokenizer.json` holds a byte-level BPE model (tokens spelled in GPT-2's bytes-to-unicode
//! alphabet, ids and merge ranks as ours, BOS and EOS as special added tokens), our pre-tokenization rules
//! written as a `Split` regex ([`PATTERN`]) followed by a `ByteLevel` step that only maps bytes, and a
//! `ByteLevel` decoder; `tokenizer_config.json` names the class and the special tokens. Text that is valid
//! UTF-8 encodes to the same ids in both (`tests/tokenizer_hf.rs` checks it against the `tokenizers` library).

use super::{Tokenizer, BOS_ID, EOS_ID};
use crate::data::bpe_vocab::byte_to_char_table;
use serde_json::{json, Map, Value};

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

    /// The `tokenizer.json` of this tokenizer in Hugging Face's `tokenizers` format.
    pub fn hf_tokenizer_json(&self) -> Value {
        let table = byte_to_char_table();
        let mut vocab = Map::new();
        for id in 0..self.vocab_size() as u32 {
            vocab.entry(self.spelling(id, &table)).or_insert(json!(id));
        }
        let merges: Vec<Value> = self
            .merges
            .iter()
            .map(|&(l, r)| {
                json!(format!(
                    "{} {}",
                    self.spelling(l, &table),
                    self.spelling(r, &table)
                ))
            })
            .collect();
        let added: Vec<Value> = [BOS_ID, EOS_ID]
            .iter()
            .map(|&id| {
                json!({"id": id, "content": self.spelling(id, &table), "single_word": false,
                       "lstrip": false, "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                   "use_regex": use_regex})
        };
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": false},
                byte_level(false),
            ]},
            "post_processor": null,
            "decoder": byte_level(true),
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": merges},
        })
    }

    /// The `tokenizer_config.json` that goes with [`Tokenizer::hf_tokenizer_json`].
    pub fn hf_tokenizer_config(&self) -> Value {
        json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.special_names[0],
            "eos_token": self.special_names[1],
            "clean_up_tokenization_spaces": false,
            "model_max_length": 1_000_000_000_000_000_000u64,
        })
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
