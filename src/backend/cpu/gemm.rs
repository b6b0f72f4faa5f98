//! Packed, cache-blocked GEMM in the BLIS shape: `C = alpha · A · B + beta · C`.
//!
//! Both operands are packed into contiguous micro-panels (`MR` rows of A, `NR` columns of B, zero-padded at the
//! edges) per depth block of at most `KC`; a register-blocked micro-kernel then computes each `MR × NR` tile of
//! C over one block and writes it straight into C. Packing reads any row and column strides, so transposed
//! operands cost nothing but the packing. Tiles of C (at most `MC` rows × `NT` columns, about six per thread)
//! are the tasks of one parallel phase (one per `PACKED_LIMIT` elements of packed A and B), run by
//! `parallel::run_tasks` with the calling thread taking part; each tile runs its whole depth, one block at a
//! time, keeping one A micro-panel (`MR × KC`, 12 KiB) in L1 while its B panels (up to `NT × KC`, 512 KiB)
//! stream from L2. There is no separate packing phase: a tile packs the panels it needs that no other tile has
//! packed yet (claimed in groups of `GROUP` through an atomic state per group), and waits only for panels
//! another thread is packing at that moment. In small products (up to `DIRECT_A_WORK` multiply-adds) a
//! row-major f32 A is not packed at all: the micro-kernel broadcasts its elements straight from the `MR` rows
//! (each read in order, so the prefetchers follow them), which saves a pass over A.
//!
//! The micro-kernels and the packing routines are in `gemm_kernel` (and `gemm_avx512`): f32 uses the AVX-512
//! or the AVX2 + FMA micro-kernel (6 × 16) when the CPU has them (runtime detection), and a portable one
//! otherwise; f64 uses the portable one.

#[cfg(target_arch = "x86_64")]
use super::gemm_kernel::avx2;
pub use super::gemm_kernel::portable_kernel;
use super::gemm_kernel::{f32_kernels, interleave_rows, pack_a, pack_b, store_tile, F32Kernels};
use super::parallel::run_tasks;
use crate::dtype::Float;
use rayon::prelude::*;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};

/// Rows of A per micro-panel.
pub const MR: usize = 6;
/// Columns of B per micro-panel.
pub const NR: usize = 16;
/// Depth of one packed block.
const KC: usize = 512;
/// Rows of C per parallel tile.
const MC: usize = 96;
/// Columns of C per parallel tile.
const NT: usize = 256;
/// Neighbouring micro-panels claimed and packed together.
const GROUP: usize = 4;
/// Columns of B packed at once.
const NC: usize = 4096;
/// The most elements of A and B packed at once (8 MiB of f32, a quarter of the shared L3): deeper products
/// are packed and computed in several phases, so the packed operands of one phase stay in cache.
const PACKED_LIMIT: usize = 1 << 21;
/// Up to this many multiply-adds (a 512³ product) A is read in place rather than packed, where the
/// micro-kernel can; larger products measured no gain.
const DIRECT_A_WORK: usize = 1 << 28;
/// Below this many multiply-adds the GEMM runs on the calling thread.
const PARALLEL_WORK: usize = 1 << 18;

/// A read-only strided matrix view: element `(i, j)` is `data[offset + i · row_stride + j · col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<T: Copy> MatRef<'_, T> {
    #[inline(always)]
    pub(super) fn at(&self, i: usize, j: usize) -> T {
        self.data[self.offset + i * self.row_stride + j * self.col_stride]
    }
}

/// [`GemmFloat::tile`] through the portable kernel, from a packed B panel.
///
/// # Safety
/// As for [`GemmFloat::tile`].
#[allow(clippy::too_many_arguments)]
unsafe fn tile_portable<T: Float>(
    kc: usize,
    a: &[T],
    b: &[T],
    c: *mut T,
    ldc: usize,
    (mr, nr): (usize, usize),
    alpha: T,
    beta: T,
) {
    let mut acc = [T::ZERO; MR * NR];
    portable_kernel(kc, a, b, &mut acc);
    // SAFETY: forwarded from the caller.
    unsafe { store_tile(&acc, c, ldc, mr, nr, alpha, beta) }
}

