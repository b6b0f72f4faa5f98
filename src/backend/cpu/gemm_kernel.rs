//! The GEMM micro-kernels and packing routines. A micro-kernel computes one `MR × NR` tile of
//! `C = alpha · A · B + beta · C` from a packed A micro-panel (`a[p · MR + i]`) and a packed B micro-panel
//! (`b[p · NR + j]`) over `kc` depth steps; `pack_a` and `pack_b` build those panels from strided operands.
//!
//! f32 uses the AVX2 + FMA kernel set (`F32Kernels`, twelve ymm accumulators, 6 × 16) when runtime detection
//! finds it (CPUs with AVX-512 use the wide format of `gemm_avx512` instead). Full tiles are written to C
//! straight from the registers, edge tiles through a small buffer. Everything else (f64, or a CPU without
//! AVX2) uses the portable kernel.

use super::gemm::{GemmFloat, MatRef, MR, NR};
use super::simd::Level;
use crate::dtype::Float;

/// The portable micro-kernel (and the reference the AVX2 one is tested against):
/// `out[i · NR + j] = Σ_p a[p · MR + i] · b[p · NR + j]` over `kc` steps.
pub fn portable_kernel<T: Float>(kc: usize, a: &[T], b: &[T], out: &mut [T; MR * NR]) {
    let mut acc = [[T::ZERO; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] += ap[i] * bp[j];
            }
        }
    }
    for i in 0..MR {
        out[i * NR..i * NR + NR].copy_from_slice(&acc[i]);
    }
}

/// `panel[p · MR + i] = rows[i][p]` for `p < panel.len() / MR` (the portable version of
/// [`GemmFloat::interleave_rows`]).
pub fn interleave_rows<T: Float>(rows: [&[T]; MR], panel: &mut [T]) {
    for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
        for (d, s) in dst.iter_mut().zip(&rows) {
            *d = s[p];
        }
    }
}

/// `C[i][j] = alpha · acc[i · NR + j] + beta · C[i][j]` for `i < mr`, `j < nr`, with C at `c` (row stride
/// `ldc`); with `beta == 0` C is only written.
///
/// # Safety
/// `c` must be valid for writes (and reads, unless `beta == 0`) of `mr` rows of `nr` elements at row stride
/// `ldc`, and no other thread may access them.
pub unsafe fn store_tile<T: Float>(
    acc: &[T; MR * NR],
    c: *mut T,
    ldc: usize,
    mr: usize,
    nr: usize,
    alpha: T,
    beta: T,
) {
    for i in 0..mr {
        // SAFETY: the caller guarantees row i of the tile is ours.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), nr) };
        let acc_row = &acc[i * NR..i * NR + nr];
        if beta == T::ZERO {
            for (c, &v) in row.iter_mut().zip(acc_row) {
                *c = alpha * v;
            }
        } else {
            for (c, &v) in row.iter_mut().zip(acc_row) {
                *c = alpha * v + beta * *c;
            }
        }
    }
}

/// Packs rows `i0..i0+MR` (zero past `m`) and depth `pc..pc+kc` of A as `panel[p · MR + i]`.
pub fn pack_a<T: GemmFloat>(
    a: MatRef<'_, T>,
    i0: usize,
    m: usize,
    pc: usize,
    kc: usize,
    panel: &mut [T],
) {
    let rows = MR.min(m - i0);
    let panel = &mut panel[..kc * MR];
    if a.row_stride == 1 && rows == MR {
        // A transposed (column-major): each depth step is a contiguous run of MR rows.
        for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
            let start = a.offset + (pc + p) * a.col_stride + i0;
            let src: &[T; MR] = a.data[start..start + MR].try_into().unwrap();
            dst.copy_from_slice(src);
        }
        return;
    }
    if a.col_stride == 1 && rows == MR {
        // A row-major: MR rows read side by side, one depth step at a time.
        let src: [&[T]; MR] = std::array::from_fn(|i| {
            let start = a.offset + (i0 + i) * a.row_stride + pc;
            &a.data[start..start + kc]
        });
        T::interleave_rows(src, panel);
        return;
    }
    for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
        for (i, d) in dst.iter_mut().enumerate() {
            *d = if i < rows {
                a.at(i0 + i, pc + p)
            } else {
                T::ZERO
            };
        }
    }
}

