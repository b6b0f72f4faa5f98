//! Our own byte-level BPE tokenizer, trained and applied with LLaMA's rules. The base vocabulary is the 256
//! bytes (ids `0..256`), so every byte sequence, invalid UTF-8 included, encodes and decodes back unchanged;
//! the two special tokens BOS and EOS always take ids 256 and 257, right after the bytes, and merged tokens
//! follow from id 258 in the order they were learned. Text is first cut into chunks (see [`pre_tokenize`]);
//! merges never cross a chunk boundary, digits are always tokens of their own, and no token is longer than
//! [`MAX_TOKEN_BYTES`]. Training is deterministic (ties go to the pair with the smallest ids), the JSON file
//! format is validated on load so that no corrupt file can panic, and [`Tokenizer::fingerprint`] is a stable
//! FNV-1a hash of everything that decides the encoding.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::checksum::Fnv1a64;
use crate::io::write_file_atomically;
use learn::{count_chunks, MergeLearner};

mod hf;
mod learn;
pub use hf::PATTERN as HF_PATTERN;

/// The number of byte tokens at the start of every vocabulary.
const BYTE_TOKENS: u32 = 256;
/// The id of the beginning-of-sequence token.
const BOS_ID: u32 = 256;
/// The id of the end-of-sequence token.
const EOS_ID: u32 = 257;
/// The id of the first merged token; merge `i` creates token `FIRST_MERGED_ID + i`.
const FIRST_MERGED_ID: u32 = 258;
/// The default names of the special tokens, stored in the file for readers of other tools.
const BOS_NAME: &str = "<s>";
const EOS_NAME: &str = "</s>";
/// The `format` field of a tokenizer file.
pub(crate) const FORMAT_NAME: &str = "tapegrad-bpe";
/// The `version` field of a tokenizer file; bump it whenever the pre-tokenization rules change.
const FORMAT_VERSION: u32 = 1;

/// The longest token, in bytes, that training creates and loading accepts.
pub const MAX_TOKEN_BYTES: usize = 256;

/// Chunks of up to this many bytes merge with a simple quadratic scan; longer ones use a priority queue.
const SHORT_CHUNK_BYTES: usize = 48;
/// Chunks of up to this many bytes are remembered by the per-call encoding cache.
const CACHED_CHUNK_BYTES: usize = 64;
/// The encoding cache stops growing after this many distinct chunks.
const CACHE_CAPACITY: usize = 1 << 20;
/// Texts are cut into pieces of about this many bytes for parallel counting and encoding.
const PARALLEL_PIECE_BYTES: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------------------------

/// A fast multiply-add hasher for the in-memory tables (not stable, never persisted).
#[derive(Clone, Copy, Default)]
struct TableHasher {
    hash: u64,
}

impl TableHasher {
    const MULTIPLIER: u64 = 0xf135_7aea_2e62_a9c5;

    fn add_word(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(Self::MULTIPLIER);
    }
}

impl Hasher for TableHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut buffer = [0u8; 8];
            buffer.copy_from_slice(word);
            self.add_word(u64::from_le_bytes(buffer));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut buffer = [0u8; 8];
            buffer[..rest.len()].copy_from_slice(rest);
            self.add_word(u64::from_le_bytes(buffer));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add_word(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add_word(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add_word(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add_word(value as u64);
    }

    fn finish(&self) -> u64 {
        // The product's high bits depend on every input bit; rotate them down to where tables look.
        self.hash.rotate_left(26)
    }
}

/// A hash map keyed through [`TableHasher`].
type TableMap<K, V> = HashMap<K, V, BuildHasherDefault<TableHasher>>;

/// Packs a token pair into one key whose order is the order of `(left, right)`.
fn pack_pair(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// The token pair packed by [`pack_pair`].
fn unpack_pair(pair: u64) -> (u32, u32) {
    ((pair >> 32) as u32, pair as u32)
}

// ---------------------------------------------------------------------------------------------------------
// Pre-tokenization
// ---------------------------------------------------------------------------------------------------------

/// What a byte counts as when text is cut into chunks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ByteClass {
    /// ASCII letters and every byte >= 128, so UTF-8 words stay whole.
    Letter,
    /// ASCII digits, each a chunk (and a token) of its own.
    Digit,
    /// Space, tab, newline, carriage return, vertical tab and form feed.
    Space,
    /// Everything else: punctuation, symbols, control bytes.
    Other,
}

/// The class of every byte value.
static BYTE_CLASSES: [ByteClass; 256] = build_byte_classes();

const fn build_byte_classes() -> [ByteClass; 256] {
    let mut classes = [ByteClass::Other; 256];
    let mut byte = 0;
    while byte < 256 {
        classes[byte] = match byte as u8 {
            b'a'..=b'z' | b'A'..=b'Z' | 128..=255 => ByteClass::Letter,
            b'0'..=b'9' => ByteClass::Digit,
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => ByteClass::Space,
            _ => ByteClass::Other,
        };
        byte += 1;
    }
    classes
}

fn class_of(byte: u8) -> ByteClass {
    BYTE_CLASSES[byte as usize]
}

/// Cuts `bytes` into the chunks that BPE merges within, left to right, covering every byte once.
///
/// A chunk is one of: an optional single space followed by a run of letters (ASCII letters and bytes >= 128);
/// an optional single space followed by one digit; an optional single space followed by a run of other
/// (punctuation or symbol) bytes; or a run of whitespace, newlines included. A whitespace run of two or more
/// bytes that ends in a space and is followed by non-whitespace leaves that last space to the next chunk.
pub fn pre_tokenize(bytes: &[u8]) -> PreTokens<'_> {
    PreTokens { bytes, position: 0 }
}