/// The element types the GEMM runs on, each with its micro-kernel.
pub trait GemmFloat: Float {
    /// `C[mr × nr] = alpha · Σ_p a[p · MR + i] · b[p · NR + j] + beta · C` over `kc` steps, with C at `c` (row
    /// stride `ldc`), `mr ≤ MR`, `nr ≤ NR`; with `beta == 0` C is only written.
    ///
    /// # Safety
    /// `c` must be valid for reads and writes of `mr` rows of `nr` elements at row stride `ldc`, and no other
    /// thread may access them.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        kc: usize,
        a: &[Self],
        b: &[Self],
        c: *mut Self,
        ldc: usize,
        (mr, nr): (usize, usize),
        alpha: Self,
        beta: Self,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { tile_portable(kc, a, b, c, ldc, (mr, nr), alpha, beta) }
    }

    /// Whether [`GemmFloat::tile_direct_a`] reads `a` in place (otherwise A must be packed).
    fn reads_a_in_place(_a: MatRef<'_, Self>) -> bool {
        false
    }

    /// As [`GemmFloat::tile`], with the A micro-panel read in place: rows `i0..i0 + mr` and depth
    /// `pc..pc + kc` of `a`. Only called when [`GemmFloat::reads_a_in_place`] says so.
    ///
    /// # Safety
    /// As for [`GemmFloat::tile`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_direct_a(
        kc: usize,
        a: MatRef<'_, Self>,
        (i0, pc): (usize, usize),
        b: &[Self],
        c: *mut Self,
        ldc: usize,
        (mr, nr): (usize, usize),
        alpha: Self,
        beta: Self,
    ) {
        let mut panel = vec![Self::ZERO; MR * kc];
        pack_a(a, i0, i0 + mr, pc, kc, &mut panel);
        // SAFETY: forwarded from the caller.
        unsafe { Self::tile(kc, &panel, b, c, ldc, (mr, nr), alpha, beta) }
    }

    /// `panel[p · MR + i] = rows[i][p]` for `p < panel.len() / MR`: packs `MR` rows of a row-major A.
    fn interleave_rows(rows: [&[Self]; MR], panel: &mut [Self]) {
        interleave_rows(rows, panel)
    }

    /// Runs `f` with packing buffers of at least `len_a` and `len_b` elements, reused across calls.
    fn with_scratch<R>(
        len_a: usize,
        len_b: usize,
        f: impl FnOnce(&mut [Self], &mut [Self]) -> R,
    ) -> R;
}

/// Alignment of the packing buffers in bytes (a cache line, so a 16-float B micro-panel row is one line).
const ALIGN: usize = 64;

/// Runs `f` with two scratch buffers of at least `len_a` and `len_b` elements from `cell`, each starting on a
/// cache line and kept for the next call on this thread (fresh multi-megabyte buffers would fault their pages
/// in on every product). A nested call on the same thread, which finds the cell borrowed, allocates its own.
fn with_cell_scratch<T: Float, R>(
    cell: &std::cell::RefCell<(Vec<T>, Vec<T>)>,
    len_a: usize,
    len_b: usize,
    f: impl FnOnce(&mut [T], &mut [T]) -> R,
) -> R {
    fn aligned<T: Float>(v: &mut Vec<T>, len: usize) -> &mut [T] {
        let pad = ALIGN / std::mem::size_of::<T>();
        if v.len() < len + pad {
            *v = vec![T::ZERO; len + pad];
        }
        let start = v.as_ptr().align_offset(ALIGN).min(pad);
        &mut v[start..start + len]
    }
    match cell.try_borrow_mut() {
        Ok(mut buffers) => {
            let (a, b) = &mut *buffers;
            f(aligned(a, len_a), aligned(b, len_b))
        }
        Err(_) => {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            f(aligned(&mut a, len_a), aligned(&mut b, len_b))
        }
    }
}

