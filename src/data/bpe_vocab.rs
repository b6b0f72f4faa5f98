//! Tokenizers rebuilt from the vocabulary stored in GGUF metadata (`tokenizer.ggml.*`), so that a model read
//! from a GGUF file can be fed and decoded without any side file.
//!
//! Two models are supported: `gpt2`, byte-level BPE (tokens spelled in GPT-2's bytes-to-unicode alphabet,
//! merges ranked by their position in `tokenizer.ggml.merges`, text split first by a hand-written pre-tokenizer
//! chosen from `tokenizer.ggml.pre`), and `llama`, SentencePiece-style BPE (spaces as '▁', merges chosen by
//! highest token score, unknown characters spelled with `<0xNN>` byte tokens). Guarantees: construction
//! validates the metadata (types, lengths, ids in range) and fails with an error naming the source and the
//! problem; `encode` never panics and adds no special tokens; `decode` never panics (invalid UTF-8 and unknown
//! ids become U+FFFD); for the SmolLM2 vocabulary, ids match Hugging Face `tokenizers` on the reference prompts.
//! The tokenizer takes the metadata map rather than the file (see [`VocabTokenizer::from_metadata`]), so this
//! module only depends on the GGUF [`Value`] type; [`VocabTokenizer::from_gguf`] is the shortcut.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::io::gguf::{Gguf, Value};
use index::{token_count_fits, Spellings, TokenIndex};
use pairs::{pair_key, PairMap};
pub use pretokenize::PreTokenizer;

mod index;
mod pairs;
mod pretokenize;

/// `tokenizer.ggml.token_type` values, as llama.cpp defines them.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Pieces longer than this (in initial symbols) use the heap-based merge loop instead of the quadratic one.
const SHORT_PIECE: usize = 48;
/// The piece cache is cleared when it grows past this many entries.
const CACHE_LIMIT: usize = 1 << 17;

/// Which tokenizer model the vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerModel {
    /// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
    Gpt2,
    /// SentencePiece-style BPE with scores and byte fallback (`tokenizer.ggml.model = "llama"`).
    Llama,
}

/// GPT-2's reversible map from bytes to printable chars: printable Latin-1 bytes map to themselves, the others
/// to U+0100 onwards in byte order.
pub fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\u{fffd}');
    }
    table
}

/// The byte-level BPE parts of a `gpt2` vocabulary.
struct ByteBpe {
    pre: PreTokenizer,
    /// The id of the one-byte token for each byte.
    byte_ids: [Option<u32>; 256],
    /// Inverse of the bytes-to-unicode map, indexed by code point.
    char_to_byte: Vec<Option<u8>>,
    /// `(left, right)` → `(rank, merged id)`.
    merges: PairMap,
    /// Piece → ids, for pieces seen before.
    cache: Mutex<HashMap<String, Vec<u32>>>,
    /// A piece that is itself a token is that token, whatever the merges would make of it (Llama 3's rule;
    /// `tokenizer.ggml.ignore_merges`, by default whether the pre-tokenizer is Llama 3's).
    ignore_merges: bool,
    /// The byte-level spelling of a piece, for `ignore_merges`.
    table: Box<[char; 256]>,
}

/// The SentencePiece parts of a `llama` vocabulary.
struct Spm {
    scores: Vec<f32>,
    add_space_prefix: bool,
    /// The id of the `<0xNN>` token for each byte.
    byte_ids: [Option<u32>; 256],
    /// Every character some mergeable token of two or more characters holds: any other character never
    /// merges, so the text is encoded in independent runs between such characters (the same tokens as one
    /// pass over the whole text, with small queues).
    joined: std::collections::HashSet<char>,
}

enum Model {
    Bpe(ByteBpe),
    Spm(Spm),
}