/// The iterator returned by [`pre_tokenize`].
#[derive(Clone, Debug)]
pub struct PreTokens<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Iterator for PreTokens<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.position;
        if start >= self.bytes.len() {
            return None;
        }
        let end = chunk_end(self.bytes, start);
        self.position = end;
        Some(&self.bytes[start..end])
    }
}

/// The end of the chunk that starts at `start` (which must be inside `bytes`).
fn chunk_end(bytes: &[u8], start: usize) -> usize {
    let leading_space = bytes[start] == b' '
        && bytes
            .get(start + 1)
            .is_some_and(|&next| class_of(next) != ByteClass::Space);
    let body = if leading_space { start + 1 } else { start };
    match class_of(bytes[body]) {
        ByteClass::Letter => run_end(bytes, body, ByteClass::Letter),
        ByteClass::Digit => body + 1,
        ByteClass::Other => run_end(bytes, body, ByteClass::Other),
        ByteClass::Space => whitespace_chunk_end(bytes, body),
    }
}

/// The end of the run of bytes of `class` that starts at `start`.
fn run_end(bytes: &[u8], start: usize, class: ByteClass) -> usize {
    bytes[start..]
        .iter()
        .position(|&byte| class_of(byte) != class)
        .map_or(bytes.len(), |offset| start + offset)
}

/// The end of a whitespace chunk: the whole run, less a final space that belongs to the word after it.
fn whitespace_chunk_end(bytes: &[u8], start: usize) -> usize {
    let end = run_end(bytes, start, ByteClass::Space);
    let followed_by_text = end < bytes.len();
    if followed_by_text && end - start >= 2 && bytes[end - 1] == b' ' {
        end - 1
    } else {
        end
    }
}

/// Whether a chunk can take part in merges: two bytes or more, and not a digit chunk.
fn is_mergeable_chunk(chunk: &[u8]) -> bool {
    chunk.len() >= 2 && !chunk[chunk.len() - 1].is_ascii_digit()
}

/// Cuts `bytes` into pieces of about `piece_bytes` at points where a chunk always starts (after a newline,
/// before a non-whitespace byte), so pre-tokenizing the pieces one by one gives the chunks of the whole.
fn split_at_chunk_starts(bytes: &[u8], piece_bytes: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut start = 0;
    while let Some(cut) = next_chunk_start(bytes, start + piece_bytes) {
        pieces.push(&bytes[start..cut]);
        start = cut;
    }
    pieces.push(&bytes[start..]);
    pieces
}

/// The first position at or after `from` (and after 0) that follows a newline and holds non-whitespace.
fn next_chunk_start(bytes: &[u8], from: usize) -> Option<usize> {
    (from.max(1)..bytes.len()).find(|&position| {
        bytes[position - 1] == b'\n' && class_of(bytes[position]) != ByteClass::Space
    })
}

// ---------------------------------------------------------------------------------------------------------
// The tokenizer
// ---------------------------------------------------------------------------------------------------------