/// Packs columns `j0..j0 + count · NR` (zero past `n`) and depth `pc..pc+kc` of B as `count` panels,
/// `panels[g · stride + p · NR + j]` for column `j0 + g · NR + j`.
#[allow(clippy::too_many_arguments)]
pub fn pack_b<T: Float>(
    b: MatRef<'_, T>,
    pc: usize,
    kc: usize,
    j0: usize,
    n: usize,
    count: usize,
    panels: &mut [T],
    stride: usize,
) {
    let cols = (count * NR).min(n - j0);
    if b.col_stride == 1 && cols == count * NR {
        // B row-major: each depth step is a contiguous run of all the panels' columns.
        for p in 0..kc {
            let start = b.offset + (pc + p) * b.row_stride + j0;
            for (g, src) in b.data[start..start + cols].chunks_exact(NR).enumerate() {
                let src: &[T; NR] = src.try_into().unwrap();
                panels[g * stride + p * NR..][..NR].copy_from_slice(src);
            }
        }
        return;
    }
    for g in 0..count {
        let panel = &mut panels[g * stride..][..kc * NR];
        let (j0, cols) = (j0 + g * NR, NR.min(n - j0 - g * NR));
        if b.row_stride == 1 && b.col_stride != 1 {
            // B transposed (a weight read as Wᵀ): each column is a contiguous run of depth.
            for j in 0..cols {
                let start = b.offset + (j0 + j) * b.col_stride + pc;
                for (p, &v) in b.data[start..start + kc].iter().enumerate() {
                    panel[p * NR + j] = v;
                }
            }
            for dst in panel.chunks_exact_mut(NR) {
                dst[cols..].fill(T::ZERO);
            }
            continue;
        }
        for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = if j < cols {
                    b.at(pc + p, j0 + j)
                } else {
                    T::ZERO
                };
            }
        }
    }
}

/// A micro-kernel reading A in place: `(kc, (a, a_row, a_step), b, c, ldc, alpha, beta)`, element `(i, p)` of
/// A at `a[p · a_step + i · a_row]`, B a packed panel.
pub type StridedKernel =
    unsafe fn(usize, (*const f32, usize, usize), *const f32, *mut f32, usize, f32, f32);

/// One instruction set's f32 micro-kernels for the 6 × 16 tile (see `avx2` for their contracts).
pub struct F32Kernels {
    pub name: &'static str,
    /// The vector level it needs.
    pub level: Level,
    /// A full tile from packed panels, written to C with alpha and beta.
    pub full: unsafe fn(usize, *const f32, *const f32, *mut f32, usize, f32, f32),
    /// A full tile with A read in place (any strides), written to C.
    pub strided: StridedKernel,
}

