//! The GEMM's packing formats: what its driver (`gemm::drive`) needs of one kind of product — the packed
//! element, the panel width, the packing routines and the micro-kernel (`Packing`) — and `Plain`, the element
//! type's own format (`GemmFloat`'s panels and kernels). The wide AVX-512 format is in `gemm_avx512`, the bf16
//! pairs in `gemm_bf16`.

use super::gemm::{GemmFloat, MatRef, MR, NR};
use super::gemm_kernel::pack_a;
use crate::dtype::Float;

/// The operands of one product `alpha · A · B + beta · C` with `A: [m × k]` and `B: [k × n]`.
#[derive(Clone, Copy)]
pub struct Product<'a, T> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: T,
    pub a: MatRef<'a, T>,
    pub b: MatRef<'a, T>,
    pub beta: T,
}

/// How the driver packs and multiplies one kind of product: panels of `Packed` elements, `MR` rows of A by
/// `NR` columns of B, `depth(kc)` packed steps for a depth block of `kc`.
pub trait Packing<T: Float>: Sync {
    type Packed: Copy + Default + Send + Sync;
    /// Columns of B per micro-panel (a multiple of 16 that divides `NT`).
    const NR: usize;

    /// Packed steps along the depth for `kc` steps of it.
    fn depth(&self, kc: usize) -> usize {
        kc
    }

    /// Runs `f` with packing buffers of at least `len_a` and `len_b` elements, reused across calls.
    fn with_scratch<R>(
        &self,
        len_a: usize,
        len_b: usize,
        f: impl FnOnce(&mut [Self::Packed], &mut [Self::Packed]) -> R,
    ) -> R;

    /// Packs rows `i0..i0 + count · MR` (zero past `m`) and depth `pc..pc + kc` of A as `count` micro-panels
    /// `stride` elements apart.
    #[allow(clippy::too_many_arguments)]
    fn pack_a(
        &self,
        a: MatRef<'_, T>,
        i0: usize,
        m: usize,
        pc: usize,
        kc: usize,
        count: usize,
        panels: &mut [Self::Packed],
        stride: usize,
    );

    /// Packs columns `j0..j0 + count · NR` (zero past `n`) and depth `pc..pc + kc` of B as `count` micro-panels
    /// `stride` elements apart.
    #[allow(clippy::too_many_arguments)]
    fn pack_b(
        &self,
        b: MatRef<'_, T>,
        pc: usize,
        kc: usize,
        j0: usize,
        n: usize,
        count: usize,
        panels: &mut [Self::Packed],
        stride: usize,
    );

    /// Whether [`Packing::tile_direct_a`] reads `a` in place (otherwise A is packed).
    fn reads_a_in_place(&self, _a: MatRef<'_, T>) -> bool {
        false
    }

    /// `C[mr × nr] = alpha · A · B + beta · C` over the `kc` depth steps of the packed panels `a` and `b`, with
    /// C at `c` (row stride `ldc`), `mr ≤ MR`, `nr ≤ NR`; with `beta == 0` C is only written.
    ///
    /// # Safety
    /// `c` must be valid for reads and writes of `mr` rows of `nr` elements at row stride `ldc`, and no other
    /// thread may access them.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        &self,
        kc: usize,
        a: &[Self::Packed],
        b: &[Self::Packed],
        c: *mut T,
        ldc: usize,
        size: (usize, usize),
        alpha: T,
        beta: T,
    );

    /// As [`Packing::tile`], with A's rows `i0..i0 + mr` and depth `pc..pc + kc` read from `a` (packed here
    /// unless [`Packing::reads_a_in_place`]).
    ///
    /// # Safety
    /// As for [`Packing::tile`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_direct_a(
        &self,
        kc: usize,
        a: MatRef<'_, T>,
        (i0, pc): (usize, usize),
        b: &[Self::Packed],
        c: *mut T,
        ldc: usize,
        size: (usize, usize),
        alpha: T,
        beta: T,
    ) {
        let len = MR * self.depth(kc);
        let mut panel = vec![Self::Packed::default(); len];
        self.pack_a(a, i0, i0 + size.0, pc, kc, 1, &mut panel, len);
        // SAFETY: forwarded from the caller.
        unsafe { self.tile(kc, &panel, b, c, ldc, size, alpha, beta) }
    }
}

/// The element type's own panels and micro-kernels ([`GemmFloat`]).
pub struct Plain;

impl<T: GemmFloat> Packing<T> for Plain {
    type Packed = T;
    const NR: usize = NR;

    fn with_scratch<R>(
        &self,
        len_a: usize,
        len_b: usize,
        f: impl FnOnce(&mut [T], &mut [T]) -> R,
    ) -> R {
        T::with_scratch(len_a, len_b, f)
    }

    fn pack_a(
        &self,
        a: MatRef<'_, T>,
        i0: usize,
        m: usize,
        pc: usize,
        kc: usize,
        count: usize,
        panels: &mut [T],
        stride: usize,
    ) {
        for (g, panel) in panels.chunks_mut(stride).take(count).enumerate() {
            pack_a(a, i0 + g * MR, m, pc, kc, panel);
        }
    }

    fn pack_b(
        &self,
        b: MatRef<'_, T>,
        pc: usize,
        kc: usize,
        j0: usize,
        n: usize,
        count: usize,
        panels: &mut [T],
        stride: usize,
    ) {
        T::pack_b(b, pc, kc, j0, n, count, panels, stride)
    }

    fn reads_a_in_place(&self, a: MatRef<'_, T>) -> bool {
        T::reads_a_in_place(a)
    }

    unsafe fn tile(
        &self,
        kc: usize,
        a: &[T],
        b: &[T],
        c: *mut T,
        ldc: usize,
        size: (usize, usize),
        alpha: T,
        beta: T,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { T::tile(kc, a, b, c, ldc, size, alpha, beta) }
    }

    unsafe fn tile_direct_a(
        &self,
        kc: usize,
        a: MatRef<'_, T>,
        at: (usize, usize),
        b: &[T],
        c: *mut T,
        ldc: usize,
        size: (usize, usize),
        alpha: T,
        beta: T,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { T::tile_direct_a(kc, a, at, b, c, ldc, size, alpha, beta) }
    }
}