/// A tokenizer rebuilt from GGUF metadata; see the module documentation.
pub struct VocabTokenizer {
    model: Model,
    tokens: Spellings,
    types: Vec<i32>,
    /// Spelling → id over `tokens`.
    index: TokenIndex,
    /// Control and user-defined tokens, longest first, for [`VocabTokenizer::encode_with_special`].
    specials: Vec<(String, u32)>,
    /// Whether some special spelling starts with this byte.
    special_starts: [bool; 256],
    bos: Option<u32>,
    /// Whether a prompt starts with BOS (`tokenizer.ggml.add_bos_token`; by default, as llama.cpp: for `llama`
    /// vocabularies, not for `gpt2`).
    add_bos: bool,
    eos: Option<u32>,
    unk: Option<u32>,
}

impl std::fmt::Debug for VocabTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VocabTokenizer")
            .field("model", &self.model())
            .field("vocab_size", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

/// Typed access to the metadata map with errors that name the source.
struct Meta<'a> {
    map: &'a BTreeMap<String, Value>,
    source: &'a Path,
}

impl<'a> Meta<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::format(self.source, msg)
    }

    fn typed<T>(
        &self,
        key: &str,
        expected: &str,
        conv: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => conv(v).map(Some).ok_or_else(|| {
                self.err(format!(
                    "metadata key {key} holds a {}, expected {expected}",
                    v.type_name()
                ))
            }),
        }
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        self.typed(key, "a string", Value::as_str)
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", Value::as_bool)
    }

    fn id(&self, key: &str, vocab: usize) -> Result<Option<u32>> {
        let Some(id) = self.typed(key, "a token id", Value::as_i64)? else {
            return Ok(None);
        };
        // llama.cpp writes -1 (or leaves the key out) for "no such token".
        if id < 0 {
            return Ok(None);
        }
        match u32::try_from(id) {
            Ok(id) if (id as usize) < vocab => Ok(Some(id)),
            _ => Err(self.err(format!(
                "metadata key {key} is token id {id}, outside the vocabulary of {vocab}"
            ))),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&'a [Value]>> {
        self.typed(key, "an array", Value::as_array)
    }

    fn str_array(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        self.typed(key, "an array of strings", |v| {
            v.as_array()?.iter().map(Value::as_str).collect()
        })
    }
}

impl VocabTokenizer {
    /// Builds the tokenizer from an opened GGUF file's metadata.
    pub fn from_gguf(gguf: &Gguf) -> Result<VocabTokenizer> {
        VocabTokenizer::from_metadata(gguf.metadata(), gguf.path())
    }

