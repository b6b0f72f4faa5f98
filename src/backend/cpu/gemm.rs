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
//! The driver (`drive`) is generic over a packing format (`Packing`: the packed element, the panel width `NR`,
//! the packing routines and the micro-kernel). `Plain` is the element type's own: the micro-kernels and the
//! packing routines in `gemm_kernel` — the AVX2 + FMA micro-kernel (6 × 16) when the CPU has it (runtime
//! detection), a portable one otherwise; f64 uses the portable one. On CPUs with AVX-512 f32 products of more
//! than `SKINNY_ROWS` rows use the wide format of `gemm_avx512` (6 × 32), and inside
//! `gemm_bf16::with_products_in_bf16` the bf16 pairs of `gemm_bf16` (6 × 32, `vdpbf16ps`).

#[cfg(target_arch = "x86_64")]
use super::gemm_avx512::Wide;
pub use super::gemm_format::{Packing, Plain, Product};
#[cfg(target_arch = "x86_64")]
use super::gemm_kernel::avx2;
pub use super::gemm_kernel::portable_kernel;
use super::gemm_kernel::{f32_kernels, interleave_rows, pack_a, pack_b, store_tile, F32Kernels};
use super::gemm_panels::{Panels, SharedOut, EMPTY};
use super::parallel::run_tasks;
use crate::dtype::Float;
use rayon::prelude::*;
use std::sync::atomic::AtomicU8;

/// Rows of A per micro-panel.
pub const MR: usize = 6;
/// Columns of B per micro-panel.
pub const NR: usize = 16;
/// Depth of one packed block.
pub(super) const KC: usize = 512;
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
pub trait GemmFloat: Float + Default {
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

    /// Computes `C = alpha · A · B + beta · C` for `k ≥ 1` (see [`gemm`]); f32 turns to bf16 panels inside
    /// `gemm_bf16::with_products_in_bf16`.
    fn multiply(p: Product<'_, Self>, c: &mut [Self], ldc: usize) {
        in_plain_panels(p, c, ldc)
    }

