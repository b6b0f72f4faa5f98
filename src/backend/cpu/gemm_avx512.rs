//! The f32 GEMM of CPUs with AVX-512: the wide packing format (`Wide`, 6 × 32 tiles, twelve zmm accumulators)
//! of the GEMM's driver. Where 512-bit FMAs run on two full-width pipes (the Zen 5 generation, server Intel
//! cores) twelve independent accumulators keep both busy; where they run as two 256-bit halves (Zen 4) the
//! tile issues fewer instructions per multiply-add than the AVX2 kernel. Every element of C is one chain of
//! FMAs in depth order, as in the AVX2 kernel: the same bits on every path.

use super::gemm::{a_in_place, GemmFloat, MatRef, Packing, MR, NR};
use super::gemm_format::Plain;
use super::gemm_kernel::{avx2, pack_a};
use std::arch::x86_64::*;

/// Whether this CPU runs these kernels.
#[inline]
pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// Columns of B per micro-panel of the wide format.
pub const WIDE: usize = 32;

/// The f32 packing format of CPUs with full-width AVX-512 FMA units: 6 × 32 tiles, twelve zmm accumulators.
/// A's micro-panels are the 6-row panels of the other f32 kernels; B's hold 32 columns (`[kc][32]`). Each depth
/// step issues two loads of B, six broadcasts of A and twelve FMAs, enough independent FMAs to cover their
/// latency on two 512-bit pipes (six accumulators cover at most three quarters of it). Every element of C
/// sums its products in the same order, with the same roundings, as the 6 × 16 kernels: the same bits.
pub struct Wide;

impl Wide {
    /// Whether this CPU runs the wide kernels (within the `TAPEGRAD_SIMD` cap).
    pub fn available() -> bool {
        super::simd::level() == super::simd::Level::Avx512 && available()
    }
}

impl Packing<f32> for Wide {
    type Packed = f32;
    const NR: usize = WIDE;

    fn with_scratch<R>(
        &self,
        len_a: usize,
        len_b: usize,
        f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
    ) -> R {
        <f32 as GemmFloat>::with_scratch(len_a, len_b, f)
    }

    fn pack_a(
        &self,
        a: MatRef<'_, f32>,
        i0: usize,
        m: usize,
        pc: usize,
        kc: usize,
        count: usize,
        panels: &mut [f32],
        stride: usize,
    ) {
        // A's panels are the plain format's.
        Packing::<f32>::pack_a(&Plain, a, i0, m, pc, kc, count, panels, stride)
    }

    fn pack_b(
        &self,
        b: MatRef<'_, f32>,
        pc: usize,
        kc: usize,
        j0: usize,
        n: usize,
        count: usize,
        panels: &mut [f32],
        stride: usize,
    ) {
        for g in 0..count {
            pack_b_wide(
                b,
                pc,
                kc,
                j0 + g * WIDE,
                n,
                &mut panels[g * stride..][..kc * WIDE],
            );
        }
    }

    fn reads_a_in_place(&self, a: MatRef<'_, f32>) -> bool {
        a.col_stride == 1
    }

    unsafe fn tile(
        &self,
        kc: usize,
        a: &[f32],
        b: &[f32],
        c: *mut f32,
        ldc: usize,
        size: (usize, usize),
        alpha: f32,
        beta: f32,
    ) {
        assert!(a.len() >= kc * MR && b.len() >= kc * WIDE);
        // SAFETY: `Wide` is only used where the CPU runs its kernels, the panels hold kc steps (checked above)
        // and the caller owns the C tile.
        unsafe {
            wide_tile(
                kc,
                (a.as_ptr(), 1, MR),
                b.as_ptr(),
                c,
                ldc,
                size,
                alpha,
                beta,
            )
        }
    }

    unsafe fn tile_direct_a(
        &self,
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
        assert!(b.len() >= kc * WIDE);
        let ar = a_in_place(a, (i0, pc), mr, kc);
        if mr < MR {
            let mut panel = [0.0f32; MR * super::gemm::KC];
            let panel = &mut panel[..MR * kc];
            pack_a(a, i0, i0 + mr, pc, kc, panel);
            // SAFETY: forwarded from the caller.
            return unsafe { self.tile(kc, panel, b, c, ldc, (mr, nr), alpha, beta) };
        }
        // SAFETY: as in `tile`, with A holding the MR rows and kc steps read (checked above).
        unsafe { wide_tile(kc, ar, b.as_ptr(), c, ldc, (mr, nr), alpha, beta) }
    }
}

