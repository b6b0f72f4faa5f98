//! A caching allocator: freed device blocks go to a free list keyed by their size class and are reused, so a
//! training step makes no driver allocation once warm. Generic over the raw allocator, so its bookkeeping is
//! tested on the CPU.
//!
//! Size classes: multiples of 512 bytes up to 1 MiB; above, the next of 8 steps per power of two (at most 12.5%
//! slack). On an allocation failure the pool returns every cached block to the driver and tries once more.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;

/// What the pool holds: in use by tensors, the most ever in use, and reserved from the driver (in use +
/// cached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub in_use: usize,
    pub peak: usize,
    pub reserved: usize,
    /// Allocations served from the cache / from the driver.
    pub hits: u64,
    pub misses: u64,
}

/// The driver side of a pool.
pub trait RawAlloc {
    type Block: Send;
    /// A block of exactly `bytes` bytes.
    fn alloc(&self, bytes: usize) -> Result<Self::Block>;
}

/// The size class of a request of `bytes` (> 0).
pub fn size_class(bytes: usize) -> usize {
    const SMALL: usize = 512;
    if bytes <= 1 << 20 {
        return bytes.max(1).div_ceil(SMALL) * SMALL;
    }
    let top = usize::BITS - 1 - bytes.leading_zeros();
    let step = 1usize << (top - 3);
    bytes.div_ceil(step) * step
}

/// A caching pool over a raw allocator.
pub struct Pool<R: RawAlloc> {
    raw: R,
    inner: Mutex<Inner<R::Block>>,
}

struct Inner<B> {
    free: HashMap<usize, Vec<B>>,
    stats: PoolStats,
}

impl<R: RawAlloc> Pool<R> {
    pub fn new(raw: R) -> Pool<R> {
        Pool {
            raw,
            inner: Mutex::new(Inner {
                free: HashMap::new(),
                stats: PoolStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<R::Block>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A block of at least `bytes` bytes and its size class (to hand back to `release`).
    pub fn acquire(&self, bytes: usize) -> Result<(R::Block, usize)> {
        let class = size_class(bytes);
        let mut inner = self.lock();
        if let Some(block) = inner.free.get_mut(&class).and_then(Vec::pop) {
            inner.stats.hits += 1;
            Self::count_use(&mut inner.stats, class);
            return Ok((block, class));
        }
        let block = match self.raw.alloc(class) {
            Ok(b) => b,
            Err(_) => {
                // Give every cached block back to the driver, then try once more.
                Self::drop_cached(&mut inner);
                self.raw.alloc(class).map_err(|e| Error::Device {
                    op: "alloc",
                    msg: format!(
                        "out of device memory asking for {bytes} bytes ({} in use by tensors, {} reserved): {e}",
                        inner.stats.in_use, inner.stats.reserved
                    ),
                })?
            }
        };
        inner.stats.misses += 1;
        inner.stats.reserved += class;
        Self::count_use(&mut inner.stats, class);
        Ok((block, class))
    }

    fn count_use(stats: &mut PoolStats, class: usize) {
        stats.in_use += class;
        stats.peak = stats.peak.max(stats.in_use);
    }

    /// Returns a block of size class `class` to the cache.
    pub fn release(&self, block: R::Block, class: usize) {
        let mut inner = self.lock();
        inner.stats.in_use -= class;
        inner.free.entry(class).or_default().push(block);
    }

    /// Gives every cached block back to the driver.
    pub fn empty_cache(&self) {
        Self::drop_cached(&mut self.lock());
    }

    fn drop_cached(inner: &mut Inner<R::Block>) {
        let cached: usize = inner
            .free
            .iter()
            .map(|(size, blocks)| size * blocks.len())
            .sum();
        inner.free.clear();
        inner.stats.reserved -= cached;
    }

    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    /// Starts a new peak window at the bytes in use now.
    pub fn reset_peak(&self) {
        let mut inner = self.lock();
        inner.stats.peak = inner.stats.in_use;
    }

    pub fn raw(&self) -> &R {
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake driver with a capacity, counting live bytes.
    struct Fake {
        capacity: usize,
        live: AtomicUsize,
    }

    struct Block(usize);

    impl RawAlloc for &Fake {
        type Block = Block;
        fn alloc(&self, bytes: usize) -> Result<Block> {
            let live = self.live.load(Ordering::Relaxed);
            if live + bytes > self.capacity {
                return Err(Error::Device {
                    op: "fake",
                    msg: "full".into(),
                });
            }
            self.live.fetch_add(bytes, Ordering::Relaxed);
            Ok(Block(bytes))
        }
    }

    #[test]
    fn classes_round_up_with_bounded_slack() {
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 1024);
        assert_eq!(size_class(1 << 20), 1 << 20);
        for bytes in [(1 << 20) + 1, 3_000_000, 123_456_789] {
            let c = size_class(bytes);
            assert!(c >= bytes && (c - bytes) * 8 <= bytes, "{bytes} -> {c}");
        }
    }

    #[test]
    fn freed_blocks_are_reused_and_counted() {
        let fake = Fake {
            capacity: 1 << 30,
            live: AtomicUsize::new(0),
        };
        let pool = Pool::new(&fake);
        let (a, ca) = pool.acquire(1000).unwrap();
        assert_eq!((ca, a.0), (1024, 1024));
        pool.release(a, ca);
        let (b, cb) = pool.acquire(700).unwrap();
        let s = pool.stats();
        assert_eq!((s.hits, s.misses, s.in_use, s.reserved), (1, 1, 1024, 1024));
        pool.release(b, cb);
        assert_eq!(pool.stats().in_use, 0);
        assert_eq!(pool.stats().peak, 1024);
        pool.empty_cache();
        assert_eq!(pool.stats().reserved, 0);
    }

    #[test]
    fn a_full_device_empties_the_cache_then_reports_a_clear_error() {
        let fake = Fake {
            capacity: 4096,
            live: AtomicUsize::new(0),
        };
        let pool = Pool::new(&fake);
        let (a, ca) = pool.acquire(2048).unwrap();
        pool.release(a, ca);
        // The cached 2048 bytes count against the fake's capacity; the retry after emptying the cache is
        // refused too because the fake never gets the bytes back, so the error must name the request.
        let err = pool.acquire(3000).err().expect("too big").to_string();
        assert!(err.contains("3000 bytes"), "{err}");
        assert_eq!(pool.stats().reserved, 0);
    }
}
