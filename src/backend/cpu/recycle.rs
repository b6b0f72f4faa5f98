//! Reuse of large host buffers.
//!
//! When a tensor's host buffer of at least [`MIN_BYTES`] is dropped it is kept on a shelf, keyed by dtype and
//! length, and the next kernel asking for an output of that length gets it back (the most recently kept first,
//! as it is the likeliest to still be in cache). A training step allocates the same sizes every step, so once
//! warm these outputs are neither zero-filled nor faulted in page by page.
//!
//! Only buffers above glibc's largest mmap threshold are kept: the allocator returns those to the kernel when
//! freed, so each new one faults in page by page (the logits of a `small` step and their gradient, 64 MB each).
//! Smaller ones stay in the allocator's heap (`keep_freed_memory`), where a request of any size can reuse them.
//! Keeping those too made a `small` step another 4.5% faster, but its peak 19% larger and `medium`'s a third
//! larger: a shelf keyed by length cannot hand a freed buffer to a request of another length.
//!
//! Bounds: a length is kept only as many times as requests for it found the shelf empty, so buffers of a
//! length no kernel asks for are freed at once and the shelf stops growing once a step has run. As a backstop
//! against work of ever new lengths, the shelf holds at most twice the bytes live tensors ever held at once
//! (`backend::memory::most_live_bytes`), freeing its oldest buffers beyond that. Kept buffers are not live tensors:
//! `memory_stats` does not count them, [`stats`] does.
//!
//! Every element type is plain old data, so a reused buffer's old values are valid values: [`buffer`] is for
//! outputs the kernel writes in full. [`poison_buffers`] makes it hand out NaN instead, so a kernel that leaves
//! part of its output unwritten shows in its results.

use crate::backend::memory::most_live_bytes;
use crate::backend::{Storage, StorageElement};
use crate::dtype::DType;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

/// Buffers smaller than this go straight back to the allocator: 32 MiB, glibc's largest mmap threshold.
pub const MIN_BYTES: usize = 32 << 20;

/// What the shelf holds and how often it served a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecycleStats {
    /// Bytes of buffers kept for reuse now.
    pub kept_bytes: usize,
    /// Requests of at least `MIN_BYTES` served from the shelf / by the allocator.
    pub hits: u64,
    pub misses: u64,
}

type Key = (DType, usize);

/// The kept buffers of one key, oldest first with the order they were kept in, and how many requests for
/// the key found none.
#[derive(Default)]
struct Kept {
    buffers: Vec<(u64, Storage)>,
    misses: usize,
}

#[derive(Default)]
struct Shelf {
    by_key: HashMap<Key, Kept>,
    next: u64,
    stats: RecycleStats,
}