    /// Builds the tokenizer from GGUF metadata; `source` names where the metadata came from in errors.
    ///
    /// Reads `tokenizer.ggml.model` (`gpt2` or `llama`), `.tokens`, `.token_type` (default: all normal),
    /// `.merges` and `.pre` (gpt2), `.scores` and `.add_space_prefix` (llama, default true),
    /// `.bos_token_id`, `.eos_token_id`, `.unknown_token_id`.
    pub fn from_metadata(
        metadata: &BTreeMap<String, Value>,
        source: impl AsRef<Path>,
    ) -> Result<VocabTokenizer> {
        let source: PathBuf = source.as_ref().to_path_buf();
        let meta = Meta {
            map: metadata,
            source: &source,
        };
        let model = meta
            .str("tokenizer.ggml.model")?
            .ok_or_else(|| meta.err("missing metadata key tokenizer.ggml.model"))?;
        let tokens = Spellings::new(
            &meta
                .str_array("tokenizer.ggml.tokens")?
                .ok_or_else(|| meta.err("missing metadata key tokenizer.ggml.tokens"))?,
        );
        let n = tokens.len();
        if !token_count_fits(n) {
            return Err(meta.err(format!(
                "tokenizer.ggml.tokens has {n} entries, expected 1 to {}",
                u32::MAX
            )));
        }
        let types = match meta.array("tokenizer.ggml.token_type")? {
            None => vec![token_type::NORMAL; n],
            Some(a) => {
                let types: Option<Vec<i32>> = a
                    .iter()
                    .map(|v| v.as_i64().and_then(|i| i32::try_from(i).ok()))
                    .collect();
                let types = types.ok_or_else(|| {
                    meta.err("tokenizer.ggml.token_type must be an array of int32")
                })?;
                if types.len() != n {
                    return Err(meta.err(format!(
                        "tokenizer.ggml.token_type has {} entries but there are {n} tokens",
                        types.len()
                    )));
                }
                types
            }
        };
        let index = TokenIndex::new(&tokens);
        let token_to_id = |s: &str| index.get(&tokens, s);
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|&(_, (t, &ty))| {
                !t.is_empty() && (ty == token_type::CONTROL || ty == token_type::USER_DEFINED)
            })
            .map(|(id, (t, _))| (t.to_string(), id as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut special_starts = [false; 256];
        for (s, _) in &specials {
            special_starts[s.as_bytes()[0] as usize] = true;
        }

        let model = match model {
            "gpt2" => Model::Bpe(ByteBpe::new(&meta, &tokens, &token_to_id)?),
            "llama" => Model::Spm(Spm::new(&meta, &tokens, &types, &token_to_id)?),
            other => {
                return Err(meta.err(format!(
                    "unsupported tokenizer.ggml.model {other:?}, expected \"gpt2\" or \"llama\""
                )))
            }
        };
        let add_bos = meta
            .bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(matches!(model, Model::Spm(_)));
        Ok(VocabTokenizer {
            model,
            add_bos,
            bos: meta.id("tokenizer.ggml.bos_token_id", n)?,
            eos: meta.id("tokenizer.ggml.eos_token_id", n)?,
            unk: meta.id("tokenizer.ggml.unknown_token_id", n)?,
            tokens,
            types,
            index,
            specials,
            special_starts,
        })
    }

    /// Which model the vocabulary uses.
    pub fn model(&self) -> TokenizerModel {
        match self.model {
            Model::Bpe(_) => TokenizerModel::Gpt2,
            Model::Spm(_) => TokenizerModel::Llama,
        }
    }

    /// The pre-tokenizer of a `gpt2` vocabulary; `None` for `llama`.
    pub fn pre_tokenizer(&self) -> Option<PreTokenizer> {
        match &self.model {
            Model::Bpe(b) => Some(b.pre),
            Model::Spm(_) => None,
        }
    }

    /// The number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The beginning-of-sequence token, if the vocabulary names one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token, if the vocabulary names one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether a prompt should start with BOS (and there is one).
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// The unknown token, if the vocabulary names one.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// The stored spelling of token `id` (for `gpt2`, in the bytes-to-unicode alphabet).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize)
    }

