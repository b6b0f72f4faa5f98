//! The KV cache: keys and values of every layer for the positions generated so far, so each new token runs the
//! model on one position (O(T) instead of O(T²)). The model writes it during its forward pass; `generate` owns it.

use crate::backend::cpu::elementwise::gather;
use crate::backend::StorageElement;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Keys and values of every layer for the positions seen so far, `[B, Hkv, T, D]` each.
#[derive(Default)]
pub struct KvCache {
    keys: Vec<Option<Tensor>>,
    values: Vec<Option<Tensor>>,
    len: usize,
    /// Positions the buffers are first made for.
    reserve: usize,
    /// The token ids of the cached positions, kept by `generate_with` and the benchmarks' `PrefixScorer`
    /// (which then reuse the cache for any context that begins with them); empty when the cache was filled
    /// otherwise.
    pub(crate) ids: Vec<u32>,
}

/// Positions a cache made without a size starts with.
const FIRST_RESERVE: usize = 256;

impl KvCache {
    /// An empty cache; its buffers start at 256 positions and double as needed.
    pub fn new() -> KvCache {
        KvCache::with_capacity(FIRST_RESERVE)
    }

    /// An empty cache whose buffers start at `positions` (a prompt and the tokens to generate: then they are
    /// allocated once), doubling beyond it as needed, never past the model's `max_seq_len`.
    pub fn with_capacity(positions: usize) -> KvCache {
        KvCache {
            reserve: positions.max(1),
            ..KvCache::default()
        }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends this step's keys and values of `layer` (`[B, Hkv, n, D]`) and returns views of the whole cached
    /// sequence. Each layer's buffers hold the reserved positions (at most `max_len`) and are reallocated at
    /// twice the size when full; the views returned by the previous step are dropped by then, so the buffers
    /// are written in place.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
        max_len: usize,
    ) -> Result<(Tensor, Tensor)> {
        if self.keys.len() <= layer {
            self.keys.resize(layer + 1, None);
            self.values.resize(layer + 1, None);
        }
        if k.is_cuda() {
            return Err(Error::Device {
                op: "kv cache",
                msg: format!(
                    "generation with a KV cache runs on the cpu; move the model there first (keys are on {})",
                    k.device()
                ),
            });
        }
        let n = k.dim(2);
        if self.len + n > max_len {
            return Err(Error::invalid(
                "kv cache",
                format!(
                    "{} cached + {n} new positions exceed max_seq_len {max_len}",
                    self.len
                ),
            ));
        }
        let (len, reserve) = (self.len, self.reserve);
        let write = |slot: &mut Option<Tensor>, new: &Tensor| -> Result<Tensor> {
            let (b, heads, d) = (new.dim(0), new.dim(1), new.dim(3));
            let room = slot.as_ref().map_or(0, |t| t.dim(2));
            if len + n > room {
                let positions = (len + n).max(reserve).max(2 * room).min(max_len);
                let mut grown = Tensor::zeros(&[b, heads, positions, d], new.dtype());
                if let Some(old) = slot.take() {
                    place(&mut grown, &old.narrow(2, 0, len)?, 0, 0)?;
                }
                *slot = Some(grown);
            }
            let buffer = slot.as_mut().expect("allocated above");
            place(buffer, new, 0, len)?;
            buffer.narrow(2, 0, len + n)
        };
        let k = write(&mut self.keys[layer], &k)?;
        let v = write(&mut self.values[layer], &v)?;
        Ok((k, v))
    }

    /// Forgets every position from `len` on (a conversation whose new text departs from what was cached
    /// there); the buffers are kept and overwritten by the next positions.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.ids.truncate(len);
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// A cache of `batch` sequences, each holding this one-sequence cache's positions (several continuations
    /// of one shared context run as one batch), with room for `reserve` positions in all.
    pub fn repeated(&self, batch: usize, reserve: usize) -> Result<KvCache> {
        let copy = |slot: &Option<Tensor>| -> Result<Option<Tensor>> {
            let Some(old) = slot else { return Ok(None) };
            if old.dim(0) != 1 {
                return Err(Error::invalid(
                    "kv cache",
                    format!("repeats a cache of one sequence, not of {}", old.dim(0)),
                ));
            }
            let (heads, d) = (old.dim(1), old.dim(3));
            let positions = reserve.max(self.len);
            let mut grown = Tensor::zeros(&[batch, heads, positions, d], old.dtype());
            let held = old.narrow(2, 0, self.len)?;
            for b in 0..batch {
                place(&mut grown, &held, b, 0)?;
            }
            Ok(Some(grown))
        };
        Ok(KvCache {
            keys: self.keys.iter().map(copy).collect::<Result<_>>()?,
            values: self.values.iter().map(copy).collect::<Result<_>>()?,
            len: self.len,
            reserve: reserve.max(self.len).max(1),
            ids: self.ids.clone(),
        })
    }
}

