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
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::io::gguf::{Gguf, Value};

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

/// GPT-2's reversible map from bytes to printable chars: printable Latin-1 bytes map to themselves, the others
/// to U+0100 onwards in byte order.
fn byte_to_char_table() -> [char; 256] {
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

/// A fast hasher for packed `u32` pairs (multiplicative, not DoS-resistant; keys come from the vocabulary).
#[derive(Default, Clone, Copy)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(26) ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

type PairMap = HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>;

fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
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
}

/// The SentencePiece parts of a `llama` vocabulary.
struct Spm {
    scores: Vec<f32>,
    add_space_prefix: bool,
    /// The id of the `<0xNN>` token for each byte.
    byte_ids: [Option<u32>; 256],
}

enum Model {
    Bpe(ByteBpe),
    Spm(Spm),
}

/// A tokenizer rebuilt from GGUF metadata; see the module documentation.
pub struct VocabTokenizer {
    model: Model,
    tokens: Vec<String>,
    types: Vec<i32>,
    token_to_id: HashMap<String, u32>,
    /// Control and user-defined tokens, longest first, for [`VocabTokenizer::encode_with_special`].
    specials: Vec<(String, u32)>,
    bos: Option<u32>,
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
        let tokens: Vec<String> = meta
            .str_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| meta.err("missing metadata key tokenizer.ggml.tokens"))?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
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
        let mut token_to_id = HashMap::with_capacity(n);
        for (id, t) in tokens.iter().enumerate() {
            token_to_id.entry(t.clone()).or_insert(id as u32);
        }
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|&(_, (t, &ty))| {
                !t.is_empty() && (ty == token_type::CONTROL || ty == token_type::USER_DEFINED)
            })
            .map(|(id, (t, _))| (t.clone(), id as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));

        let model = match model {
            "gpt2" => Model::Bpe(ByteBpe::new(&meta, &tokens, &token_to_id)?),
            "llama" => Model::Spm(Spm::new(&meta, &tokens, &token_to_id)?),
            other => {
                return Err(meta.err(format!(
                    "unsupported tokenizer.ggml.model {other:?}, expected \"gpt2\" or \"llama\""
                )))
            }
        };
        Ok(VocabTokenizer {
            model,
            bos: meta.id("tokenizer.ggml.bos_token_id", n)?,
            eos: meta.id("tokenizer.ggml.eos_token_id", n)?,
            unk: meta.id("tokenizer.ggml.unknown_token_id", n)?,
            tokens,
            types,
            token_to_id,
            specials,
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

    /// The unknown token, if the vocabulary names one.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// The stored spelling of token `id` (for `gpt2`, in the bytes-to-unicode alphabet).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of the token spelled exactly `token`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.token_to_id.get(token).copied()
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
        let mut plain_start = 0;
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            if let Some((s, id)) = self
                .specials
                .iter()
                .find(|(s, _)| rest.starts_with(s.as_str()))
            {
                self.encode_into(&text[plain_start..i], &mut out);
                out.push(*id);
                i += s.len();
                plain_start = i;
            } else {
                i += rest.chars().next().map_or(1, char::len_utf8);
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
            Model::Bpe(bpe) => bpe.encode(text, self.unk, out),
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
    fn new(meta: &Meta, tokens: &[String], token_to_id: &HashMap<String, u32>) -> Result<ByteBpe> {
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
            byte_ids[b] = token_to_id
                .get(c.encode_utf8(&mut [0u8; 4]) as &str)
                .copied();
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
            let (Some(&ia), Some(&ib), Some(&im)) = (
                token_to_id.get(a),
                token_to_id.get(b),
                token_to_id.get(joined.as_str()),
            ) else {
                continue;
            };
            merges.entry(pair_key(ia, ib)).or_insert((rank as u32, im));
        }
        debug_assert!(tokens.len() <= u32::MAX as usize);
        Ok(ByteBpe {
            pre,
            byte_ids,
            char_to_byte,
            merges,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn encode(&self, text: &str, unk: Option<u32>, out: &mut Vec<u32>) {
        // A contended cache is skipped rather than waited for, so parallel callers never serialize.
        let mut cache = self.cache.try_lock().ok();
        let mut syms = Vec::new();
        for piece in self.pre.split(text) {
            if let Some(ids) = cache.as_ref().and_then(|c| c.get(piece)) {
                out.extend_from_slice(ids);
                continue;
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
        while syms.len() > 1 {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len() - 1 {
                if let Some((rank, id)) = self.rank(syms[i], syms[i + 1]) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, id));
                    }
                }
            }
            let Some((_, i, id)) = best else { break };
            syms[i] = id;
            syms.remove(i + 1);
        }
    }

    /// The same merges as [`ByteBpe::merge_short`], with a heap and a linked list, for long pieces.
    fn merge_long(&self, syms: &mut Vec<u32>) {
        let n = syms.len();
        let mut ids = syms.clone();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        // (rank, left position) min-first; entries are checked against the current state when popped.
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, ids: &[u32], l: usize, r: usize| {
            if let Some((rank, merged)) = self.rank(ids[l], ids[r]) {
                heap.push(Reverse((rank, l, r, ids[l], ids[r], merged)));
            }
        };
        for i in 0..n - 1 {
            push(&mut heap, &ids, i, i + 1);
        }
        while let Some(Reverse((_, l, r, idl, idr, merged))) = heap.pop() {
            if !alive[l] || !alive[r] || next[l] != r || ids[l] != idl || ids[r] != idr {
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
    fn new(meta: &Meta, tokens: &[String], token_to_id: &HashMap<String, u32>) -> Result<Spm> {
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
            *slot = token_to_id.get(&format!("<0x{b:02X}>")).copied();
        }
        Ok(Spm {
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
        let mergeable = |t: &str| -> Option<u32> {
            let id = *tok.token_to_id.get(t)?;
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
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
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
mod tests {
    use super::*;

    fn smollm2() -> Option<VocabTokenizer> {
        let path = crate::io::gguf::tests::smollm2_gguf()?;
        let g = Gguf::open(&path).unwrap();
        Some(VocabTokenizer::from_gguf(&g).unwrap())
    }

    fn split(pre: PreTokenizer, s: &str) -> Vec<&str> {
        let parts = pre.split(s);
        assert_eq!(parts.concat(), s);
        parts
    }

    #[test]
    fn gpt2_pattern_splits() {
        let g = PreTokenizer::Gpt2;
        assert_eq!(split(g, "Hello world"), ["Hello", " world"]);
        assert_eq!(
            split(g, "I'm sure they'll say it's 'ok'"),
            ["I", "'m", " sure", " they", "'ll", " say", " it", "'s", " '", "ok", "'"]
        );
        assert_eq!(split(g, "  hi"), [" ", " hi"]);
        assert_eq!(split(g, "a\n\nb"), ["a", "\n", "\n", "b"]);
        assert_eq!(split(g, "end   "), ["end", "   "]);
        assert_eq!(split(g, "x \t y"), ["x", " \t", " y"]);
        assert_eq!(
            split(g, "pi = 3.14159!"),
            ["pi", " =", " 3", ".", "14159", "!"]
        );
        assert_eq!(split(g, "def f(n):"), ["def", " f", "(", "n", "):"]);
        assert_eq!(split(g, "l'été über"), ["l", "'", "été", " über"]);
        assert_eq!(split(g, "x'RE 're"), ["x", "'", "RE", " '", "re"]);
        assert_eq!(split(g, "日本語 テキスト"), ["日本語", " テキスト"]);
        assert_eq!(split(g, "😀😀 ok"), ["😀😀", " ok"]);
        assert!(split(g, "").is_empty());
    }

    #[test]
    fn individual_digit_splits() {
        let d = PreTokenizer::Gpt2IndividualDigits;
        assert_eq!(
            split(d, "in 2024, x1"),
            ["in", " ", "2", "0", "2", "4", ",", " x", "1"]
        );
        assert_eq!(split(d, "٣٤"), ["٣", "٤"]);
        assert_eq!(PreTokenizer::from_name("smollm"), Some(d));
        assert_eq!(PreTokenizer::from_name("llama-bpe"), None);
    }

    #[test]
    fn byte_table_is_gpt2s() {
        let t = byte_to_char_table();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[0xa0], 'ł');
        assert_eq!(t[0xad], 'Ń');
        let mut sorted = t.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    fn strings(xs: &[&str]) -> Value {
        Value::Array(xs.iter().map(|s| Value::String((*s).into())).collect())
    }

    /// A toy byte-level vocabulary: all 256 byte tokens, then merges for "he", "ll", "hell", "hello", "Ġw".
    fn toy_gpt2() -> VocabTokenizer {
        let table = byte_to_char_table();
        let mut tokens: Vec<String> = vec!["<|end|>".into()];
        tokens.extend(table.iter().map(|c| c.to_string()));
        for t in ["he", "ll", "hell", "hello", "Ġw", "Ġwo"] {
            tokens.push(t.into());
        }
        let mut types = vec![Value::I32(token_type::NORMAL); tokens.len()];
        types[0] = Value::I32(token_type::CONTROL);
        let mut m = BTreeMap::new();
        m.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
        m.insert("tokenizer.ggml.pre".into(), Value::String("gpt-2".into()));
        m.insert(
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        );
        m.insert("tokenizer.ggml.token_type".into(), Value::Array(types));
        m.insert(
            "tokenizer.ggml.merges".into(),
            strings(&["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "x y"]),
        );
        m.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(0));
        VocabTokenizer::from_metadata(&m, "toy.gguf").unwrap()
    }

    #[test]
    fn toy_gpt2_encode_decode() {
        let t = toy_gpt2();
        assert_eq!(t.model(), TokenizerModel::Gpt2);
        assert_eq!(
            (t.eos_id(), t.bos_id(), t.vocab_size()),
            (Some(0), None, 263)
        );
        let ids = t.encode("hello world");
        let spelled: Vec<&str> = ids.iter().map(|&i| t.token(i).unwrap()).collect();
        assert_eq!(spelled, ["hello", "Ġwo", "r", "l", "d"]);
        assert_eq!(t.decode(&ids), "hello world");
        let text = "héllo\n\t<|end|> 12 ÿ\u{0}";
        assert_eq!(t.decode(&t.encode(text)), text);
        assert_eq!(t.encode("<|end|>").len(), 7);
        assert_eq!(
            t.encode_with_special("a<|end|>b"),
            [t.encode("a")[0], 0, t.encode("b")[0]]
        );
        assert_eq!(t.decode(&[0, 9999]), "<|end|>\u{fffd}");
        assert!(t.encode("").is_empty());
    }

    #[test]
    fn long_pieces_merge_like_short_ones() {
        let t = toy_gpt2();
        let Model::Bpe(bpe) = &t.model else {
            unreachable!()
        };
        let word = "hellohehellollhhello".repeat(5);
        let initial: Vec<u32> = word
            .bytes()
            .map(|b| bpe.byte_ids[b as usize].unwrap())
            .collect();
        let mut short = initial.clone();
        bpe.merge_short(&mut short);
        let mut long = initial;
        bpe.merge_long(&mut long);
        assert_eq!(short, long);
        assert_eq!(t.decode(&long), word);
        assert_eq!(t.encode(&word), long);
    }

    #[test]
    fn bad_metadata_is_an_error() {
        let mut m = BTreeMap::new();
        assert!(VocabTokenizer::from_metadata(&m, "x.gguf").is_err());
        m.insert("tokenizer.ggml.model".into(), Value::String("bert".into()));
        m.insert("tokenizer.ggml.tokens".into(), strings(&["a"]));
        let e = VocabTokenizer::from_metadata(&m, "x.gguf").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.gguf: unsupported tokenizer.ggml.model"),
            "{e}"
        );
        m.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
        assert!(
            VocabTokenizer::from_metadata(&m, "x.gguf").is_err(),
            "merges missing"
        );
        m.insert("tokenizer.ggml.merges".into(), strings(&["a"]));
        assert!(
            VocabTokenizer::from_metadata(&m, "x.gguf").is_err(),
            "bad merge"
        );
        m.insert("tokenizer.ggml.merges".into(), strings(&[]));
        m.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(5));
        let e = VocabTokenizer::from_metadata(&m, "x.gguf").unwrap_err();
        assert!(e.to_string().contains("outside the vocabulary"), "{e}");
        m.insert("tokenizer.ggml.bos_token_id".into(), Value::I32(-1));
        m.insert("tokenizer.ggml.token_type".into(), Value::Array(vec![]));
        assert!(VocabTokenizer::from_metadata(&m, "x.gguf").is_err());
        m.remove("tokenizer.ggml.token_type");
        m.insert("tokenizer.ggml.pre".into(), Value::String("qwen2".into()));
        assert!(VocabTokenizer::from_metadata(&m, "x.gguf").is_err());
        m.insert("tokenizer.ggml.pre".into(), Value::String("gpt-2".into()));
        let t = VocabTokenizer::from_metadata(&m, "x.gguf").unwrap();
        assert_eq!(t.bos_id(), None);
        // Bytes without a token and no unknown token are dropped rather than panicking.
        assert_eq!(t.encode("a!"), [0]);
    }

    /// A toy SentencePiece vocabulary: control tokens, some pieces with scores, byte fallback for 'é' only
    /// partly (its two bytes), and no byte token for '€'.
    fn toy_spm(add_space_prefix: bool) -> VocabTokenizer {
        let mut entries: Vec<(String, f32, i32)> = vec![
            ("<unk>".into(), 0.0, token_type::UNKNOWN),
            ("<s>".into(), 0.0, token_type::CONTROL),
            ("</s>".into(), 0.0, token_type::CONTROL),
        ];
        for b in [0xc3u8, 0xa9] {
            entries.push((format!("<0x{b:02X}>"), 0.0, token_type::BYTE));
        }
        for (t, s) in [
            ("▁", -1.0),
            ("h", -2.0),
            ("e", -2.0),
            ("l", -2.0),
            ("o", -2.0),
            ("w", -2.0),
            ("r", -2.0),
            ("d", -2.0),
            ("t", -2.0),
            ("he", -3.0),
            ("ll", -4.0),
            ("llo", -5.0),
            ("hello", -6.0),
            ("▁hello", -7.0),
            ("▁w", -8.0),
            ("or", -9.0),
            ("▁wor", -10.0),
            ("ld", -11.0),
            ("▁▁", -12.0),
            ("▁t", -13.0),
            ("<s", -1.0),
        ] {
            entries.push((t.into(), s, token_type::NORMAL));
        }
        let mut m = BTreeMap::new();
        m.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
        m.insert(
            "tokenizer.ggml.tokens".into(),
            Value::Array(entries.iter().map(|e| Value::String(e.0.clone())).collect()),
        );
        m.insert(
            "tokenizer.ggml.scores".into(),
            Value::Array(entries.iter().map(|e| Value::F32(e.1)).collect()),
        );
        m.insert(
            "tokenizer.ggml.token_type".into(),
            Value::Array(entries.iter().map(|e| Value::I32(e.2)).collect()),
        );
        m.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1));
        m.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(2));
        m.insert("tokenizer.ggml.unknown_token_id".into(), Value::U32(0));
        m.insert(
            "tokenizer.ggml.add_space_prefix".into(),
            Value::Bool(add_space_prefix),
        );
        VocabTokenizer::from_metadata(&m, "toy-spm.gguf").unwrap()
    }

    fn spell(t: &VocabTokenizer, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| t.token(i).unwrap().to_owned())
            .collect()
    }

    #[test]
    fn spm_encode_decode() {
        let t = toy_spm(true);
        assert_eq!(t.model(), TokenizerModel::Llama);
        assert_eq!(
            (t.bos_id(), t.eos_id(), t.unk_id()),
            (Some(1), Some(2), Some(0))
        );
        let ids = t.encode("hello world");
        assert_eq!(spell(&t, &ids), ["▁hello", "▁wor", "ld"]);
        assert_eq!(t.decode(&ids), "hello world");
        // 'é' is not a token: byte fallback. '€' has no byte tokens: unknown.
        let ids = t.encode("hé€");
        assert_eq!(
            spell(&t, &ids),
            ["▁", "h", "<0xC3>", "<0xA9>", "<unk>", "<unk>", "<unk>"]
        );
        assert_eq!(t.decode(&ids[..4]), "hé");
        // Highest score first: "he" (-3) beats "ll" (-4); then "hello" cannot form from "he"+"llo"? It can:
        // "he" + "llo" = "hello" (-6) once "llo" (-5) exists.
        assert_eq!(spell(&t, &t.encode("hello")), ["▁hello"]);
        assert_eq!(spell(&t, &t.encode("  t")), ["▁▁", "▁t"]);
        // Control tokens never form from text.
        assert_eq!(spell(&t, &t.encode("<s>")), ["▁", "<s", "<unk>"]);
        assert_eq!(t.encode_with_special("<s>hello"), [1, t.encode("hello")[0]]);
        assert_eq!(t.decode(&[1, 2]), "<s></s>");
        assert!(t.encode("").is_empty());
        for text in ["hello  world ", " he", "dr", "é", "ll o"] {
            assert_eq!(t.decode(&t.encode(text)), text, "round trip of {text:?}");
        }
    }

    #[test]
    fn spm_without_space_prefix() {
        let t = toy_spm(false);
        assert_eq!(spell(&t, &t.encode("hello world")), ["hello", "▁wor", "ld"]);
        assert_eq!(t.decode(&t.encode(" hello")), " hello");
    }

    #[test]
    fn spm_merges_leftmost_on_ties() {
        let t = toy_spm(true);
        // "ll" + "ll": both pairs score -4; the leftmost merges first, leaving "ll", "ll".
        assert_eq!(spell(&t, &t.encode("llll")), ["▁", "ll", "ll"]);
        assert_eq!(spell(&t, &t.encode("lll")), ["▁", "ll", "l"]);
    }

    /// The three reference prompts of the SmolLM2 fixture (tests/data/smollm2/expected.json).
    const PROMPTS: [(&str, &[u32], &[u32], &str); 3] = [
        (
            "The capital of France is",
            &[504, 3575, 282, 4649, 314],
            &[7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33],
            " Paris.\n\nThe answer is: 201",
        ),
        (
            "Once upon a time, there was a little",
            &[6403, 1980, 253, 655, 28, 665, 436, 253, 1838],
            &[
                8180, 3365, 20391, 617, 5732, 288, 1238, 281, 260, 2388, 30, 2306,
            ],
            " girl named Emma who loved to play in the sun. She",
        ),
        (
            "def fibonacci(n):",
            &[1604, 3987, 46477, 24, 94, 727],
            &[472, 585, 304, 1758, 216, 32, 42, 448, 1003, 216, 33, 472],
            "\n    if n == 0:\n        return 1\n   ",
        ),
    ];

    #[test]
    fn smollm2_reference_prompts() {
        let Some(t) = smollm2() else { return };
        assert_eq!(t.model(), TokenizerModel::Gpt2);
        assert_eq!(t.pre_tokenizer(), Some(PreTokenizer::Gpt2IndividualDigits));
        assert_eq!(
            (t.vocab_size(), t.bos_id(), t.eos_id()),
            (49152, Some(1), Some(2))
        );
        for (text, ids, greedy_ids, greedy_text) in PROMPTS {
            assert_eq!(t.encode(text), ids, "ids of {text:?}");
            assert_eq!(t.decode(ids), text);
            assert_eq!(t.decode(greedy_ids), greedy_text);
            assert_eq!(t.encode(greedy_text), greedy_ids, "ids of {greedy_text:?}");
        }
        let ids = t.encode_with_special("<|im_start|>user\nhi<|im_end|>");
        let spelled: Vec<&str> = ids.iter().map(|&i| t.token(i).unwrap()).collect();
        assert_eq!(spelled, ["<|im_start|>", "user", "Ċ", "hi", "<|im_end|>"]);
    }

    #[test]
    fn smollm2_round_trips_and_speed() {
        let Some(t) = smollm2() else { return };
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/austen.txt");
        let text = std::fs::read_to_string(&path).unwrap();
        let limit = if cfg!(debug_assertions) {
            1 << 18
        } else {
            text.len()
        };
        let mut end = limit.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = &text[..end];
        let t0 = std::time::Instant::now();
        let ids = t.encode(text);
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "encode: {:.2} MB in {secs:.3} s = {:.1} MB/s, {} tokens ({:.2} bytes/token)",
            text.len() as f64 / 1e6,
            text.len() as f64 / 1e6 / secs,
            ids.len(),
            text.len() as f64 / ids.len() as f64
        );
        assert_eq!(t.decode(&ids), text);
        let tricky = "naïve café — 東京 😀\t\r\n  x1.5e-3 'quoted' don't\u{0}";
        assert_eq!(t.decode(&t.encode(tricky)), tricky);
    }

    proptest::proptest! {
        #[test]
        fn toy_round_trips(s in "\\PC{0,40}") {
            let t = toy_gpt2();
            proptest::prop_assert_eq!(t.decode(&t.encode(&s)), s.clone());
            let spm = toy_spm(false);
            let ids = spm.encode(&s);
            proptest::prop_assert!(ids.iter().all(|&i| (i as usize) < spm.vocab_size()));
            let g = PreTokenizer::Gpt2IndividualDigits.split(&s).concat();
            proptest::prop_assert_eq!(g, s);
        }
    }
}
