//! Live-tensor memory accounting: every tensor buffer counts its bytes from creation to drop, so a run can
//! report the peak bytes of live tensors (what activations, gradients, parameters and optimizer state held at
//! once), independent of the allocator's own caching.
//!
//! A dropped buffer may be kept for reuse (`backend::cpu::recycle`); it stops counting here when dropped.
//!
//! The counters are process-wide and count host memory (re-exported as `tapegrad::memory`); GPU memory is reported by each device's pool
//! (`backend::cuda::Gpu::memory`). `reset_peak` starts a new measurement window.

use super::Storage;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The most live bytes ever, never reset: the bound on buffers kept for reuse (`backend::cpu::recycle`).
static MOST: AtomicUsize = AtomicUsize::new(0);

/// Bytes of tensor storage alive now and at the peak since the last `reset_peak`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStats {
    pub live_bytes: usize,
    pub peak_bytes: usize,
}

/// The current counters.
pub fn memory_stats() -> MemoryStats {
    MemoryStats {
        live_bytes: LIVE.load(Ordering::Relaxed),
        peak_bytes: PEAK.load(Ordering::Relaxed),
    }
}

/// Starts a new peak window at the current live bytes.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// The most bytes live tensors have held at once since the process started.
pub(crate) fn most_live_bytes() -> usize {
    MOST.load(Ordering::Relaxed)
}

/// Device buffers are counted by their device's pool instead.
fn host_bytes(storage: &Storage) -> usize {
    if storage.is_host() {
        storage.byte_len()
    } else {
        0
    }
}

/// A tensor buffer whose bytes are counted while it exists.
#[derive(Debug)]
pub(crate) struct Counted(Storage);

impl Counted {
    pub(crate) fn new(storage: Storage) -> Counted {
        let bytes = host_bytes(&storage);
        let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
        PEAK.fetch_max(now, Ordering::Relaxed);
        MOST.fetch_max(now, Ordering::Relaxed);
        Counted(storage)
    }
}

impl Clone for Counted {
    fn clone(&self) -> Counted {
        Counted::new(self.0.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE.fetch_sub(host_bytes(&self.0), Ordering::Relaxed);
        super::cpu::recycle::shelve(std::mem::replace(&mut self.0, Storage::F32(Vec::new())));
    }
}

impl Deref for Counted {
    type Target = Storage;
    fn deref(&self) -> &Storage {
        &self.0
    }
}

impl DerefMut for Counted {
    fn deref_mut(&mut self) -> &mut Storage {
        &mut self.0
    }
}