/// A trained byte-level BPE tokenizer: 256 byte tokens, BOS (256), EOS (257), then one token per merge.
#[derive(Clone)]
pub struct Tokenizer {
    /// The learned merges in rank order; merge `i` creates token `FIRST_MERGED_ID + i`.
    merges: Vec<(u32, u32)>,
    /// For each mergeable pair, the id of the token it creates (smaller id = higher priority).
    merge_ids: TableMap<u64, u32>,
    /// The bytes of every token; special tokens have none.
    token_bytes: Vec<Vec<u8>>,
    /// The names of BOS and EOS, as stored in the file.
    special_names: [String; 2],
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.merges.len())
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint()))
            .finish()
    }
}

impl Tokenizer {
    /// Learns a vocabulary of `vocab_size` tokens (256 bytes, 2 specials, `vocab_size - 258` merges) from
    /// `texts`. Chunks are counted in parallel; merges are then learned with incremental pair counts and a
    /// lazily updated priority queue, always taking the most frequent pair (ties: smallest left id, then
    /// smallest right id). The vocabulary comes out smaller than asked when the texts run out of pairs.
    pub fn train(texts: &[&[u8]], vocab_size: usize) -> Result<Tokenizer> {
        check_vocab_size(vocab_size)?;
        if texts.iter().all(|text| text.is_empty()) {
            return Err(Error::invalid("texts", "the training texts are empty"));
        }
        let chunk_counts = count_chunks(texts);
        let merge_budget = vocab_size - FIRST_MERGED_ID as usize;
        let merges = MergeLearner::new(chunk_counts).learn(merge_budget);
        Ok(Tokenizer::from_merges(
            merges,
            [BOS_NAME.to_string(), EOS_NAME.to_string()],
        ))
    }

    /// Builds the lookup tables for `merges`, which must already be valid.
    fn from_merges(merges: Vec<(u32, u32)>, special_names: [String; 2]) -> Tokenizer {
        let mut token_bytes: Vec<Vec<u8>> = (0..BYTE_TOKENS).map(|byte| vec![byte as u8]).collect();
        token_bytes.push(Vec::new());
        token_bytes.push(Vec::new());
        let mut merge_ids = TableMap::default();
        for (rank, &(left, right)) in merges.iter().enumerate() {
            let mut bytes = token_bytes[left as usize].clone();
            bytes.extend_from_slice(&token_bytes[right as usize]);
            token_bytes.push(bytes);
            merge_ids.insert(pack_pair(left, right), FIRST_MERGED_ID + rank as u32);
        }
        Tokenizer {
            merges,
            merge_ids,
            token_bytes,
            special_names,
        }
    }

    /// The number of tokens: bytes, specials and merged tokens.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The id of the beginning-of-sequence token (always 256).
    pub fn bos_id(&self) -> u32 {
        BOS_ID
    }

    /// The id of the end-of-sequence token (always 257).
    pub fn eos_id(&self) -> u32 {
        EOS_ID
    }

    /// The names of BOS and EOS (`<s>` and `</s>` unless the file said otherwise).
    pub fn special_names(&self) -> [&str; 2] {
        [&self.special_names[0], &self.special_names[1]]
    }

    /// The learned merges in rank order; merge `i` creates token `258 + i`.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// The bytes token `id` stands for: empty for the special tokens and for ids outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Encodes `bytes` (any bytes, not only UTF-8) into token ids, without adding special tokens.
    pub fn encode(&self, bytes: &[u8]) -> Vec<u32> {
        let mut encoder = ChunkEncoder::new(self);
        let mut ids = Vec::with_capacity(bytes.len() / 3 + 1);
        for chunk in pre_tokenize(bytes) {
            encoder.encode_chunk(chunk, &mut ids);
        }
        ids
    }