    /// The id of the token spelled exactly `token`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.index.get(&self.tokens, token)
    }

    /// Encodes `text` literally: no BOS/EOS is added and special-token spellings such as `<|im_start|>` are
    /// treated as plain text.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, &mut out);
        out
    }

    /// Encodes `text`, turning every exact spelling of a control or user-defined token (e.g. `<|im_end|>`) into
    /// that token, longest match first, as Hugging Face does for added tokens; no BOS/EOS is added.
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let bytes = text.as_bytes();
        let mut plain_start = 0;
        let mut i = 0;
        while i < bytes.len() {
            // A spelling starts with a leading byte, so a match is always at a character boundary.
            let found = if self.special_starts[bytes[i] as usize] {
                self.specials
                    .iter()
                    .find(|(s, _)| bytes[i..].starts_with(s.as_bytes()))
            } else {
                None
            };
            if let Some((s, id)) = found {
                self.encode_into(&text[plain_start..i], &mut out);
                out.push(*id);
                i += s.len();
                plain_start = i;
            } else {
                i += 1;
            }
        }
        self.encode_into(&text[plain_start..], &mut out);
        out
    }

    fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        match &self.model {
            Model::Bpe(bpe) => bpe.encode(text, self, out),
            Model::Spm(spm) => spm.encode(text, self, out),
        }
    }

    /// Decodes `ids` to text. Normal tokens are turned back into their bytes; control and user-defined tokens
    /// are written as their spelling; ids outside the vocabulary and invalid UTF-8 become U+FFFD. For `llama`
    /// vocabularies with `add_space_prefix`, the one space the encoder prepends is removed again.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let Some(tok) = self.tokens.get(id as usize) else {
                bytes.extend("\u{fffd}".as_bytes());
                continue;
            };
            let ty = self.types[id as usize];
            if ty == token_type::CONTROL || ty == token_type::USER_DEFINED {
                bytes.extend(tok.as_bytes());
                continue;
            }
            match &self.model {
                Model::Bpe(bpe) => {
                    for c in tok.chars() {
                        match bpe.char_to_byte.get(c as usize).copied().flatten() {
                            Some(b) => bytes.push(b),
                            None => {
                                let mut buf = [0u8; 4];
                                bytes.extend(c.encode_utf8(&mut buf).as_bytes());
                            }
                        }
                    }
                }
                Model::Spm(_) => match parse_byte_token(tok) {
                    Some(b) if ty == token_type::BYTE || ty == token_type::NORMAL => bytes.push(b),
                    _ => {
                        for c in tok.chars() {
                            let c = if c == '\u{2581}' { ' ' } else { c };
                            let mut buf = [0u8; 4];
                            bytes.extend(c.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                },
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match &self.model {
            Model::Spm(spm) if spm.add_space_prefix => match text.strip_prefix(' ') {
                Some(stripped) => stripped.to_owned(),
                None => text,
            },
            _ => text,
        }
    }
}

impl ByteBpe {
    fn new(
        meta: &Meta,
        tokens: &Spellings,
        token_to_id: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<ByteBpe> {
        let pre_name = meta.str("tokenizer.ggml.pre")?.unwrap_or("default");
        let pre = PreTokenizer::from_name(pre_name).ok_or_else(|| {
            meta.err(format!(
                "unsupported pre-tokenizer tokenizer.ggml.pre = {pre_name:?}"
            ))
        })?;
        let table = byte_to_char_table();
        let mut byte_ids = [None; 256];
        let mut char_to_byte = vec![None; 512];
        for (b, &c) in table.iter().enumerate() {
            byte_ids[b] = token_to_id(c.encode_utf8(&mut [0u8; 4]));
            char_to_byte[c as usize] = Some(b as u8);
        }
        let merge_list = meta
            .str_array("tokenizer.ggml.merges")?
            .ok_or_else(|| meta.err("missing metadata key tokenizer.ggml.merges"))?;
        let mut merges = PairMap::with_capacity_and_hasher(merge_list.len(), Default::default());
        let mut joined = String::new();
        for (rank, line) in merge_list.iter().enumerate() {
            let Some((a, b)) = line.split_once(' ') else {
                return Err(meta.err(format!(
                    "tokenizer.ggml.merges entry {rank} {line:?} is not two tokens separated by a space"
                )));
            };
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            // Merges whose parts or result are not in the vocabulary can never apply; skip them.
            let (Some(ia), Some(ib), Some(im)) =
                (token_to_id(a), token_to_id(b), token_to_id(joined.as_str()))
            else {
                continue;
            };
            merges.entry(pair_key(ia, ib)).or_insert((rank as u32, im));
        }
        debug_assert!(tokens.len() <= u32::MAX as usize);
        let ignore_merges = meta
            .bool("tokenizer.ggml.ignore_merges")?
            .unwrap_or(pre == PreTokenizer::Llama3);
        Ok(ByteBpe {
            pre,
            byte_ids,
            char_to_byte,
            merges,
            cache: Mutex::new(HashMap::new()),
            ignore_merges,
            table: Box::new(table),
        })
    }

    fn encode(&self, text: &str, tok: &VocabTokenizer, out: &mut Vec<u32>) {
        let unk = tok.unk;
        // A contended cache is skipped rather than waited for, so parallel callers never serialize.
        let mut cache = self.cache.try_lock().ok();
        let mut syms = Vec::new();
        let mut spelled = String::new();
        for piece in self.pre.split(text) {
            if let Some(ids) = cache.as_ref().and_then(|c| c.get(piece)) {
                out.extend_from_slice(ids);
                continue;
            }
            if self.ignore_merges {
                spelled.clear();
                spelled.extend(piece.bytes().map(|b| self.table[b as usize]));
                if let Some(id) = tok.index.get(&tok.tokens, &spelled) {
                    out.push(id);
                    continue;
                }
            }
            syms.clear();
            syms.extend(
                piece
                    .bytes()
                    .filter_map(|b| self.byte_ids[b as usize].or(unk)),
            );
            if syms.len() <= SHORT_PIECE {
                self.merge_short(&mut syms);
            } else {
                self.merge_long(&mut syms);
            }
            out.extend_from_slice(&syms);
            if let Some(c) = cache.as_mut() {
                if c.len() >= CACHE_LIMIT {
                    c.clear();
                }
                c.insert(piece.to_owned(), syms.clone());
            }
        }
    }

    fn rank(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.merges.get(&pair_key(a, b)).copied()
    }

    /// Applies merges lowest rank first (leftmost on ties), scanning all pairs each round.
    fn merge_short(&self, syms: &mut Vec<u32>) {
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 1..syms.len() {
                if let Some((rank, id)) = self.rank(syms[i - 1], syms[i]) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, id));
                    }
                }
            }
            let Some((_, i, id)) = best else { break };
            syms[i - 1] = id;
            syms.remove(i);
        }
    }

    /// The same merges as [`ByteBpe::merge_short`], with a heap and a linked list, for long pieces.
    fn merge_long(&self, syms: &mut Vec<u32>) {
        let n = syms.len();
        let mut ids = syms.clone();
        let mut next: Vec<usize> = (1..=n).collect();
        // `n` stands for no neighbour, in both directions.
        let mut prev: Vec<usize> = (0..n).map(|i| i.checked_sub(1).unwrap_or(n)).collect();
        let mut alive = vec![true; n];
        // (rank, left position) min-first; entries are checked against the current state when popped.
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, ids: &[u32], l: usize, r: usize| {
            if let Some((rank, merged)) = self.rank(ids[l], ids[r]) {
                heap.push(Reverse((rank, l, r, ids[r], merged)));
            }
        };
        for i in 1..n {
            push(&mut heap, &ids, i - 1, i);
        }
        while let Some(Reverse((_, l, r, idr, merged))) = heap.pop() {
            // A live symbol's `next` is live, and a symbol's id changes only when it merges with its right
            // neighbour, which moves its `next` past every `r` queued for it: so a live `l` whose `next` is
            // still `r`, with `r` still holding `idr`, is the pair that was queued.
            if !alive[l] || next[l] != r || ids[r] != idr {
                continue;
            }
            ids[l] = merged;
            alive[r] = false;
            next[l] = next[r];
            if next[r] < n {
                prev[next[r]] = l;
            }
            if prev[l] < n {
                push(&mut heap, &ids, prev[l], l);
            }
            if next[l] < n {
                push(&mut heap, &ids, l, next[l]);
            }
        }
        syms.clear();
        syms.extend((0..n).filter(|&i| alive[i]).map(|i| ids[i]));
    }
}