/// Writes `new` (`[b, H, n, D]`) into positions `at..at + n` of sequences `first..first + b` of `buffer`
/// (`[B, H, P, D]`).
fn place(buffer: &mut Tensor, new: &Tensor, first: usize, at: usize) -> Result<()> {
    fn copy<T: StorageElement + Default>(
        buffer: &mut Tensor,
        new: &Tensor,
        first: usize,
        at: usize,
    ) -> Result<()> {
        let (heads, n, d) = (new.dim(1), new.dim(2), new.dim(3));
        let positions = buffer.dim(2);
        let rows = gather(new.data::<T>(), new.layout());
        let dst = buffer.data_mut::<T>()?;
        for (r, row) in rows.chunks(d.max(1)).enumerate() {
            let (bh, t) = (r / n.max(1), r % n.max(1));
            let (bi, hi) = (bh / heads, bh % heads);
            dst[(((first + bi) * heads + hi) * positions + at + t) * d..][..d].copy_from_slice(row);
        }
        Ok(())
    }
    match new.dtype() {
        DType::F32 => copy::<f32>(buffer, new, first, at),
        DType::F64 => copy::<f64>(buffer, new, first, at),
        DType::BF16 => copy::<half::bf16>(buffer, new, first, at),
        DType::F16 => copy::<half::f16>(buffer, new, first, at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[1, 2, n, 3]` holding `first, first + 1, ...`.
    fn keys(n: usize, first: f32) -> Tensor {
        let values = (0..2 * n * 3).map(|i| first + i as f32).collect();
        Tensor::from_vec(values, &[1, 2, n, 3]).unwrap()
    }

    #[test]
    fn the_cache_holds_what_was_appended_up_to_max_len_and_no_more() {
        let mut cache = KvCache::new();
        assert!(cache.is_empty());
        assert_eq!(cache.len(), 0);
        let (k, v) = cache.append(0, keys(3, 0.0), keys(3, 100.0), 5).unwrap();
        assert_eq!(
            (k.shape(), v.shape()),
            (&[1, 2, 3, 3][..], &[1, 2, 3, 3][..])
        );
        cache.advance(3);
        assert!(!cache.is_empty());
        assert_eq!(cache.len(), 3);
        // Exactly up to max_len: the views hold the earlier positions, then the new ones, per head.
        let (k, _) = cache.append(0, keys(2, 50.0), keys(2, 150.0), 5).unwrap();
        assert_eq!(k.shape(), &[1, 2, 5, 3]);
        let k = k.to_vec::<f32>().unwrap();
        assert_eq!(&k[..9], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(&k[9..15], &[50.0, 51.0, 52.0, 53.0, 54.0, 55.0]);
        assert_eq!(
            &k[15..18],
            &[9.0, 10.0, 11.0],
            "head 1 starts with its own cached keys"
        );
        cache.advance(2);
        let err = cache.append(0, keys(1, 0.0), keys(1, 0.0), 5).unwrap_err();
        assert!(
            err.to_string()
                .contains("5 cached + 1 new positions exceed max_seq_len 5"),
            "{err}"
        );
    }

    #[test]
    fn full_buffers_double_and_keep_what_they_held() {
        let mut cache = KvCache::with_capacity(2);
        cache.append(0, keys(2, 0.0), keys(2, 100.0), 5).unwrap();
        cache.advance(2);
        assert_eq!(cache.keys[0].as_ref().unwrap().dim(2), 2);
        let (k, v) = cache.append(0, keys(1, 50.0), keys(1, 150.0), 5).unwrap();
        cache.advance(1);
        assert_eq!(cache.keys[0].as_ref().unwrap().dim(2), 4);
        // Head 0 then head 1, each with its two old positions and the new one.
        let expect = |first: f32, new: f32| {
            let mut e: Vec<f32> = (0..6).map(|i| first + i as f32).collect();
            e.extend((0..3).map(|i| new + i as f32));
            e.extend((6..12).map(|i| first + i as f32));
            e.extend((3..6).map(|i| new + i as f32));
            e
        };
        let (k, v) = (k.to_vec::<f32>().unwrap(), v.to_vec::<f32>().unwrap());
        assert_eq!(k, expect(0.0, 50.0));
        assert_eq!(v, expect(100.0, 150.0));
        // Past 4 positions: doubled, but never beyond max_len.
        cache.append(0, keys(2, 0.0), keys(2, 0.0), 5).unwrap();
        assert_eq!(cache.keys[0].as_ref().unwrap().dim(2), 5);
    }

    #[test]
    fn each_sequence_of_a_batch_keeps_its_own_heads() {
        // [2, 2, n, 1]: batch b, head h, position t holds 100·b + 10·h + first + t.
        let kv = |n: usize, first: f32| {
            let mut values = Vec::new();
            for b in 0..2 {
                for h in 0..2 {
                    values.extend(
                        (0..n).map(|t| 100.0 * b as f32 + 10.0 * h as f32 + first + t as f32),
                    );
                }
            }
            Tensor::from_vec(values, &[2, 2, n, 1]).unwrap()
        };
        let mut cache = KvCache::new();
        cache.append(0, kv(2, 0.0), kv(2, 0.0), 4).unwrap();
        cache.advance(2);
        let (k, _) = cache.append(0, kv(1, 2.0), kv(1, 2.0), 4).unwrap();
        assert_eq!(k.shape(), &[2, 2, 3, 1]);
        assert_eq!(
            k.to_vec::<f32>().unwrap(),
            [0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 100.0, 101.0, 102.0, 110.0, 111.0, 112.0]
        );
    }
}
