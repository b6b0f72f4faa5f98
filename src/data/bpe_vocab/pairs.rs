//! The merge table's keys: a token pair packed into one `u64`, and the fast hasher the table uses.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A fast hasher for packed `u32` pairs (multiplicative, not DoS-resistant; keys come from the vocabulary).
#[derive(Default, Clone, Copy)]
pub(super) struct PairHasher(u64);

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

pub(super) type PairMap = HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>;

/// `(a, b)` as one key: `a` in the high half.
pub(super) fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_pairs_hash_apart_in_a_tables_low_bits() {
        let through = |write: &dyn Fn(&mut PairHasher, u32, u32)| {
            let hashes: Vec<u64> = (0..256 * 256)
                .map(|i| {
                    let mut h = PairHasher::default();
                    write(&mut h, i >> 8, i & 255);
                    h.finish()
                })
                .collect();
            crate::data::hash_spread(&hashes)
        };
        // The merge table's keys: one u64 each.
        let (distinct, low) = through(&|h, a, b| h.write_u64(pair_key(a, b)));
        assert_eq!(distinct, 65_536);
        assert!(low > 30_000, "{low} distinct low 16 bits of 65,536");
        // Any other key arrives as bytes.
        let (distinct, low) = through(&|h, a, b| h.write(&[a as u8, b as u8]));
        assert_eq!(distinct, 65_536);
        assert!(low > 30_000, "{low} distinct low 16 bits of 65,536");
    }
}