    /// Encodes `text` like [`Tokenizer::encode`], except that the names of BOS and EOS (`<s>`, `</s>`) in
    /// it are those tokens, as Hugging Face tokenizers read special tokens inside text.
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        loop {
            let next = [
                (BOS_ID, &self.special_names[0]),
                (EOS_ID, &self.special_names[1]),
            ]
            .into_iter()
            .filter(|(_, name)| !name.is_empty())
            .filter_map(|(id, name)| {
                rest.find(name.as_str())
                    .map(|at| (at, Reverse(name.len()), id))
            })
            .min();
            let Some((at, Reverse(len), id)) = next else {
                ids.extend(self.encode(rest.as_bytes()));
                return ids;
            };
            ids.extend(self.encode(&rest.as_bytes()[..at]));
            ids.push(id);
            rest = &rest[at + len..];
        }
    }

    /// Encodes `bytes` like [`Tokenizer::encode`] (same ids), cutting large inputs into pieces encoded in
    /// parallel on the rayon pool.
    pub fn encode_parallel(&self, bytes: &[u8]) -> Vec<u32> {
        let pieces = split_at_chunk_starts(bytes, PARALLEL_PIECE_BYTES);
        if pieces.len() == 1 {
            return self.encode(bytes);
        }
        let encoded: Vec<Vec<u32>> = pieces.par_iter().map(|piece| self.encode(piece)).collect();
        encoded.concat()
    }

    /// The bytes `ids` stand for; special tokens and ids outside the vocabulary decode to nothing.
    pub fn decode(&self, ids: &[u32]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        bytes
    }

    /// [`Tokenizer::decode`] as text, with invalid UTF-8 replaced by U+FFFD.
    pub fn decode_lossy(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode(ids)).into_owned()
    }

    /// A stable 64-bit FNV-1a hash of the format version, the special tokens and the merges: equal
    /// fingerprints mean equal encodings, so it keys caches of tokenized data.
    pub fn fingerprint(&self) -> u64 {
        let mut hash = Fnv1a64::new();
        hash.update(FORMAT_NAME.as_bytes());
        hash.update(&FORMAT_VERSION.to_le_bytes());
        for (id, name) in [BOS_ID, EOS_ID].iter().zip(&self.special_names) {
            hash.update(&id.to_le_bytes());
            hash.update(&(name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
        }
        hash.update(&(self.merges.len() as u64).to_le_bytes());
        for &(left, right) in &self.merges {
            hash.update(&left.to_le_bytes());
            hash.update(&right.to_le_bytes());
        }
        hash.finish()
    }

    /// Writes the tokenizer to `path` as JSON, atomically (a temporary file in the same folder, then a rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let file = TokenizerFile {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            vocab_size: self.vocab_size() as u64,
            special_tokens: [BOS_ID, EOS_ID]
                .iter()
                .zip(&self.special_names)
                .map(|(&id, name)| SpecialToken {
                    name: name.clone(),
                    id,
                })
                .collect(),
            merges: self
                .merges
                .iter()
                .map(|&(left, right)| [left, right])
                .collect(),
        };
        let json = serde_json::to_vec(&file)
            .map_err(|error| Error::format(path, format!("cannot serialize tokenizer: {error}")))?;
        write_file_atomically(path, |writer| writer.write_all(&json))
    }

    /// Reads a tokenizer written by [`Tokenizer::save`], checking the format name and version, the special
    /// tokens, every merge (ids of earlier tokens, no specials or digits, no repeats, tokens no longer than
    /// [`MAX_TOKEN_BYTES`]) and the vocabulary size; any problem is an [`Error::Format`] naming `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|error| Error::io(path, error))?;
        let file: TokenizerFile = serde_json::from_slice(&bytes)
            .map_err(|error| Error::format(path, format!("invalid tokenizer json: {error}")))?;
        file.into_tokenizer()
            .map_err(|message| Error::format(path, message))
    }
}

