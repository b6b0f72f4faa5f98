//! Learning the merges: chunk counts over the training texts (in parallel), then the most frequent pair merged
//! again and again with incremental pair counts and a lazily updated priority queue.

use super::*;

/// Counts the mergeable chunks of all texts, in parallel over pieces of the texts.
pub(super) fn count_chunks<'a>(texts: &[&'a [u8]]) -> TableMap<&'a [u8], u64> {
    let pieces: Vec<&'a [u8]> = texts
        .iter()
        .flat_map(|text| split_at_chunk_starts(text, PARALLEL_PIECE_BYTES))
        .collect();
    pieces
        .par_iter()
        .fold(TableMap::default, |mut counts, piece| {
            for chunk in pre_tokenize(piece).filter(|chunk| is_mergeable_chunk(chunk)) {
                *counts.entry(chunk).or_insert(0) += 1;
            }
            counts
        })
        .reduce(TableMap::default, add_counts)
}

/// The sum of two chunk counts (the smaller map is added into the larger).
fn add_counts<'a>(
    a: TableMap<&'a [u8], u64>,
    b: TableMap<&'a [u8], u64>,
) -> TableMap<&'a [u8], u64> {
    let mut maps = [a, b];
    maps.sort_by_key(TableMap::len);
    let [from, mut into] = maps;
    for (chunk, count) in from {
        *into.entry(chunk).or_insert(0) += count;
    }
    into
}

/// A candidate pair in the priority queue: most frequent first, then smallest ids first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct QueuedPair {
    count: i64,
    pair: u64,
}

impl Ord for QueuedPair {
    fn cmp(&self, other: &Self) -> Ordering {
        self.count
            .cmp(&other.count)
            .then_with(|| other.pair.cmp(&self.pair))
    }
}

impl PartialOrd for QueuedPair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Incremental BPE over the unique chunks of a corpus.
///
/// `pair_counts` always holds the exact frequency of every pair; `pair_chunks` lists, for each pair, the
/// chunks where it was ever seen (a superset of where it is now); `queue` holds at least one entry per
/// live pair whose count is at least the pair's current count. A merge can only lower the counts of
/// existing pairs and create pairs with the new token, so popping an entry whose count is current yields
/// the exact best pair, and stale entries are pushed back with their current count.
pub(super) struct MergeLearner {
    chunks: Vec<Vec<u32>>,
    frequencies: Vec<i64>,
    token_lengths: Vec<usize>,
    pair_counts: TableMap<u64, i64>,
    pair_chunks: TableMap<u64, Vec<u32>>,
    queue: BinaryHeap<QueuedPair>,
    /// Pairs with the token being created whose count went up during the current merge.
    new_pairs: Vec<u64>,
}

impl MergeLearner {
    pub(super) fn new(chunk_counts: TableMap<&[u8], u64>) -> Self {
        let mut unique: Vec<(&[u8], u64)> = chunk_counts.into_iter().collect();
        unique.sort_unstable();
        let mut learner = MergeLearner {
            chunks: Vec::with_capacity(unique.len()),
            frequencies: Vec::with_capacity(unique.len()),
            token_lengths: vec![1; FIRST_MERGED_ID as usize],
            pair_counts: TableMap::default(),
            pair_chunks: TableMap::default(),
            queue: BinaryHeap::new(),
            new_pairs: Vec::new(),
        };
        for (chunk_index, (bytes, count)) in unique.into_iter().enumerate() {
            let symbols: Vec<u32> = bytes.iter().map(|&byte| u32::from(byte)).collect();
            let frequency = count as i64;
            for pair in symbols.windows(2) {
                learner.add_pair(pack_pair(pair[0], pair[1]), frequency, chunk_index as u32);
            }
            learner.chunks.push(symbols);
            learner.frequencies.push(frequency);
        }
        learner.queue = learner
            .pair_counts
            .iter()
            .map(|(&pair, &count)| QueuedPair { count, pair })
            .collect();
        learner
    }