macro_rules! scratch {
    ($t:ty) => {
        fn with_scratch<R>(len_a: usize, len_b: usize, f: impl FnOnce(&mut [$t], &mut [$t]) -> R) -> R {
            thread_local! {
                static SCRATCH: std::cell::RefCell<(Vec<$t>, Vec<$t>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
            }
            SCRATCH.with(|cell| with_cell_scratch(cell, len_a, len_b, f))
        }
    };
}

impl GemmFloat for f64 {
    scratch!(f64);
}

impl GemmFloat for f32 {
    scratch!(f32);

    fn interleave_rows(rows: [&[f32]; MR], panel: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            let kc = panel.len() / MR;
            assert!(rows.iter().all(|r| r.len() >= kc));
            // SAFETY: the features were detected, every row holds kc floats and the panel kc · MR.
            unsafe { avx2::interleave_rows(rows.map(|r| r.as_ptr()), kc, panel.as_mut_ptr()) };
            return;
        }
        interleave_rows(rows, panel)
    }

    fn reads_a_in_place(a: MatRef<'_, f32>) -> bool {
        f32_kernels().is_some() && a.col_stride == 1
    }

    unsafe fn tile_direct_a(
        kc: usize,
        a: MatRef<'_, f32>,
        at: (usize, usize),
        b: &[f32],
        c: *mut f32,
        ldc: usize,
        size: (usize, usize),
        alpha: f32,
        beta: f32,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { f32_tile_direct_a(f32_kernels(), kc, a, at, b, c, ldc, size, alpha, beta) }
    }

    unsafe fn tile(
        kc: usize,
        a: &[f32],
        b: &[f32],
        c: *mut f32,
        ldc: usize,
        size: (usize, usize),
        alpha: f32,
        beta: f32,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { f32_tile(f32_kernels(), kc, a, b, c, ldc, size, alpha, beta) }
    }
}

/// [`GemmFloat::tile_direct_a`] for f32 with the kernel set `kernels` (the portable path with `None`).
///
/// # Safety
/// As for [`GemmFloat::tile`]; `kernels` must be one this CPU runs.
#[allow(clippy::too_many_arguments)]
unsafe fn f32_tile_direct_a(
    kernels: Option<&F32Kernels>,
    kc: usize,
    a: MatRef<'_, f32>,
    (i0, pc): (usize, usize),
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    (mr, nr): (usize, usize),
    alpha: f32,
    beta: f32,
) {
    assert!(kc >= 1 && mr >= 1 && b.len() >= kc * NR);
    // Every element the kernel reads (rows i0..i0+mr, depth pc..pc+kc) lies inside A's data.
    let last = a.offset + (i0 + mr - 1) * a.row_stride + (pc + kc - 1) * a.col_stride;
    assert!(last < a.data.len());
    if let Some(k) = kernels.filter(|_| mr == MR) {
        let start = a.offset + i0 * a.row_stride + pc * a.col_stride;
        let ar = (a.data[start..].as_ptr(), a.row_stride, a.col_stride);
        // SAFETY: the CPU runs the kernels, A holds the MR rows and kc steps read and B the kc rows (checked
        // above), and the caller owns the C tile.
        unsafe { strided_tile(k, kc, ar, b, c, ldc, (mr, nr), alpha, beta) };
        return;
    }
    let mut panel = [0.0f32; MR * KC];
    let panel = &mut panel[..MR * kc];
    pack_a(a, i0, i0 + mr, pc, kc, panel);
    // SAFETY: forwarded from the caller.
    unsafe { f32_tile(kernels, kc, panel, b, c, ldc, (mr, nr), alpha, beta) }
}

/// [`GemmFloat::tile`] for f32 with the kernel set `kernels` (the portable kernel with `None`).
///
/// # Safety
/// As for [`GemmFloat::tile`]; `kernels` must be one this CPU runs.
#[allow(clippy::too_many_arguments)]
unsafe fn f32_tile(
    kernels: Option<&F32Kernels>,
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    (mr, nr): (usize, usize),
    alpha: f32,
    beta: f32,
) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    match kernels {
        // SAFETY: the CPU runs the kernels, the panels hold kc steps, and the caller owns the C tile.
        Some(k) if mr == MR && nr == NR => unsafe {
            (k.full)(kc, a.as_ptr(), b.as_ptr(), c, ldc, alpha, beta)
        },
        // SAFETY: as above.
        Some(k) => unsafe {
            strided_tile(k, kc, (a.as_ptr(), 1, MR), b, c, ldc, (mr, nr), alpha, beta)
        },
        None => {
            // SAFETY: forwarded from the caller.
            unsafe { tile_portable(kc, a, b, c, ldc, (mr, nr), alpha, beta) }
        }
    }
}