/// Checks that a requested vocabulary holds the bytes and the specials and fits `u32` ids.
fn check_vocab_size(vocab_size: usize) -> Result<()> {
    if vocab_size < FIRST_MERGED_ID as usize {
        return Err(Error::invalid(
            "vocab_size",
            format!("must be at least 258 (256 bytes and 2 special tokens), got {vocab_size}"),
        ));
    }
    if vocab_size > u32::MAX as usize {
        return Err(Error::invalid(
            "vocab_size",
            format!("must fit 32-bit token ids, got {vocab_size}"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------------------

/// Encodes the chunks of one input, remembering the ids of the chunks it has already seen.
struct ChunkEncoder<'t, 'b> {
    tokenizer: &'t Tokenizer,
    /// Chunk bytes to the range of their ids in `cached_ids`.
    cache: TableMap<&'b [u8], (usize, usize)>,
    cached_ids: Vec<u32>,
    scratch: Vec<u32>,
}

impl<'t, 'b> ChunkEncoder<'t, 'b> {
    fn new(tokenizer: &'t Tokenizer) -> Self {
        ChunkEncoder {
            tokenizer,
            cache: TableMap::default(),
            cached_ids: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Appends the ids of `chunk` to `ids`.
    fn encode_chunk(&mut self, chunk: &'b [u8], ids: &mut Vec<u32>) {
        if chunk.len() == 1 {
            ids.push(u32::from(chunk[0]));
            return;
        }
        if let Some(&(start, end)) = self.cache.get(chunk) {
            ids.extend_from_slice(&self.cached_ids[start..end]);
            return;
        }
        self.tokenizer.merge_chunk(chunk, &mut self.scratch);
        ids.extend_from_slice(&self.scratch);
        if chunk.len() <= CACHED_CHUNK_BYTES && self.cache.len() < CACHE_CAPACITY {
            let start = self.cached_ids.len();
            self.cached_ids.extend_from_slice(&self.scratch);
            self.cache.insert(chunk, (start, self.cached_ids.len()));
        }
    }
}

/// Marks a symbol that was merged into its left neighbour.
const MERGED_AWAY: u32 = u32::MAX;

impl Tokenizer {
    /// The token a merge of `left` and `right` creates, if there is such a merge.
    fn merged_id(&self, left: u32, right: u32) -> Option<u32> {
        self.merge_ids.get(&pack_pair(left, right)).copied()
    }

    /// The pair merge `id` joins (`id` must be a merged token).
    fn merge_of(&self, id: u32) -> (u32, u32) {
        self.merges[(id - FIRST_MERGED_ID) as usize]
    }

    /// Writes the ids of `chunk` into `symbols`, applying merges by rank.
    fn merge_chunk(&self, chunk: &[u8], symbols: &mut Vec<u32>) {
        symbols.clear();
        symbols.extend(chunk.iter().map(|&byte| u32::from(byte)));
        if chunk.len() <= SHORT_CHUNK_BYTES {
            self.merge_by_scanning(symbols);
        } else {
            self.merge_with_queue(symbols);
        }
    }

    /// Repeatedly finds the best-ranked pair and merges all its occurrences, left to right.
    fn merge_by_scanning(&self, symbols: &mut Vec<u32>) {
        loop {
            let best = symbols
                .windows(2)
                .filter_map(|pair| self.merged_id(pair[0], pair[1]))
                .min();
            let Some(new_id) = best else {
                return;
            };
            let (left, right) = self.merge_of(new_id);
            let mut write = 0;
            let mut read = 0;
            while read < symbols.len() {
                if read + 1 < symbols.len() && symbols[read] == left && symbols[read + 1] == right {
                    symbols[write] = new_id;
                    read += 2;
                } else {
                    symbols[write] = symbols[read];
                    read += 1;
                }
                write += 1;
            }
            symbols.truncate(write);
        }
    }

    /// The same merges as [`Tokenizer::merge_by_scanning`] in O(n log n): a queue of (rank, position)
    /// candidates over a linked list of symbols, stale candidates skipped when popped.
    fn merge_with_queue(&self, symbols: &mut Vec<u32>) {
        let count = symbols.len();
        let mut next: Vec<usize> = (1..=count).collect();
        let mut previous: Vec<Option<usize>> = (0..count).map(|i| i.checked_sub(1)).collect();
        let mut queue: BinaryHeap<Reverse<(u32, usize)>> = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(i, pair)| self.merged_id(pair[0], pair[1]).map(|id| Reverse((id, i))))
            .collect();
        while let Some(Reverse((new_id, position))) = queue.pop() {
            // Stale when either side has changed since: a symbol merged away or merged into another id no
            // longer holds the operand (`MERGED_AWAY` never does), and one whose right neighbour is gone
            // merged with it.
            let right_position = next[position];
            let (left, right) = self.merge_of(new_id);
            if symbols[position] != left || symbols.get(right_position) != Some(&right) {
                continue;
            }
            symbols[position] = new_id;
            symbols[right_position] = MERGED_AWAY;
            let after = next[right_position];
            next[position] = after;
            if after < count {
                previous[after] = Some(position);
                if let Some(id) = self.merged_id(new_id, symbols[after]) {
                    queue.push(Reverse((id, position)));
                }
            }
            if let Some(before) = previous[position] {
                if let Some(id) = self.merged_id(symbols[before], new_id) {
                    queue.push(Reverse((id, before)));
                }
            }
        }
        symbols.retain(|&symbol| symbol != MERGED_AWAY);
    }
}

// ---------------------------------------------------------------------------------------------------------
// The file format
// ---------------------------------------------------------------------------------------------------------

/// The JSON layout of a tokenizer file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizerFile {
    format: String,
    version: u32,
    vocab_size: u64,
    special_tokens: Vec<SpecialToken>,
    merges: Vec<[u32; 2]>,
}

/// A special token's name and id in a tokenizer file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecialToken {
    name: String,
    id: u32,
}

impl TokenizerFile {
    /// Validates the file and builds the tokenizer, or says what is wrong.
    fn into_tokenizer(self) -> std::result::Result<Tokenizer, String> {
        if self.format != FORMAT_NAME {
            return Err(format!(
                "unknown format {:?}, expected {FORMAT_NAME:?}",
                self.format
            ));
        }
        if self.version != FORMAT_VERSION {
            return Err(format!("unsupported version {}", self.version));
        }
        let special_names = validate_special_tokens(&self.special_tokens)?;
        let merges = validate_merges(&self.merges)?;
        let expected = u64::from(FIRST_MERGED_ID) + merges.len() as u64;
        if self.vocab_size != expected {
            return Err(format!(
                "vocab_size {} does not match 258 + {} merges",
                self.vocab_size,
                merges.len()
            ));
        }
        Ok(Tokenizer::from_merges(merges, special_names))
    }
}

/// Checks that the specials are BOS (256) then EOS (257) with distinct, non-empty names.
fn validate_special_tokens(specials: &[SpecialToken]) -> std::result::Result<[String; 2], String> {
    let [bos, eos] = specials else {
        return Err(format!(
            "expected 2 special tokens (bos, eos), found {}",
            specials.len()
        ));
    };
    if bos.id != BOS_ID || eos.id != EOS_ID {
        return Err(format!(
            "special token ids are {} and {}, expected {BOS_ID} and {EOS_ID}",
            bos.id, eos.id
        ));
    }
    if bos.name.is_empty() || eos.name.is_empty() || bos.name == eos.name {
        return Err("special token names must be non-empty and distinct".to_string());
    }
    Ok([bos.name.clone(), eos.name.clone()])
}

/// Checks that `count` merges after the bytes and the specials leave a vocabulary of 32-bit ids.
fn check_merge_count(count: usize) -> std::result::Result<(), String> {
    if count > (u32::MAX - FIRST_MERGED_ID) as usize {
        return Err(format!("{count} merges do not fit 32-bit ids"));
    }
    Ok(())
}

/// Checks every merge: operands are earlier tokens, neither special nor a digit, no pair repeats, and no
/// merged token is longer than [`MAX_TOKEN_BYTES`].
fn validate_merges(merges: &[[u32; 2]]) -> std::result::Result<Vec<(u32, u32)>, String> {
    check_merge_count(merges.len())?;
    let mut token_lengths = vec![1usize; FIRST_MERGED_ID as usize];
    let mut seen = HashSet::with_capacity(merges.len());
    for (rank, &[left, right]) in merges.iter().enumerate() {
        let next_id = FIRST_MERGED_ID as usize + rank;
        for operand in [left, right] {
            if operand as usize >= next_id {
                return Err(format!(
                    "merge {rank} refers to token {operand}, which does not exist yet"
                ));
            }
            if operand == BOS_ID || operand == EOS_ID {
                return Err(format!("merge {rank} refers to special token {operand}"));
            }
            if (u32::from(b'0')..=u32::from(b'9')).contains(&operand) {
                return Err(format!("merge {rank} refers to digit token {operand}"));
            }
        }
        if !seen.insert((left, right)) {
            return Err(format!("merge {rank} repeats the pair ({left}, {right})"));
        }
        let length = token_lengths[left as usize] + token_lengths[right as usize];
        if length > MAX_TOKEN_BYTES {
            return Err(format!(
                "merge {rank} makes a token of {length} bytes, longer than {MAX_TOKEN_BYTES}"
            ));
        }
        token_lengths.push(length);
    }
    Ok(merges.iter().map(|&[left, right]| (left, right)).collect())
}

#[cfg(test)]
mod tests;