/// Every f32 kernel set this CPU runs, fastest first (empty without AVX2 + FMA).
pub fn f32_kernel_sets() -> Vec<&'static F32Kernels> {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: F32Kernels = F32Kernels {
            name: "avx2",
            level: Level::Avx2,
            full: avx2::kernel_6x16,
            strided: avx2::kernel_6x16_strided,
        };
        let mut sets = Vec::new();
        if avx2::available() {
            sets.push(&AVX2);
        }
        sets
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// The fastest f32 kernel set this CPU runs within the `TAPEGRAD_SIMD` cap, if any (detected once).
#[inline]
pub fn f32_kernels() -> Option<&'static F32Kernels> {
    static BEST: std::sync::OnceLock<Option<&'static F32Kernels>> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| {
        f32_kernel_sets()
            .into_iter()
            .find(|set| set.level <= super::simd::level())
    })
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// Whether this CPU runs the AVX2 + FMA kernel.
    #[inline]
    pub fn available() -> bool {
        crate::backend::cpu::simd::has_avx2_fma()
    }

    /// `C[6 × 16] = alpha · Σ_p a[p · 6 + i] · b[p · 16 + j] + beta · C` over `kc` steps, C at `c` with row
    /// stride `ldc`; with `beta == 0` C is only written.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` must hold `kc · MR` and `b` `kc · NR` floats; `c` must be valid
    /// for reads and writes of 6 rows of 16 floats at row stride `ldc`, owned by the caller.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_6x16(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        beta: f32,
    ) {
        store(accumulate(kc, (a, 1, MR), b), c, ldc, alpha, beta);
    }

    /// `panel[p · 6 + i] = rows[i][p]` for `p < kc`, eight depth steps at a time through an 8 × 8 transpose
    /// (rows 6 and 7 zero).
    ///
    /// # Safety
    /// The CPU must support AVX2; each row must hold `kc` floats and `panel` `kc · MR`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn interleave_rows(rows: [*const f32; MR], kc: usize, panel: *mut f32) {
        let zero = _mm256_setzero_ps();
        let mut p = 0;
        while p + 8 <= kc {
            let r: [__m256; MR] = std::array::from_fn(|i| _mm256_loadu_ps(rows[i].add(p)));
            // Pairs of rows interleaved, then quads: s[c] holds column c (rows 0-3) in its low lane and
            // column c + 4 in its high lane; s[c + 4] the same for rows 4 and 5.
            let (t0, t1) = (
                _mm256_unpacklo_ps(r[0], r[1]),
                _mm256_unpackhi_ps(r[0], r[1]),
            );
            let (t2, t3) = (
                _mm256_unpacklo_ps(r[2], r[3]),
                _mm256_unpackhi_ps(r[2], r[3]),
            );
            let (t4, t5) = (
                _mm256_unpacklo_ps(r[4], r[5]),
                _mm256_unpackhi_ps(r[4], r[5]),
            );
            let s = [
                _mm256_shuffle_ps::<0x44>(t0, t2),
                _mm256_shuffle_ps::<0xEE>(t0, t2),
                _mm256_shuffle_ps::<0x44>(t1, t3),
                _mm256_shuffle_ps::<0xEE>(t1, t3),
                _mm256_shuffle_ps::<0x44>(t4, zero),
                _mm256_shuffle_ps::<0xEE>(t4, zero),
                _mm256_shuffle_ps::<0x44>(t5, zero),
                _mm256_shuffle_ps::<0xEE>(t5, zero),
            ];
            let dst = panel.add(p * MR);
            for c in 0..4 {
                let (lo, lo45) = (
                    _mm256_castps256_ps128(s[c]),
                    _mm256_castps256_ps128(s[c + 4]),
                );
                let (hi, hi45) = (
                    _mm256_extractf128_ps::<1>(s[c]),
                    _mm256_extractf128_ps::<1>(s[c + 4]),
                );
                _mm_storeu_ps(dst.add(c * MR), lo);
                _mm_storel_epi64(dst.add(c * MR + 4) as *mut __m128i, _mm_castps_si128(lo45));
                _mm_storeu_ps(dst.add((c + 4) * MR), hi);
                _mm_storel_epi64(
                    dst.add((c + 4) * MR + 4) as *mut __m128i,
                    _mm_castps_si128(hi45),
                );
            }
            p += 8;
        }
        for p in p..kc {
            for (i, row) in rows.iter().enumerate() {
                *panel.add(p * MR + i) = *row.add(p);
            }
        }
    }

    /// `panel[p · ldp + j] = cols[j][p]` for `p < kc`, `j < 16`: packs 16 columns of a B panel (row stride
    /// `ldp`: 16, or 32 for the wide format) that are contiguous runs of depth (a weight read as Wᵀ), eight
    /// depth steps at a time through two 8 × 8 transposes.
    ///
    /// # Safety
    /// The CPU must support AVX2; each column must hold `kc` floats and `panel` `kc` rows of `ldp ≥ 16`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn interleave_columns(
        cols: [*const f32; NR],
        kc: usize,
        panel: *mut f32,
        ldp: usize,
    ) {
        let mut p = 0;
        while p + 8 <= kc {
            for half in 0..2 {
                let r: [__m256; 8] =
                    std::array::from_fn(|i| _mm256_loadu_ps(cols[half * 8 + i].add(p)));
                let t: [__m256; 8] = std::array::from_fn(|i| {
                    let (a, b) = (r[i & !1], r[i | 1]);
                    if i % 2 == 0 {
                        _mm256_unpacklo_ps(a, b)
                    } else {
                        _mm256_unpackhi_ps(a, b)
                    }
                });
                // u[4q + c] holds depth steps c and c + 4 of columns 4q..4q + 4 (low and high lane).
                let u: [__m256; 8] = std::array::from_fn(|i| {
                    let (q, c) = (i / 4, i % 4);
                    let (a, b) = (t[4 * q + (c / 2)], t[4 * q + 2 + (c / 2)]);
                    if c % 2 == 0 {
                        _mm256_shuffle_ps::<0x44>(a, b)
                    } else {
                        _mm256_shuffle_ps::<0xEE>(a, b)
                    }
                });
                let dst = panel.add(p * ldp + half * 8);
                for c in 0..4 {
                    let (lo, hi) = (u[c], u[4 + c]);
                    _mm256_storeu_ps(dst.add(c * ldp), _mm256_permute2f128_ps::<0x20>(lo, hi));
                    _mm256_storeu_ps(
                        dst.add((c + 4) * ldp),
                        _mm256_permute2f128_ps::<0x31>(lo, hi),
                    );
                }
            }
            p += 8;
        }
        for p in p..kc {
            for (j, col) in cols.iter().enumerate() {
                *panel.add(p * ldp + j) = *col.add(p);
            }
        }
    }

    /// `C[6 × 16] = alpha · Σ_p a[p · a_step + i · a_row] · b[p · 16 + j] + beta · C`: as [`kernel_6x16`]
    /// with A read in place (any strides) instead of from a packed panel.
    ///
    /// # Safety
    /// As for [`kernel_6x16`], with `a` valid for reads at `p · a_step + i · a_row` for `p < kc`, `i < 6`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_6x16_strided(
        kc: usize,
        a: (*const f32, usize, usize),
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        beta: f32,
    ) {
        store(accumulate(kc, a, b), c, ldc, alpha, beta);
    }

    /// Writes the accumulators to C: `C = alpha · acc + beta · C`, C only written when `beta == 0`.
    #[inline(always)]
    unsafe fn store(acc: [__m256; 12], c: *mut f32, ldc: usize, alpha: f32, beta: f32) {
        let av = _mm256_set1_ps(alpha);
        if beta == 0.0 {
            for i in 0..MR {
                let row = c.add(i * ldc);
                _mm256_storeu_ps(row, _mm256_mul_ps(acc[2 * i], av));
                _mm256_storeu_ps(row.add(8), _mm256_mul_ps(acc[2 * i + 1], av));
            }
        } else {
            let bv = _mm256_set1_ps(beta);
            for i in 0..MR {
                let row = c.add(i * ldc);
                let (c0, c1) = (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)));
                _mm256_storeu_ps(row, _mm256_fmadd_ps(acc[2 * i], av, _mm256_mul_ps(c0, bv)));
                _mm256_storeu_ps(
                    row.add(8),
                    _mm256_fmadd_ps(acc[2 * i + 1], av, _mm256_mul_ps(c1, bv)),
                );
            }
        }
    }

    /// The twelve accumulators (row `i` in `acc[2i]`, `acc[2i + 1]`) after `kc` steps, A's element `(i, p)` at
    /// `a[p · a_step + i · a_row]` (a packed panel is `a_row = 1`, `a_step = MR`, which the inlining turns into
    /// constant offsets).
    #[inline(always)]
    unsafe fn accumulate(
        kc: usize,
        (mut a, a_row, a_step): (*const f32, usize, usize),
        mut b: *const f32,
    ) -> [__m256; 12] {
        let mut c = [_mm256_setzero_ps(); 12];
        let rows: [usize; MR] = std::array::from_fn(|i| i * a_row);
        macro_rules! step {
            () => {
                let (b0, b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)));
                for i in 0..MR {
                    let ai = _mm256_broadcast_ss(&*a.add(rows[i]));
                    c[2 * i] = _mm256_fmadd_ps(ai, b0, c[2 * i]);
                    c[2 * i + 1] = _mm256_fmadd_ps(ai, b1, c[2 * i + 1]);
                }
                a = a.add(a_step);
                b = b.add(NR);
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
        c
    }
}
