//! The GEMM's packed panels: lazily packed micro-panels shared by the tiles of one parallel phase, and the raw
//! pointer the tiles write through.

use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};

/// A raw pointer shared by tiles that write disjoint regions (of C, or of the packing buffers).
#[derive(Clone, Copy)]
pub(super) struct SharedOut<T>(pub(super) *mut T);
// SAFETY: every tile writes a disjoint rectangle of C, and every packed panel is written by the one thread that
// claimed it (see `Panels`) before any thread reads it.
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    pub(super) fn ptr(&self) -> *mut T {
        self.0
    }
}

/// The packed micro-panels of one operand for the depth blocks of one phase, packed lazily by whichever thread
/// needs them first. Panel `j` of block `q` lies at `(q · per_block + j) · stride`. Panels are claimed in groups
/// of `group` neighbours (packed together, so the source is read in longer runs): each group's state goes
/// `EMPTY → BUSY` (claimed by one thread, which packs it) `→ READY`. A thread that needs groups claimed by
/// another packs the unclaimed ones meanwhile, so tiles that share panels split the packing.
pub(super) struct Panels<'a, T> {
    pub(super) data: SharedOut<T>,
    /// Elements per panel.
    pub(super) stride: usize,
    /// Panels per depth block.
    pub(super) per_block: usize,
    /// Panels per group.
    pub(super) group: usize,
    /// One state per group, `per_block.div_ceil(group)` per depth block.
    pub(super) state: &'a [AtomicU8],
}

pub(super) const EMPTY: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;
/// The thread packing the group panicked.
const POISONED: u8 = 3;

impl<T> Panels<'_, T> {
    /// Number of group states needed for `blocks` depth blocks of `per_block` panels.
    pub(super) fn states(blocks: usize, per_block: usize, group: usize) -> usize {
        blocks * per_block.div_ceil(group)
    }

    /// Makes panels `panels` of block `q` ready, calling `pack(first, count, dst)` for each group this thread
    /// claims (`dst` holds panels `first..first + count` back to back), and returns once the other threads
    /// have packed theirs.
    pub(super) fn prepare(
        &self,
        q: usize,
        panels: Range<usize>,
        pack: impl Fn(usize, usize, &mut [T]),
    ) {
        /// Marks a claimed group poisoned if its packing panics, so that no thread waits for it forever.
        struct Claim<'s>(&'s AtomicU8);
        impl Drop for Claim<'_> {
            fn drop(&mut self) {
                self.0.store(POISONED, Ordering::Release);
            }
        }
        let base = q * self.per_block.div_ceil(self.group);
        let groups = panels.start / self.group..panels.end.div_ceil(self.group);
        for g in groups.clone() {
            let state = &self.state[base + g];
            if state.load(Ordering::Acquire) == EMPTY
                && state
                    .compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                let claim = Claim(state);
                let first = g * self.group;
                let count = self.group.min(self.per_block - first);
                // SAFETY: this thread claimed the group, so no other thread touches its panels until it is
                // READY; they lie inside the buffer (`stride` elements per panel, `per_block` per block).
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        self.data
                            .ptr()
                            .add((q * self.per_block + first) * self.stride),
                        count * self.stride,
                    )
                };
                pack(first, count, dst);
                std::mem::forget(claim);
                state.store(READY, Ordering::Release);
            }
        }
        for g in groups {
            // Packing a group takes microseconds: spin, but yield the core now and then in case the packing
            // thread is waiting for it.
            for spin in 1u32.. {
                match self.state[base + g].load(Ordering::Acquire) {
                    READY => break,
                    POISONED => panic!("gemm: packing panels panicked on another thread"),
                    _ if spin % 1024 == 0 => std::thread::yield_now(),
                    _ => std::hint::spin_loop(),
                }
            }
        }
    }

    /// Panel `j` of block `q`, which must have been made ready by [`Panels::prepare`].
    pub(super) fn get(&self, q: usize, j: usize) -> &[T] {
        let state = &self.state[q * self.per_block.div_ceil(self.group) + j / self.group];
        assert!(j < self.per_block && state.load(Ordering::Acquire) == READY);
        // SAFETY: the panel is READY, so it is no longer written, and lies inside the buffer.
        unsafe {
            std::slice::from_raw_parts(
                self.data.ptr().add((q * self.per_block + j) * self.stride),
                self.stride,
            )
        }
    }
}