/// One tile through the kernel set's strided kernel: straight into C when it is full, through a buffer when
/// it is an edge tile.
///
/// # Safety
/// The CPU must run `k`; `a` must be valid for the reads described by its strides over `kc` steps and `MR`
/// rows, `b` must hold `kc` rows, and the caller must own the C tile.
#[allow(clippy::too_many_arguments)]
unsafe fn strided_tile(
    k: &F32Kernels,
    kc: usize,
    a: (*const f32, usize, usize),
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    (mr, nr): (usize, usize),
    alpha: f32,
    beta: f32,
) {
    let b = b.as_ptr();
    // SAFETY: forwarded from the caller.
    unsafe {
        if mr == MR && nr == NR {
            (k.strided)(kc, a, b, c, ldc, alpha, beta);
        } else {
            let mut acc = [0.0; MR * NR];
            (k.strided)(kc, a, b, acc.as_mut_ptr(), NR, 1.0, 0.0);
            store_tile(&acc, c, ldc, mr, nr, alpha, beta);
        }
    }
}

/// A raw pointer shared by tiles that write disjoint regions (of C, or of the packing buffers).
#[derive(Clone, Copy)]
struct SharedOut<T>(*mut T);
// SAFETY: every tile writes a disjoint rectangle of C, and every packed panel is written by the one thread that
// claimed it (see `Panels`) before any thread reads it.
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    fn ptr(&self) -> *mut T {
        self.0
    }
}

/// The packed micro-panels of one operand for the depth blocks of one phase, packed lazily by whichever thread
/// needs them first. Panel `j` of block `q` lies at `(q · per_block + j) · stride`. Panels are claimed in groups
/// of `group` neighbours (packed together, so the source is read in longer runs): each group's state goes
/// `EMPTY → BUSY` (claimed by one thread, which packs it) `→ READY`. A thread that needs groups claimed by
/// another packs the unclaimed ones meanwhile, so tiles that share panels split the packing.
struct Panels<'a, T> {
    data: SharedOut<T>,
    /// Elements per panel.
    stride: usize,
    /// Panels per depth block.
    per_block: usize,
    /// Panels per group.
    group: usize,
    /// One state per group, `per_block.div_ceil(group)` per depth block.
    state: &'a [AtomicU8],
}

const EMPTY: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;
/// The thread packing the group panicked.
const POISONED: u8 = 3;