    /// Learns up to `budget` merges.
    pub(super) fn learn(mut self, budget: usize) -> Vec<(u32, u32)> {
        let mut merges = Vec::with_capacity(budget);
        while merges.len() < budget {
            let Some(pair) = self.pop_best_pair() else {
                break;
            };
            let new_id = FIRST_MERGED_ID + merges.len() as u32;
            let (left, right) = unpack_pair(pair);
            self.token_lengths
                .push(self.token_lengths[left as usize] + self.token_lengths[right as usize]);
            self.apply_merge(pair, new_id);
            merges.push((left, right));
        }
        merges
    }

    /// Adds `delta` to the count of `pair` and records that it occurs in `chunk_index`.
    fn add_pair(&mut self, pair: u64, delta: i64, chunk_index: u32) {
        *self.pair_counts.entry(pair).or_insert(0) += delta;
        let chunks = self.pair_chunks.entry(pair).or_default();
        if chunks.last() != Some(&chunk_index) {
            chunks.push(chunk_index);
        }
    }

    /// Subtracts `frequency` from the count of `pair`.
    fn remove_pair(&mut self, pair: u64, frequency: i64) {
        if let Some(count) = self.pair_counts.get_mut(&pair) {
            *count -= frequency;
            debug_assert!(*count >= 0, "pair count went negative");
        }
    }

    /// The most frequent pair (smallest ids on ties) whose merged token is not too long.
    fn pop_best_pair(&mut self) -> Option<u64> {
        while let Some(entry) = self.queue.pop() {
            let current = self.pair_counts.get(&entry.pair).copied().unwrap_or(0);
            if current <= 0 || !self.fits_token_length(entry.pair) {
                continue;
            }
            if current != entry.count {
                self.queue.push(QueuedPair {
                    count: current,
                    pair: entry.pair,
                });
                continue;
            }
            return Some(entry.pair);
        }
        None
    }

    fn fits_token_length(&self, pair: u64) -> bool {
        let (left, right) = unpack_pair(pair);
        self.token_lengths[left as usize] + self.token_lengths[right as usize] <= MAX_TOKEN_BYTES
    }

    /// Replaces every occurrence of `pair` by `new_id`, updating only the chunks that contain it.
    fn apply_merge(&mut self, pair: u64, new_id: u32) {
        let chunk_indices = self.pair_chunks.remove(&pair).unwrap_or_default();
        for chunk_index in chunk_indices {
            self.merge_in_chunk(chunk_index, pair, new_id);
        }
        self.pair_counts.remove(&pair);
        let mut new_pairs = std::mem::take(&mut self.new_pairs);
        new_pairs.sort_unstable();
        new_pairs.dedup();
        for &new_pair in &new_pairs {
            let count = self.pair_counts.get(&new_pair).copied().unwrap_or(0);
            if count > 0 {
                self.queue.push(QueuedPair {
                    count,
                    pair: new_pair,
                });
            }
        }
        new_pairs.clear();
        self.new_pairs = new_pairs;
    }

    /// Merges `pair` within one chunk, left to right, and updates the counts of the neighbouring pairs.
    fn merge_in_chunk(&mut self, chunk_index: u32, pair: u64, new_id: u32) {
        let (left, right) = unpack_pair(pair);
        let symbols = std::mem::take(&mut self.chunks[chunk_index as usize]);
        let frequency = self.frequencies[chunk_index as usize];
        let mut merged = Vec::with_capacity(symbols.len());
        let mut i = 0;
        while i < symbols.len() {
            let is_match = i + 1 < symbols.len() && symbols[i] == left && symbols[i + 1] == right;
            if !is_match {
                merged.push(symbols[i]);
                i += 1;
                continue;
            }
            if let Some(&before) = merged.last() {
                self.remove_pair(pack_pair(before, left), frequency);
                self.add_new_pair(pack_pair(before, new_id), frequency, chunk_index);
            }
            if let Some(&after) = symbols.get(i + 2) {
                self.remove_pair(pack_pair(right, after), frequency);
                self.add_new_pair(pack_pair(new_id, after), frequency, chunk_index);
            }
            self.remove_pair(pair, frequency);
            merged.push(new_id);
            i += 2;
        }
        self.chunks[chunk_index as usize] = merged;
    }

    fn add_new_pair(&mut self, pair: u64, frequency: i64, chunk_index: u32) {
        self.add_pair(pair, frequency, chunk_index);
        self.new_pairs.push(pair);
    }
}
