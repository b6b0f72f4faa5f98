//! The vocabulary's spellings, compactly: [`Spellings`] keeps them all in one buffer (a `Vec<String>` costs a
//! header and an allocation per token, about 2 MB more for 49,152 tokens), and [`TokenIndex`] maps a spelling
//! to its id without strings of its own: an open-addressing table of ids (linear probing, at most half full)
//! hashed by spelling and compared against the spellings themselves (512 KiB where a `HashMap<String, u32>`
//! holds a second copy of every spelling, about 4 MB).

/// Every token's spelling, in id order, in one buffer.
pub(super) struct Spellings {
    text: String,
    /// Where each spelling ends in `text`.
    ends: Vec<u32>,
}

impl Spellings {
    /// The spellings of `tokens` (together under 4 GiB, as a GGUF vocabulary is).
    pub(super) fn new(tokens: &[&str]) -> Spellings {
        let mut text = String::with_capacity(tokens.iter().map(|t| t.len()).sum());
        let mut ends = Vec::with_capacity(tokens.len());
        for t in tokens {
            text.push_str(t);
            ends.push(text.len() as u32);
        }
        Spellings { text, ends }
    }

    /// The number of tokens.
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Token `id`'s spelling.
    pub(super) fn get(&self, id: usize) -> Option<&str> {
        let end = *self.ends.get(id)? as usize;
        let start = if id == 0 {
            0
        } else {
            self.ends[id - 1] as usize
        };
        Some(&self.text[start..end])
    }

    /// Every spelling, in id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|id| self.get(id).expect("in range"))
    }
}

/// Whether `n` tokens can all have 32-bit ids: 1 to `u32::MAX` of them.
pub(super) fn token_count_fits(n: usize) -> bool {
    (1..=u32::MAX as usize).contains(&n)
}

/// Ids by spelling; see the module docs. Looked up with the vocabulary it was built from.
pub(super) struct TokenIndex {
    slots: Box<[u32]>,
}

/// An empty slot.
const EMPTY: u32 = u32::MAX;

/// A multiply-rotate hash of the spelling, eight bytes at a time (not DoS-resistant: the keys come from the
/// vocabulary and the text being encoded looks them up, it does not insert).
fn hash(s: &str) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes = s.as_bytes();
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let word = u64::from_le_bytes(c.try_into().expect("eight bytes"));
        h = (h ^ word).wrapping_mul(K).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    h ^ (h >> 32)
}

impl TokenIndex {
    /// The index of `tokens` (fewer than `u32::MAX`); a spelling that occurs twice maps to its first id.
    pub(super) fn new(tokens: &Spellings) -> TokenIndex {
        let size = (tokens.len() * 2).next_power_of_two().max(2);
        let mut index = TokenIndex {
            slots: vec![EMPTY; size].into_boxed_slice(),
        };
        for (id, t) in tokens.iter().enumerate() {
            let slot = index.probe(tokens, t);
            if index.slots[slot] == EMPTY {
                index.slots[slot] = id as u32;
            }
        }
        index
    }

    /// The slot that holds `s`, or the empty slot where it would go.
    fn probe(&self, tokens: &Spellings, s: &str) -> usize {
        let mask = self.slots.len() - 1;
        let mut slot = hash(s) as usize & mask;
        loop {
            let id = self.slots[slot];
            if id == EMPTY || tokens.get(id as usize) == Some(s) {
                return slot;
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The id spelled `s` in `tokens` (the vocabulary the index was built from).
    pub(super) fn get(&self, tokens: &Spellings, s: &str) -> Option<u32> {
        let id = self.slots[self.probe(tokens, s)];
        (id != EMPTY).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_is_kept_and_finds_its_first_id_and_others_find_nothing() {
        let owned: Vec<String> = ["a", "b", "ab", "", "a", "ĠThe", "日本"]
            .iter()
            .map(|s| s.to_string())
            .chain((0..1000).map(|i| format!("t{i}")))
            .collect();
        let list: Vec<&str> = owned.iter().map(String::as_str).collect();
        let tokens = Spellings::new(&list);
        assert_eq!(tokens.len(), list.len());
        assert!(tokens.iter().eq(list.iter().copied()));
        assert_eq!(tokens.get(list.len()), None);
        let index = TokenIndex::new(&tokens);
        for (id, t) in list.iter().enumerate() {
            assert_eq!(tokens.get(id), Some(*t));
            let want = list.iter().position(|u| u == t).unwrap() as u32;
            assert_eq!(index.get(&tokens, t), Some(want), "{t:?} (id {id})");
        }
        assert_eq!(
            index.get(&tokens, "a"),
            Some(0),
            "a repeated spelling keeps its first id"
        );
        for missing in ["c", "abc", "t1000", "Ġthe"] {
            assert_eq!(index.get(&tokens, missing), None);
        }
        let none = Spellings::new(&[]);
        assert_eq!(TokenIndex::new(&none).get(&none, "x"), None);
    }

    #[test]
    fn spellings_hash_apart_in_the_tables_low_bits() {
        // Short spellings end in the tail word alone; long ones vary in their first eight-byte word.
        let short = (0..65_536).map(|i| format!("t{i}"));
        let long = (0..65_536).map(|i| format!("{i:08} spelled long"));
        for (kind, spellings) in [
            ("short", short.collect::<Vec<_>>()),
            ("long", long.collect()),
        ] {
            let hashes: Vec<u64> = spellings.iter().map(|s| hash(s)).collect();
            let (distinct, low) = crate::data::hash_spread(&hashes);
            assert_eq!(distinct, 65_536, "{kind}");
            assert!(low > 30_000, "{kind}: {low} distinct low 16 bits of 65,536");
        }
        // Every two-letter spelling: the length the hash starts from shares bits with the letters.
        let printable = || (b' '..=b'~').map(char::from);
        let pairs: Vec<String> = printable()
            .flat_map(|a| printable().map(move |b| format!("{a}{b}")))
            .collect();
        let hashes: Vec<u64> = pairs.iter().map(|s| hash(s)).collect();
        assert_eq!(crate::data::hash_spread(&hashes).0, pairs.len());
    }
}
