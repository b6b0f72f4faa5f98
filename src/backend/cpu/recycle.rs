//! Reuse of large host buffers.
//!
//! When a tensor's host buffer of at least [`MIN_BYTES`] is dropped it is kept on a shelf, keyed by dtype and
//! length, and the next kernel asking for an output of that length gets it back (the most recently kept first,
//! as it is the likeliest to still be in cache). A training step allocates the same sizes every step, so once
//! warm its kernels neither zero-fill their outputs nor fault in fresh pages.
//!
//! The shelf holds at most as many bytes as the most that live tensors ever held at once
//! (`memory::most_live_bytes`), so reuse can at worst double the peak; a buffer that does not fit is freed.
//! Kept buffers are not live tensors: `memory_stats` does not count them, [`stats`] does.
//!
//! Every element type is plain old data, so a reused buffer's old values are valid values: [`buffer`] is for
//! outputs the kernel writes in full. [`poison_buffers`] makes it hand out NaN instead, so a kernel that leaves
//! part of its output unwritten shows in its results.

use super::{Storage, StorageElement};
use crate::dtype::DType;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

/// Buffers smaller than this go straight back to the allocator.
pub const MIN_BYTES: usize = 1 << 16;

/// What the shelf holds and how often it served a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecycleStats {
    /// Bytes of buffers kept for reuse now.
    pub kept_bytes: usize,
    /// Requests of at least `MIN_BYTES` served from the shelf / by the allocator.
    pub hits: u64,
    pub misses: u64,
}

#[derive(Default)]
struct Shelf {
    by_key: HashMap<(DType, usize), Vec<Storage>>,
    stats: RecycleStats,
}

static SHELF: LazyLock<Mutex<Shelf>> = LazyLock::new(Default::default);
static POISON: AtomicBool = AtomicBool::new(false);

fn shelf() -> MutexGuard<'static, Shelf> {
    SHELF.lock().unwrap_or_else(|e| e.into_inner())
}

/// A kept buffer of `n` elements of `T`, if there is one (counted as a hit or a miss).
fn take<T: StorageElement>(n: usize) -> Option<Vec<T>> {
    if n * size_of::<T>() < MIN_BYTES {
        return None;
    }
    let mut shelf = shelf();
    let found = shelf.by_key.get_mut(&(T::DTYPE, n)).and_then(Vec::pop);
    match found.and_then(T::unwrap) {
        Some(v) => {
            shelf.stats.hits += 1;
            shelf.stats.kept_bytes -= n * size_of::<T>();
            Some(v)
        }
        None => {
            shelf.stats.misses += 1;
            None
        }
    }
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

/// Keeps a dropped tensor's buffer for reuse when it is a large host buffer and the shelf has room.
pub(crate) fn keep(storage: Storage) {
    let bytes = storage.byte_len();
    if bytes < MIN_BYTES || !storage.is_host() {
        return;
    }
    let mut shelf = shelf();
    if shelf.stats.kept_bytes + bytes > crate::memory::most_live_bytes() {
        return;
    }
    shelf.stats.kept_bytes += bytes;
    let key = (storage.dtype(), storage.len());
    shelf.by_key.entry(key).or_default().push(storage);
}

/// Frees every kept buffer (say, after training, before work of other sizes).
pub fn release_all() {
    let mut shelf = shelf();
    shelf.by_key.clear();
    shelf.stats.kept_bytes = 0;
}

/// What the shelf holds now, and its hits and misses so far.
pub fn stats() -> RecycleStats {
    shelf().stats
}

/// While on, every buffer from [`buffer`] is filled with NaN first: a check that kernels write all of their
/// output.
pub fn poison_buffers(on: bool) {
    POISON.store(on, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    /// The buffers of a length no other test uses, so tests running alongside cannot take them.
    const LEN: usize = 16_411;

    #[test]
    fn a_dropped_tensor_buffer_is_handed_out_again() {
        let t = Tensor::from_vec(vec![3.5f32; LEN], &[LEN]).unwrap();
        let address = t.data::<f32>().as_ptr();
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
        let w = Tensor::from_vec(v, &[LEN]).unwrap();
        drop(w);
        let (longer, wider) = (buffer::<f32>(LEN + 1), buffer::<f64>(LEN));
        assert_ne!(longer.as_ptr(), address);
        assert_ne!(wider.as_ptr() as *const f32, address);
        assert!(filled(LEN, 2.0f32).iter().all(|&x| x == 2.0));
    }

    #[test]
    fn small_buffers_go_back_to_the_allocator() {
        let n = MIN_BYTES / 4 - 3;
        drop(Tensor::from_vec(vec![1.0f32; n], &[n]).unwrap());
        assert!(shelf()
            .by_key
            .get(&(DType::F32, n))
            .is_none_or(Vec::is_empty));
        assert!(take::<f32>(n).is_none());
    }

    #[test]
    fn poisoned_buffers_hold_nan() {
        poison_buffers(true);
        let v = buffer::<f64>(5);
        poison_buffers(false);
        assert!(v.iter().all(|x| x.is_nan()));
    }
}