impl Shelf {
    fn take(&mut self, key: Key, bytes: usize) -> Option<Storage> {
        let kept = self.by_key.entry(key).or_default();
        match kept.buffers.pop() {
            Some((_, storage)) => {
                self.stats.hits += 1;
                self.stats.kept_bytes -= bytes;
                Some(storage)
            }
            None => {
                kept.misses += 1;
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Keeps `storage` when its key was asked for more often than it is kept, then frees the oldest buffers
    /// beyond `limit` bytes; returns what is freed.
    fn shelve(&mut self, storage: Storage, limit: usize) -> Vec<Storage> {
        let key = (storage.dtype(), storage.len());
        let Some(kept) = self
            .by_key
            .get_mut(&key)
            .filter(|k| k.buffers.len() < k.misses)
        else {
            return vec![storage];
        };
        self.stats.kept_bytes += storage.byte_len();
        self.next += 1;
        kept.buffers.push((self.next, storage));
        self.evict_to(limit)
    }

    /// Takes out the oldest buffers until at most `limit` bytes are kept.
    fn evict_to(&mut self, limit: usize) -> Vec<Storage> {
        let mut out = Vec::new();
        while self.stats.kept_bytes > limit {
            let oldest = self
                .by_key
                .iter()
                .filter_map(|(key, kept)| kept.buffers.first().map(|(seq, _)| (*seq, *key)))
                .min_by_key(|&(seq, _)| seq);
            let Some((_, key)) = oldest else { break };
            let (_, storage) = self.by_key.get_mut(&key).expect("listed").buffers.remove(0);
            self.stats.kept_bytes -= storage.byte_len();
            out.push(storage);
        }
        out
    }
}

static SHELF: LazyLock<Mutex<Shelf>> = LazyLock::new(Default::default);
static POISON: AtomicBool = AtomicBool::new(false);

/// Runs `f` on the shelf. What `f` returns is dropped after the lock is released.
fn with_shelf<R>(f: impl FnOnce(&mut Shelf) -> R) -> R {
    let mut shelf: MutexGuard<'static, Shelf> = SHELF.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut shelf)
}

/// A kept buffer of `n` elements of `T`, if there is one (counted as a hit or a miss).
fn take<T: StorageElement>(n: usize) -> Option<Vec<T>> {
    let bytes = n * size_of::<T>();
    if bytes < MIN_BYTES {
        return None;
    }
    with_shelf(|shelf| shelf.take((T::DTYPE, n), bytes)).and_then(T::unwrap)
}

/// A buffer of `n` elements for an output the caller writes in full: a kept buffer of that length when there
/// is one (holding old values, or NaN while [`poison_buffers`] is on), else freshly zeroed memory.
pub fn buffer<T: StorageElement>(n: usize) -> Vec<T> {
    let mut v = take(n).unwrap_or_else(|| vec![T::from_f64(0.0); n]);
    if POISON.load(Ordering::Relaxed) {
        v.fill(T::from_f64(f64::NAN));
    }
    v
}

/// `n` copies of `value`, in a kept buffer when there is one.
pub fn filled<T: StorageElement>(n: usize, value: T) -> Vec<T> {
    match take(n) {
        Some(mut v) => {
            v.fill(value);
            v
        }
        None => vec![value; n],
    }
}

/// Keeps a dropped tensor's buffer for reuse when it is a large host buffer of a length kernels ask for (see
/// the module docs).
pub(crate) fn shelve(storage: Storage) {
    if storage.byte_len() < MIN_BYTES || !storage.is_host() {
        return;
    }
    let limit = 2 * most_live_bytes();
    drop(with_shelf(|shelf| shelf.shelve(storage, limit)));
}

/// Frees every kept buffer (say, after training, before work of other sizes).
pub fn release_all() {
    drop(with_shelf(|shelf| shelf.evict_to(0)));
}

/// What the shelf holds now, and its hits and misses so far.
pub fn stats() -> RecycleStats {
    with_shelf(|shelf| shelf.stats)
}

/// While on, every buffer from [`buffer`] is filled with NaN first: a check that kernels write all of their
/// output.
pub fn poison_buffers(on: bool) {
    POISON.store(on, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::Counted;

    /// The buffers of a length no other test uses, so tests running alongside cannot take them.
    const LEN: usize = MIN_BYTES / 4 + 11;

    #[test]
    fn a_dropped_storage_buffer_is_handed_out_again() {
        // A request that finds nothing makes the length wanted.
        let mut first = buffer::<f32>(LEN);
        first.fill(3.5);
        let t = Counted::new(Storage::F32(first));
        let address = t.host::<f32>().as_ptr();
        let before = stats();
        drop(t);
        let v = buffer::<f32>(LEN);
        let after = stats();
        assert_eq!(v.as_ptr(), address, "the kept buffer is reused");
        assert!(after.hits > before.hits);
        assert!(
            v.iter().all(|&x| x == 3.5 || x.is_nan()),
            "old values (or poison)"
        );
        // A buffer of another length or dtype is not a match.
        drop(Counted::new(Storage::F32(v)));
        let (longer, wider) = (buffer::<f32>(LEN + 1), buffer::<f64>(LEN));
        assert_ne!(longer.as_ptr(), address);
        assert_ne!(wider.as_ptr() as *const f32, address);
        assert!(filled(LEN, 2.0f32).iter().all(|&x| x == 2.0));
    }

    #[test]
    fn small_buffers_go_back_to_the_allocator() {
        let n = MIN_BYTES / 4 - 3;
        drop(Counted::new(Storage::F32(vec![1.0f32; n])));
        let kept = with_shelf(|shelf| {
            let kept = shelf.by_key.get(&(DType::F32, n));
            kept.map_or(0, |k| k.buffers.len())
        });
        assert_eq!(kept, 0);
        assert!(take::<f32>(n).is_none());
    }

    fn storage(n: usize) -> Storage {
        Storage::F32(vec![0.0; n])
    }

    #[test]
    fn the_shelf_keeps_what_was_asked_for_within_its_limit_and_frees_the_oldest_first() {
        let mut shelf = Shelf::default();
        let key = |n| (DType::F32, n);
        // Nobody asked for 100 elements yet: not kept.
        assert_eq!(shelf.shelve(storage(100), 10_000).len(), 1);
        // Two requests found nothing: two buffers of that length are kept, not a third.
        assert!(shelf.take(key(100), 400).is_none() && shelf.take(key(100), 400).is_none());
        assert!(shelf.take(key(50), 200).is_none());
        assert!(shelf.shelve(storage(100), 10_000).is_empty());
        assert!(shelf.shelve(storage(50), 10_000).is_empty());
        assert!(shelf.shelve(storage(100), 10_000).is_empty());
        assert_eq!(shelf.shelve(storage(100), 10_000).len(), 1);
        assert_eq!(shelf.stats.kept_bytes, 1000);
        // Over the limit, the oldest go first: the first 100-element buffer, then the 50-element one.
        let freed = shelf.evict_to(500);
        assert_eq!(
            freed.iter().map(Storage::len).collect::<Vec<_>>(),
            [100, 50]
        );
        assert_eq!(shelf.stats.kept_bytes, 400);
        assert!(shelf.take(key(100), 400).is_some());
        assert!(shelf.take(key(100), 400).is_none());
        assert_eq!(
            (shelf.stats.hits, shelf.stats.misses, shelf.stats.kept_bytes),
            (1, 4, 0)
        );
        // A buffer that passes the limit is freed right away.
        assert_eq!(shelf.shelve(storage(100), 399).len(), 1);
        assert!(shelf.evict_to(0).is_empty());
    }

    #[test]
    fn poisoned_buffers_hold_nan() {
        poison_buffers(true);
        let v = buffer::<f64>(5);
        poison_buffers(false);
        assert!(v.iter().all(|x| x.is_nan()));
    }
}