/// Packs columns `j0..j0 + 32` (zero past `n`) and depth `pc..pc + kc` of B as one wide panel `[kc][32]`.
fn pack_b_wide(b: MatRef<'_, f32>, pc: usize, kc: usize, j0: usize, n: usize, panel: &mut [f32]) {
    let cols = WIDE.min(n - j0);
    if b.col_stride == 1 && cols == WIDE {
        // Row-major: each depth step is a run of the 32 columns.
        for (p, dst) in panel.chunks_exact_mut(WIDE).take(kc).enumerate() {
            dst.copy_from_slice(&b.data[b.offset + (pc + p) * b.row_stride + j0..][..WIDE]);
        }
        return;
    }
    if b.row_stride == 1 && b.col_stride != 1 && cols == WIDE && avx2::available() {
        // A weight read as Wᵀ: each column is a run of depth, transposed 16 columns at a time.
        let first = b.offset + j0 * b.col_stride + pc;
        assert!(first + (WIDE - 1) * b.col_stride + kc <= b.data.len() && panel.len() >= kc * WIDE);
        for half in 0..2 {
            let cols =
                std::array::from_fn(|c| b.data[first + (half * NR + c) * b.col_stride..].as_ptr());
            // SAFETY: the features were detected, every column holds kc floats from `first` (checked above)
            // and the panel kc rows of 32 floats, of which this half writes 16.
            unsafe { avx2::interleave_columns(cols, kc, panel[half * NR..].as_mut_ptr(), WIDE) };
        }
        return;
    }
    for (p, dst) in panel.chunks_exact_mut(WIDE).take(kc).enumerate() {
        for (j, d) in dst.iter_mut().enumerate() {
            *d = if j < cols { b.at(pc + p, j0 + j) } else { 0.0 };
        }
    }
}

/// One 6 × 32 tile: straight into C when it is full, through a buffer when it is an edge tile.
///
/// # Safety
/// The CPU must run AVX-512F; `a` must be valid for reads at `p · a_step + i · a_row` for `p < kc`, `i < 6`,
/// `b` for `kc · 32` floats, and the caller must own the C tile.
#[allow(clippy::too_many_arguments)]
unsafe fn wide_tile(
    kc: usize,
    a: (*const f32, usize, usize),
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    (mr, nr): (usize, usize),
    alpha: f32,
    beta: f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if mr == MR && nr == WIDE {
            kernel_6x32(kc, a, b, c, ldc, alpha, beta);
            return;
        }
        let mut acc = [0.0f32; MR * WIDE];
        kernel_6x32(kc, a, b, acc.as_mut_ptr(), WIDE, 1.0, 0.0);
        // Columns that the 16-column kernels write from a full tile get their fused store (`acc · alpha +
        // C · beta`, rounded once), the rest their edge store: the same bits as theirs.
        let fused = if mr == MR { nr / NR * NR } else { 0 };
        for (i, acc) in acc.chunks_exact(WIDE).take(mr).enumerate() {
            let row = std::slice::from_raw_parts_mut(c.add(i * ldc), nr);
            for (j, (c, &v)) in row.iter_mut().zip(acc).enumerate() {
                *c = if beta == 0.0 {
                    alpha * v
                } else if j < fused {
                    v.mul_add(alpha, beta * *c)
                } else {
                    alpha * v + beta * *c
                };
            }
        }
    }
}

/// `C[6 × 32] = alpha · Σ_p a[p · a_step + i · a_row] · b[p · 32 + j] + beta · C` over `kc` steps, C at `c`
/// with row stride `ldc`; with `beta == 0` C is only written.
///
/// # Safety
/// As for [`wide_tile`], with a full tile of C.
#[target_feature(enable = "avx512f")]
unsafe fn kernel_6x32(
    kc: usize,
    (mut a, a_row, a_step): (*const f32, usize, usize),
    mut b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    let mut acc = [_mm512_setzero_ps(); 2 * MR];
    let rows: [usize; MR] = std::array::from_fn(|i| i * a_row);
    macro_rules! step {
        () => {
            let (b0, b1) = (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16)));
            for i in 0..MR {
                let ai = _mm512_set1_ps(*a.add(rows[i]));
                acc[2 * i] = _mm512_fmadd_ps(ai, b0, acc[2 * i]);
                acc[2 * i + 1] = _mm512_fmadd_ps(ai, b1, acc[2 * i + 1]);
            }
            a = a.add(a_step);
            b = b.add(WIDE);
        };
    }
    for _ in 0..kc / 4 {
        step!();
        step!();
        step!();
        step!();
    }
    for _ in 0..kc % 4 {
        step!();
    }
    let av = _mm512_set1_ps(alpha);
    for (h, v) in acc.iter().enumerate() {
        let at = c.add((h / 2) * ldc + (h % 2) * 16);
        let out = if beta == 0.0 {
            _mm512_mul_ps(*v, av)
        } else {
            _mm512_fmadd_ps(
                *v,
                av,
                _mm512_mul_ps(_mm512_loadu_ps(at), _mm512_set1_ps(beta)),
            )
        };
        _mm512_storeu_ps(at, out);
    }
}
