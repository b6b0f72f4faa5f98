//! The training-data pipeline: text files → [`Tokenizer`] (our byte-level BPE) → token [`Shard`]s on disk,
//! read through memory maps → a [`Mixture`] that samples training windows from several sources with fixed
//! probabilities → [`Batch`]es of inputs and next-token targets. Every stage is deterministic given its
//! inputs and seed: tokenizers and shards are written atomically and validated when read, shards are cached
//! under a key of the corpus content hash and the tokenizer fingerprint, and the sampler's state can be
//! saved and restored so that a resumed run draws exactly the batches an uninterrupted one would have.

pub mod bpe_vocab;
pub mod hf_tokenizer;
pub mod sampler;
pub mod shard;
pub mod tokenizer;

pub use sampler::{
    prepare_source, Batch, Mixture, MixtureState, Source, ValCounts, DEFAULT_VAL_FRACTION,
};
pub use shard::Shard;
pub use tokenizer::{pre_tokenize, Tokenizer};

/// A fresh folder under the system temporary directory, removed with everything in it when dropped.
#[cfg(test)]
pub(crate) struct TempDir {
    path: std::path::PathBuf,
}

#[cfg(test)]
impl TempDir {
    /// Creates `<tmp>/tapegrad-<label>-<pid>-<counter>`.
    pub(crate) fn new(label: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tapegrad-{label}-{}-{unique}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create a temporary folder");
        TempDir { path }
    }

    /// The folder.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How many distinct values `hashes` holds, and how many their low 16 bits take: the bits a hash table picks its
/// slot with. For 65,536 keys, a well-spread hash gives all 65,536 and about 41,400 low values (65,536 · (1 − 1/e)).
#[cfg(test)]
pub(crate) fn hash_spread(hashes: &[u64]) -> (usize, usize) {
    let distinct = hashes
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    let mut seen = vec![false; 1 << 16];
    hashes
        .iter()
        .for_each(|&hash| seen[(hash & 0xffff) as usize] = true);
    (distinct, seen.into_iter().filter(|&s| s).count())
}

/// What the data pipeline needs of a tokenizer: text to ids, a stable fingerprint for cache keys, and the
/// vocabulary size for shard headers. Implemented by our `Tokenizer` and by tokenizers of pretrained models.
pub trait Encoder: Sync {
    /// Token ids of a UTF-8 text, without special tokens.
    fn encode_text(&self, text: &[u8]) -> Vec<u32>;
    /// A hash that changes whenever the encoding could.
    fn fingerprint(&self) -> u64;
    /// Number of token ids.
    fn vocab_size(&self) -> usize;
}

impl Encoder for Tokenizer {
    fn encode_text(&self, text: &[u8]) -> Vec<u32> {
        self.encode_parallel(text)
    }
    fn fingerprint(&self) -> u64 {
        Tokenizer::fingerprint(self)
    }
    fn vocab_size(&self) -> usize {
        Tokenizer::vocab_size(self)
    }
}