impl<T> Panels<'_, T> {
    /// Number of group states needed for `blocks` depth blocks of `per_block` panels.
    fn states(blocks: usize, per_block: usize, group: usize) -> usize {
        blocks * per_block.div_ceil(group)
    }

    /// Makes panels `panels` of block `q` ready, calling `pack(first, count, dst)` for each group this thread
    /// claims (`dst` holds panels `first..first + count` back to back), and returns once the other threads
    /// have packed theirs.
    fn prepare(&self, q: usize, panels: Range<usize>, pack: impl Fn(usize, usize, &mut [T])) {
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
    fn get(&self, q: usize, j: usize) -> &[T] {
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

/// `C = alpha · A · B + beta · C` with `A: [m × k]`, `B: [k × n]` (any strides) and `C: [m × n]` row-major with
/// row stride `ldc`. With `beta == 0` C is only written, never read (so it may hold garbage or NaN).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: GemmFloat>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldc >= n && c.len() >= (m - 1) * ldc + n,
        "gemm: C of {} elements cannot hold [{m} x {n}] with row stride {ldc}",
        c.len()
    );
    if k == 0 {
        scale_c(m, n, beta, c, ldc);
        return;
    }
    if m <= SKINNY_ROWS {
        skinny(m, n, k, alpha, a, b, beta, c, ldc);
        return;
    }
    let parallel = m * n * k >= PARALLEL_WORK;
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let out = SharedOut(c.as_mut_ptr());
    // Small products read A in place when the micro-kernel can (f32 with AVX2, A row- or column-major).
    let direct_a = m * n * k <= DIRECT_A_WORK && T::reads_a_in_place(a);
    let m_panels = m.div_ceil(MR);
    // Depth blocks of (nearly) equal size, at most KC each.
    let kb = k.div_ceil(k.div_ceil(KC));
    let k_blocks = k.div_ceil(kb);
    // Depth blocks per parallel phase: all of them unless the packed operands would pass PACKED_LIMIT elements.
    let phase_blocks =
        (PACKED_LIMIT / ((m_panels * MR + n.min(NC).div_ceil(NR) * NR) * kb)).clamp(1, k_blocks);
    let b_panels_max = NC.min(n).div_ceil(NR);
    let (a_stride, b_stride) = (MR * kb, NR * kb);
    T::with_scratch(
        phase_blocks * m_panels * a_stride,
        phase_blocks * b_panels_max * b_stride,
        |packed_a, packed_b| {
            let mut state: Vec<AtomicU8> = Vec::new();
            for jc in (0..n).step_by(NC) {
                let nc = NC.min(n - jc);
                let b_panels = nc.div_ceil(NR);
                let (mc, nt) = tile_sizes(m, nc, threads);
                let (tiles_m, tiles_n) = (m.div_ceil(mc), nc.div_ceil(nt));
                for q0 in (0..k_blocks).step_by(phase_blocks) {
                    // Depth blocks q0.. of this phase; panel `(q - q0) · panels + p` holds panel p of block q.
                    let blocks = phase_blocks.min(k_blocks - q0);
                    let states_a = Panels::<T>::states(blocks, m_panels, GROUP);
                    state.clear();
                    state.resize_with(
                        states_a + Panels::<T>::states(blocks, b_panels, GROUP),
                        || AtomicU8::new(EMPTY),
                    );
                    let (state_a, state_b) = state.split_at(states_a);
                    let pa = Panels {
                        data: SharedOut(packed_a.as_mut_ptr()),
                        stride: a_stride,
                        per_block: m_panels,
                        group: GROUP,
                        state: state_a,
                    };
                    let pb = Panels {
                        data: SharedOut(packed_b.as_mut_ptr()),
                        stride: b_stride,
                        per_block: b_panels,
                        group: GROUP,
                        state: state_b,
                    };
                    // Tiles go column tile by column tile, so threads starting apart pack different B panels.
                    let run_tile = |t: usize| {
                        let (tj, ti) = (t / tiles_m, t % tiles_m);
                        let rows = ti * mc..(ti * mc + mc).min(m);
                        let cols = tj * nt..(tj * nt + nt).min(nc);
                        for q in 0..blocks {
                            let pc = (q0 + q) * kb;
                            let kc = kb.min(k - pc);
                            if !direct_a {
                                let a_panels = rows.start / MR..rows.end.div_ceil(MR);
                                pa.prepare(q, a_panels, |first, count, dst| {
                                    for (i, panel) in
                                        dst.chunks_exact_mut(a_stride).take(count).enumerate()
                                    {
                                        pack_a(a, (first + i) * MR, m, pc, kc, panel);
                                    }
                                });
                            }
                            let b_panels = cols.start / NR..cols.end.div_ceil(NR);
                            pb.prepare(q, b_panels, |first, count, dst| {
                                pack_b(b, pc, kc, jc + first * NR, jc + nc, count, dst, b_stride);
                            });
                            let b_panel = |j0: usize| &pb.get(q, j0 / NR)[..NR * kc];
                            let beta_now = if pc == 0 { beta } else { T::ONE };
                            for i0 in rows.clone().step_by(MR) {
                                let mr = MR.min(m - i0);
                                for j0 in cols.clone().step_by(NR) {
                                    let nr = NR.min(cols.end - j0);
                                    let size = (mr, nr);
                                    // SAFETY: rows i0..i0+mr and columns jc+j0..jc+j0+nr of C belong to this
                                    // tile only, and lie inside C (checked by the assert at the top); read in
                                    // place, A holds rows i0..i0+mr and depth pc..pc+kc.
                                    unsafe {
                                        let c = out.ptr().add(i0 * ldc + jc + j0);
                                        if direct_a {
                                            let at = (i0, pc);
                                            let bp = b_panel(j0);
                                            T::tile_direct_a(
                                                kc, a, at, bp, c, ldc, size, alpha, beta_now,
                                            )
                                        } else {
                                            let ap = &pa.get(q, i0 / MR)[..MR * kc];
                                            let bp = b_panel(j0);
                                            T::tile(kc, ap, bp, c, ldc, size, alpha, beta_now)
                                        }
                                    };
                                }
                            }
                        }
                    };
                    run_tasks(tiles_m * tiles_n, threads, &run_tile);
                }
            }
        },
    )
}