    /// Packs B panels as [`pack_b`] does.
    #[allow(clippy::too_many_arguments)]
    fn pack_b(
        b: MatRef<'_, Self>,
        pc: usize,
        kc: usize,
        j0: usize,
        n: usize,
        count: usize,
        panels: &mut [Self],
        stride: usize,
    ) {
        pack_b(b, pc, kc, j0, n, count, panels, stride)
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
pub(super) fn with_cell_scratch<T: Copy + Default, R>(
    cell: &std::cell::RefCell<(Vec<T>, Vec<T>)>,
    len_a: usize,
    len_b: usize,
    f: impl FnOnce(&mut [T], &mut [T]) -> R,
) -> R {
    fn aligned<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
        let pad = ALIGN / std::mem::size_of::<T>();
        if v.len() < len + pad {
            *v = vec![T::default(); len + pad];
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

    fn multiply(p: Product<'_, f32>, c: &mut [f32], ldc: usize) {
        if super::gemm_bf16::products_in_bf16() {
            drive(&super::gemm_bf16::Bf16Pairs::new(true), p, c, ldc);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if p.m > SKINNY_ROWS && Wide::available() {
            drive(&Wide, p, c, ldc);
            return;
        }
        in_plain_panels(p, c, ldc)
    }

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

    fn pack_b(
        b: MatRef<'_, f32>,
        pc: usize,
        kc: usize,
        j0: usize,
        n: usize,
        count: usize,
        panels: &mut [f32],
        stride: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() && b.row_stride == 1 && b.col_stride != 1 {
            // B transposed (a weight read as Wᵀ): full panels through the SIMD transpose.
            for g in 0..count {
                let j = j0 + g * NR;
                let panel = &mut panels[g * stride..];
                if j + NR > n {
                    pack_b(b, pc, kc, j, n, 1, panel, stride);
                    continue;
                }
                let first = b.offset + j * b.col_stride + pc;
                assert!(
                    first + (NR - 1) * b.col_stride + kc <= b.data.len() && panel.len() >= kc * NR
                );
                let cols = std::array::from_fn(|c| b.data[first + c * b.col_stride..].as_ptr());
                // SAFETY: the features were detected, every column holds kc floats from `first` (checked
                // above) and the panel kc · NR.
                unsafe { avx2::interleave_columns(cols, kc, panel.as_mut_ptr(), NR) };
            }
            return;
        }
        pack_b(b, pc, kc, j0, n, count, panels, stride)
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
    assert!(b.len() >= kc * NR);
    let ar = a_in_place(a, (i0, pc), mr, kc);
    if let Some(k) = kernels.filter(|_| mr == MR) {
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

/// Rows `i0..i0 + mr` and depth `pc..pc + kc` of A for a micro-kernel reading it in place: its first element
/// with the row and column strides, after checking that every element read lies inside A's data.
pub(super) fn a_in_place(
    a: MatRef<'_, f32>,
    (i0, pc): (usize, usize),
    mr: usize,
    kc: usize,
) -> (*const f32, usize, usize) {
    assert!(kc >= 1 && mr >= 1);
    let last = a.offset + (i0 + mr - 1) * a.row_stride + (pc + kc - 1) * a.col_stride;
    assert!(last < a.data.len());
    let start = a.offset + i0 * a.row_stride + pc * a.col_stride;
    (a.data[start..].as_ptr(), a.row_stride, a.col_stride)
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
    let p = Product {
        m,
        n,
        k,
        alpha,
        a,
        b,
        beta,
    };
    if has_products(&p, c, ldc) {
        T::multiply(p, c, ldc);
    }
}

/// Checks that C holds the `[m × n]` product at row stride `ldc` and does the work of an empty one (nothing,
/// or `C = beta · C` when `k = 0`); whether products are left to compute.
fn has_products<T: Float>(p: &Product<'_, T>, c: &mut [T], ldc: usize) -> bool {
    if p.m == 0 || p.n == 0 {
        return false;
    }
    check_c("gemm", p.m, p.n, c.len(), ldc);
    if p.k == 0 {
        scale_c(p.m, p.n, p.beta, c, ldc);
        return false;
    }
    true
}

/// The product in the element type's own precision: few rows through [`skinny`], the rest packed.
fn in_plain_panels<T: GemmFloat>(p: Product<'_, T>, c: &mut [T], ldc: usize) {
    if p.m <= SKINNY_ROWS {
        skinny(p.m, p.n, p.k, p.alpha, p.a, p.b, p.beta, c, ldc);
    } else {
        drive(&Plain, p, c, ldc);
    }
}

/// The packed, tiled, parallel product (see the module's header) with `format`'s panels and kernels, into C
/// (`[m × n]` at row stride `ldc`, checked here). `format` must be one this CPU runs.
pub(super) fn drive<T: Float, P: Packing<T>>(
    format: &P,
    p: Product<'_, T>,
    c: &mut [T],
    ldc: usize,
) {
    let Product {
        m,
        n,
        k,
        alpha,
        a,
        b,
        beta,
    } = p;
    if !has_products(&p, c, ldc) {
        return;
    }
    let nr_max = P::NR;
    let parallel = m * n * k >= PARALLEL_WORK;
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let out = SharedOut(c.as_mut_ptr());
    // Small products read A in place when the micro-kernel can (f32 with a SIMD kernel set, A row-major); then
    // A has no packed panels.
    let direct_a = m * n * k <= DIRECT_A_WORK && format.reads_a_in_place(a);
    let m_panels = m.div_ceil(MR);
    let packed_a_panels = if direct_a { 0 } else { m_panels };
    // Depth blocks of (nearly) equal size, at most KC each.
    let kb = k.div_ceil(k.div_ceil(KC));
    let k_blocks = k.div_ceil(kb);
    let depth = format.depth(kb);
    // Depth blocks per parallel phase: all of them unless the packed operands would pass PACKED_LIMIT elements.
    let phase_blocks = (PACKED_LIMIT
        / ((packed_a_panels * MR + n.min(NC).div_ceil(nr_max) * nr_max) * depth))
        .clamp(1, k_blocks);
    let b_panels_max = NC.min(n).div_ceil(nr_max);
    let (a_stride, b_stride) = (MR * depth, nr_max * depth);
    format.with_scratch(
        phase_blocks * packed_a_panels * a_stride,
        phase_blocks * b_panels_max * b_stride,
        |packed_a, packed_b| {
            let mut state: Vec<AtomicU8> = Vec::new();
            for jc in (0..n).step_by(NC) {
                let nc = NC.min(n - jc);
                let b_panels = nc.div_ceil(nr_max);
                let (mc, nt) = tile_sizes(m, nc, threads, nr_max);
                let (tiles_m, tiles_n) = (m.div_ceil(mc), nc.div_ceil(nt));
                for q0 in (0..k_blocks).step_by(phase_blocks) {
                    // Depth blocks q0.. of this phase; panel `(q - q0) · panels + p` holds panel p of block q.
                    let blocks = phase_blocks.min(k_blocks - q0);
                    let states_a = Panels::<P::Packed>::states(blocks, packed_a_panels, GROUP);
                    state.clear();
                    state.resize_with(
                        states_a + Panels::<P::Packed>::states(blocks, b_panels, GROUP),
                        || AtomicU8::new(EMPTY),
                    );
                    let (state_a, state_b) = state.split_at(states_a);
                    let pa = Panels {
                        data: SharedOut(packed_a.as_mut_ptr()),
                        stride: a_stride,
                        per_block: packed_a_panels,
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
                            let used = format.depth(kc);
                            if !direct_a {
                                let a_panels = rows.start / MR..rows.end.div_ceil(MR);
                                pa.prepare(q, a_panels, |first, count, dst| {
                                    let i0 = first * MR;
                                    format.pack_a(a, i0, m, pc, kc, count, dst, a_stride);
                                });
                            }
                            let b_panels = cols.start / nr_max..cols.end.div_ceil(nr_max);
                            pb.prepare(q, b_panels, |first, count, dst| {
                                let j0 = jc + first * nr_max;
                                format.pack_b(b, pc, kc, j0, jc + nc, count, dst, b_stride);
                            });
                            let b_panel = |j0: usize| &pb.get(q, j0 / nr_max)[..nr_max * used];
                            let beta_now = if pc == 0 { beta } else { T::ONE };
                            for i0 in rows.clone().step_by(MR) {
                                let mr = MR.min(m - i0);
                                for j0 in cols.clone().step_by(nr_max) {
                                    let nr = nr_max.min(cols.end - j0);
                                    let size = (mr, nr);
                                    let bp = b_panel(j0);
                                    // SAFETY: rows i0..i0+mr and columns jc+j0..jc+j0+nr of C belong to this
                                    // tile only, and lie inside C (checked by the caller).
                                    unsafe {
                                        let c = out.ptr().add(i0 * ldc + jc + j0);
                                        if direct_a {
                                            let at = (i0, pc);
                                            format.tile_direct_a(
                                                kc, a, at, bp, c, ldc, size, alpha, beta_now,
                                            )
                                        } else {
                                            let ap = &pa.get(q, i0 / MR)[..MR * used];
                                            format.tile(kc, ap, bp, c, ldc, size, alpha, beta_now)
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

/// Panics unless a C of `len` elements holds `[m × n]` (`m ≥ 1`) at row stride `ldc`.
pub(super) fn check_c(op: &str, m: usize, n: usize, len: usize, ldc: usize) {
    assert!(
        ldc >= n && len > (m - 1) * ldc + n - 1,
        "{op}: C of {len} elements cannot hold [{m} x {n}] with row stride {ldc}"
    );
}

/// Tile sizes (`mc` rows, a multiple of `MR`; `nt` columns, a multiple of `nr`) for `m` rows and `nc` columns on
/// `threads` threads: at most `MC × NT`, and small enough that every thread gets about six tiles, so that small
/// products keep all cores busy and the last tiles do not leave one idle. The rows and columns are split into
/// near-equal tiles.
fn tile_sizes(m: usize, nc: usize, threads: usize, nr: usize) -> (usize, usize) {
    let (mut tiles_m, mut tiles_n) = (m.div_ceil(MC), nc.div_ceil(NT));
    let rows_of = |t: usize| m.div_ceil(t).div_ceil(MR) * MR;
    let cols_of = |t: usize| nc.div_ceil(t).div_ceil(nr) * nr;
    let target = if threads > 1 { 6 * threads } else { 1 };
    while tiles_m * tiles_n < target {
        let (rows, cols) = (rows_of(tiles_m), cols_of(tiles_n));
        if cols > 4 * nr && cols >= rows {
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
#[path = "gemm_tests.rs"]
mod tests;