/// The byte of a `<0xNN>` token.
fn parse_byte_token(tok: &str) -> Option<u8> {
    let hex = tok.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// A candidate SentencePiece merge: highest score first, then leftmost.
#[derive(PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Spm {
    fn new(
        meta: &Meta,
        tokens: &Spellings,
        types: &[i32],
        token_to_id: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<Spm> {
        let scores = meta
            .array("tokenizer.ggml.scores")?
            .ok_or_else(|| meta.err("missing metadata key tokenizer.ggml.scores"))?;
        let scores: Option<Vec<f32>> = scores
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32))
            .collect();
        let scores =
            scores.ok_or_else(|| meta.err("tokenizer.ggml.scores must be an array of numbers"))?;
        if scores.len() != tokens.len() {
            return Err(meta.err(format!(
                "tokenizer.ggml.scores has {} entries but there are {} tokens",
                scores.len(),
                tokens.len()
            )));
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = token_to_id(&format!("<0x{b:02X}>"));
        }
        let joined = tokens
            .iter()
            .zip(types)
            .filter(|&(t, &ty)| {
                (ty == token_type::NORMAL || ty == token_type::USER_DEFINED)
                    && t.chars().nth(1).is_some()
            })
            .flat_map(|(t, _)| t.chars())
            .collect();
        Ok(Spm {
            joined,
            scores,
            add_space_prefix: meta
                .bool("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(true),
            byte_ids,
        })
    }

    /// llama.cpp's SentencePiece BPE: spaces become '▁' (one is prepended with `add_space_prefix`), the text
    /// starts as single characters, and adjacent symbols are merged while their concatenation is a normal or
    /// user-defined token, highest score first (leftmost on ties). Leftover characters that are not tokens are
    /// spelled with `<0xNN>` byte tokens, or the unknown token when those are missing.
    fn encode(&self, text: &str, tok: &VocabTokenizer, out: &mut Vec<u32>) {
        let mut s = String::with_capacity(text.len() + 3);
        if self.add_space_prefix {
            s.push('\u{2581}');
        }
        for c in text.chars() {
            s.push(if c == ' ' { '\u{2581}' } else { c });
        }
        let mut run = 0;
        for (i, c) in s.char_indices() {
            if !self.joined.contains(&c) {
                self.encode_run(&s[run..i], tok, out);
                self.encode_run(&s[i..i + c.len_utf8()], tok, out);
                run = i + c.len_utf8();
            }
        }
        self.encode_run(&s[run..], tok, out);
    }

    /// Merges the symbols of `s` (already in SentencePiece's spelling) by score, leftmost on ties.
    fn encode_run(&self, s: &str, tok: &VocabTokenizer, out: &mut Vec<u32>) {
        if s.is_empty() {
            return;
        }
        let mergeable = |t: &str| -> Option<u32> {
            let id = tok.index.get(&tok.tokens, t)?;
            let ty = tok.types[id as usize];
            (ty == token_type::NORMAL || ty == token_type::USER_DEFINED).then_some(id)
        };
        // Symbols are byte ranges of `s`: start[i], len[i]; linked by prev/next.
        let starts: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
        let n = starts.len();
        let mut len: Vec<usize> = (0..n)
            .map(|i| starts.get(i + 1).copied().unwrap_or(s.len()) - starts[i])
            .collect();
        let mut next: Vec<usize> = (1..=n).collect();
        // `n` stands for no neighbour, in both directions.
        let mut prev: Vec<usize> = (0..n).map(|i| i.checked_sub(1).unwrap_or(n)).collect();
        let mut heap = BinaryHeap::new();
        let try_add = |heap: &mut BinaryHeap<Bigram>, len: &[usize], l: usize, r: usize| {
            let text = &s[starts[l]..starts[r] + len[r]];
            if let Some(id) = mergeable(text) {
                heap.push(Bigram {
                    score: self.scores[id as usize],
                    left: l,
                    right: r,
                    len: text.len(),
                });
            }
        };
        for i in 1..n {
            try_add(&mut heap, &len, i - 1, i);
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (b.left, b.right);
            // Stale when either side has merged since: lengths no longer add up (dead symbols have len 0).
            if len[l] == 0 || len[r] == 0 || len[l] + len[r] != b.len || next[l] != r {
                continue;
            }
            len[l] += len[r];
            len[r] = 0;
            next[l] = next[r];
            if next[r] < n {
                prev[next[r]] = l;
            }
            if prev[l] < n {
                try_add(&mut heap, &len, prev[l], l);
            }
            if next[l] < n {
                try_add(&mut heap, &len, l, next[l]);
            }
        }
        let mut i = 0;
        while i < n {
            let piece = &s[starts[i]..starts[i] + len[i]];
            match mergeable(piece) {
                Some(id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        if let Some(id) = self.byte_ids[b as usize].or(tok.unk) {
                            out.push(id);
                        }
                    }
                }
            }
            i = next[i];
        }
    }
}

#[cfg(test)]
mod tests;