/// Tile sizes (`mc` rows, a multiple of `MR`; `nt` columns, a multiple of `NR`) for `m` rows and `nc` columns on
/// `threads` threads: at most `MC × NT`, and small enough that every thread gets about six tiles, so that small
/// products keep all cores busy and the last tiles do not leave one idle. The rows and columns are split into
/// near-equal tiles.
fn tile_sizes(m: usize, nc: usize, threads: usize) -> (usize, usize) {
    let (mut tiles_m, mut tiles_n) = (m.div_ceil(MC), nc.div_ceil(NT));
    let rows_of = |t: usize| m.div_ceil(t).div_ceil(MR) * MR;
    let cols_of = |t: usize| nc.div_ceil(t).div_ceil(NR) * NR;
    let target = if threads > 1 { 6 * threads } else { 1 };
    while tiles_m * tiles_n < target {
        let (rows, cols) = (rows_of(tiles_m), cols_of(tiles_n));
        if cols > 4 * NR && cols >= rows {
            tiles_n += 1;
        } else if rows > 4 * MR {
            tiles_m += 1;
        } else {
            break;
        }
    }
    (rows_of(tiles_m), cols_of(tiles_n))
}

/// Products with at most this many rows (one token at a time in generation) skip packing: packing B would
/// read and write all of it once more, doubling the memory traffic of what is a matrix-vector product.
const SKINNY_ROWS: usize = 4;

/// `C = alpha · A · B + beta · C` for few rows: dot products along B's columns when they are contiguous (a
/// transposed weight), otherwise rows of B accumulated in order. Parallel over column blocks.
#[allow(clippy::too_many_arguments)]
fn skinny<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    const COLUMNS: usize = 64;
    for i in 0..m {
        let row: Vec<T> = (0..k).map(|p| a.at(i, p)).collect();
        let out = &mut c[i * ldc..i * ldc + n];
        let block = |(jb, out): (usize, &mut [T])| {
            let j0 = jb * COLUMNS;
            if b.row_stride == 1 {
                for (jj, o) in out.iter_mut().enumerate() {
                    let start = b.offset + (j0 + jj) * b.col_stride;
                    let v = alpha * super::dot(&row, &b.data[start..start + k]);
                    *o = if beta == T::ZERO { v } else { v + beta * *o };
                }
            } else {
                let mut acc = vec![T::ZERO; out.len()];
                for (p, &x) in row.iter().enumerate() {
                    for (jj, acc) in acc.iter_mut().enumerate() {
                        *acc += x * b.at(p, j0 + jj);
                    }
                }
                for (o, v) in out.iter_mut().zip(acc) {
                    *o = if beta == T::ZERO {
                        alpha * v
                    } else {
                        alpha * v + beta * *o
                    };
                }
            }
        };
        if n * k >= PARALLEL_WORK {
            out.par_chunks_mut(COLUMNS).enumerate().for_each(block);
        } else {
            out.chunks_mut(COLUMNS).enumerate().for_each(block);
        }
    }
}

fn scale_c<T: Float>(m: usize, n: usize, beta: T, c: &mut [T], ldc: usize) {
    for i in 0..m {
        for v in &mut c[i * ldc..i * ldc + n] {
            *v = if beta == T::ZERO { T::ZERO } else { beta * *v };
        }
    }
}

/// The textbook triple loop, the reference the packed GEMM is tested against.
#[allow(clippy::too_many_arguments)]
pub fn gemm_reference<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = T::ZERO;
            for p in 0..k {
                s += a.at(i, p) * b.at(p, j);
            }
            let old = if beta == T::ZERO {
                T::ZERO
            } else {
                beta * c[i * ldc + j]
            };
            c[i * ldc + j] = alpha * s + old;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm_kernel::f32_kernel_sets;
    use super::*;
    use crate::rng::Rng;

    fn check(m: usize, n: usize, k: usize, transpose_a: bool, transpose_b: bool, beta: f32) {
        let mut rng = Rng::new((m * 31 + n * 7 + k) as u64);
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
        let c0: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
        let (ars, acs) = if transpose_a { (1, m) } else { (k, 1) };
        let (brs, bcs) = if transpose_b { (1, k) } else { (n, 1) };
        let av = MatRef {
            data: &a,
            offset: 0,
            row_stride: ars,
            col_stride: acs,
        };
        let bv = MatRef {
            data: &b,
            offset: 0,
            row_stride: brs,
            col_stride: bcs,
        };
        let mut fast = c0.clone();
        let mut slow = c0.clone();
        gemm(m, n, k, 0.5, av, bv, beta, &mut fast, n);
        gemm_reference(m, n, k, 0.5, av, bv, beta, &mut slow, n);
        for (x, y) in fast.iter().zip(&slow) {
            // f32 sums of k products in a different order: error grows like sqrt(k) · eps · |terms|.
            assert!(
                (x - y).abs() <= 1e-4 * (k as f32).sqrt() * (1.0 + y.abs()),
                "{m}x{n}x{k}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn packed_gemm_matches_reference_on_odd_shapes_and_strides() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 17, 5),
            (13, 33, 300),
            (100, 70, 513),
            (6, 16, 256),
            (97, 300, 40),
        ] {
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                check(m, n, k, ta, tb, 0.0);
                check(m, n, k, ta, tb, 1.5);
            }
        }
    }

    #[test]
    fn packed_gemm_matches_reference_on_long_depth_and_wide_products() {
        // Depth split into uneven blocks (513 = 3 × 171), several packing phases (the packed operands of
        // 2100 rows pass the per-phase limit), partial panel groups, and B wider than one column block.
        for &(m, n, k) in &[
            (64, 72, 513),
            (300, 90, 1100),
            (2100, 20, 2100),
            (7, NC + 70, 3),
        ] {
            check(m, n, k, false, false, 0.0);
            check(m, n, k, true, false, 1.5);
            check(m, n, k, false, true, -1.0);
        }
    }

    #[test]
    fn packed_gemm_accumulates_into_strided_c_and_never_reads_c_with_beta_zero() {
        let (m, n, k, ldc) = (50, 70, 600, 83);
        let mut rng = Rng::new(9);
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
        let view = |data, row_stride, col_stride| MatRef {
            data,
            offset: 0,
            row_stride,
            col_stride,
        };
        let (av, bv) = (view(&a, k, 1), view(&b, n, 1));
        // beta = 0 over C full of NaN: every element in the product is overwritten, the gaps keep their NaN.
        let mut c = vec![f32::NAN; m * ldc];
        gemm(m, n, k, 1.0, av, bv, 0.0, &mut c, ldc);
        let mut want = vec![0.0; m * ldc];
        gemm_reference(m, n, k, 1.0, av, bv, 0.0, &mut want, ldc);
        for i in 0..m {
            for j in 0..ldc {
                let (x, y) = (c[i * ldc + j], want[i * ldc + j]);
                if j < n {
                    assert!(
                        (x - y).abs() <= 1e-3 * (1.0 + y.abs()),
                        "({i}, {j}): {x} vs {y}"
                    );
                } else {
                    assert!(x.is_nan(), "({i}, {j}) outside the product was written");
                }
            }
        }
        // Accumulating twice more with beta = 1: C = 3 · A · B.
        gemm(m, n, k, 2.0, av, bv, 1.0, &mut c, ldc);
        for i in 0..m {
            for j in 0..n {
                let (x, y) = (c[i * ldc + j], 3.0 * want[i * ldc + j]);
                assert!(
                    (x - y).abs() <= 3e-3 * (1.0 + y.abs()),
                    "({i}, {j}): {x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn f64_gemm_matches_reference() {
        let (m, n, k) = (37, 45, 300);
        let mut rng = Rng::new(5);
        let a: Vec<f64> = (0..m * k).map(|_| rng.normal()).collect();
        let b: Vec<f64> = (0..k * n).map(|_| rng.normal()).collect();
        let c0: Vec<f64> = (0..m * n).map(|_| rng.normal()).collect();
        let av = MatRef {
            data: &a,
            offset: 0,
            row_stride: 1,
            col_stride: m,
        };
        let bv = MatRef {
            data: &b,
            offset: 0,
            row_stride: n,
            col_stride: 1,
        };
        let (mut fast, mut slow) = (c0.clone(), c0);
        gemm(m, n, k, 0.5, av, bv, 2.0, &mut fast, n);
        gemm_reference(m, n, k, 0.5, av, bv, 2.0, &mut slow, n);
        for (x, y) in fast.iter().zip(&slow) {
            assert!((x - y).abs() <= 1e-10 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn f32_tile_reading_a_in_place_matches_packed_tile() {
        // Row-major A with an offset and a row stride wider than the depth; full and edge tiles, beta = 0 over
        // NaN and accumulation.
        let mut rng = Rng::new(8);
        let (kc, pc, lda, ldc) = (37, 5, 50, 21);
        let a: Vec<f32> = (0..3 + 2 * MR * lda).map(|_| rng.normal() as f32).collect();
        let av = MatRef {
            data: &a,
            offset: 3,
            row_stride: lda,
            col_stride: 1,
        };
        let b: Vec<f32> = (0..kc * NR).map(|_| rng.normal() as f32).collect();
        assert!(f32::reads_a_in_place(av) || !cfg!(target_arch = "x86_64"));
        // Every kernel set this CPU runs, and the portable path.
        let sets = f32_kernel_sets().into_iter().map(Some).chain([None]);
        for (set, &(i0, mr, nr)) in sets.flat_map(|s| {
            [(0, MR, NR), (MR, MR, 5), (2, 3, NR), (7, 1, 1)]
                .iter()
                .map(move |t| (s, t))
        }) {
            let mut panel = vec![0.0; MR * kc];
            pack_a(av, i0, i0 + mr, pc, kc, &mut panel);
            for &(beta, fill) in &[(0.0, f32::NAN), (1.0, 0.25), (-0.5, 2.0)] {
                let (mut direct, mut packed) = (vec![fill; MR * ldc], vec![fill; MR * ldc]);
                unsafe {
                    let c = direct.as_mut_ptr();
                    f32_tile_direct_a(set, kc, av, (i0, pc), &b, c, ldc, (mr, nr), 0.5, beta);
                    let c = packed.as_mut_ptr();
                    f32_tile(set, kc, &panel, &b, c, ldc, (mr, nr), 0.5, beta);
                }
                for (idx, (x, y)) in direct.iter().zip(&packed).enumerate() {
                    let same =
                        (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-4 * (1.0 + y.abs());
                    assert!(
                        same,
                        "{}: rows {i0}+{mr}, {nr} cols, beta {beta}, at {idx}: {x} vs {y}",
                        set.map_or("portable", |k| k.name)
                    );
                }
                let inside = |idx: usize| idx / ldc < mr && idx % ldc < nr;
                if fill.is_nan() {
                    // With beta = 0 the tile is written, never read; nothing outside it is touched.
                    assert!(direct
                        .iter()
                        .enumerate()
                        .all(|(i, v)| inside(i) != v.is_nan()));
                }
            }
        }
    }

    #[test]
    fn f32_interleave_rows_matches_portable() {
        let mut rng = Rng::new(4);
        for kc in [1, 7, 8, 9, 16, 37] {
            let rows: Vec<Vec<f32>> = (0..MR)
                .map(|_| (0..kc + 3).map(|_| rng.normal() as f32).collect())
                .collect();
            let views: [&[f32]; MR] = std::array::from_fn(|i| &rows[i][..kc]);
            let (mut fast, mut slow) = (vec![0.0; kc * MR + 5], vec![0.0; kc * MR + 5]);
            f32::interleave_rows(views, &mut fast[..kc * MR]);
            interleave_rows(views, &mut slow[..kc * MR]);
            assert_eq!(fast, slow, "kc {kc}");
        }
    }

    #[test]
    fn f32_tile_matches_portable_kernel() {
        let mut rng = Rng::new(3);
        let (kc, ldc) = (37, 21);
        let a: Vec<f32> = (0..kc * MR).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..kc * NR).map(|_| rng.normal() as f32).collect();
        let c0: Vec<f32> = (0..MR * ldc).map(|_| rng.normal() as f32).collect();
        let mut acc = [0.0; MR * NR];
        portable_kernel(kc, &a, &b, &mut acc);
        // Full tiles (written from registers) and edge tiles, overwriting and accumulating.
        let sets = f32_kernel_sets();
        assert!(!sets.is_empty() || !std::is_x86_feature_detected!("avx2"));
        for (set, &(mr, nr)) in sets.iter().flat_map(|s| {
            [(MR, NR), (MR, 5), (2, NR), (1, 1)]
                .iter()
                .map(move |t| (*s, t))
        }) {
            for &beta in &[0.0, 1.0, -0.5] {
                let mut c = c0.clone();
                unsafe {
                    f32_tile(
                        Some(set),
                        kc,
                        &a,
                        &b,
                        c.as_mut_ptr(),
                        ldc,
                        (mr, nr),
                        0.5,
                        beta,
                    )
                };
                for i in 0..MR {
                    for j in 0..ldc {
                        let (x, old) = (c[i * ldc + j], c0[i * ldc + j]);
                        let want = if i < mr && j < nr {
                            0.5 * acc[i * NR + j] + beta * old
                        } else {
                            old
                        };
                        assert!(
                            (x - want).abs() < 1e-4,
                            "{}: {mr}x{nr} beta {beta}: {x} vs {want}",
                            set.name
                        );
                    }
                }
            }
        }
    }
}
