//! The f32 GEMM micro-kernels for AVX-512: the same 6 × 16 tile and packed layout as the AVX2 kernels, one
//! zmm accumulator per row of the tile. Where 512-bit operations run as two 256-bit halves (the Zen 4
//! generation) the arithmetic per cycle is the same as AVX2's, but each depth step issues 13 instructions
//! instead of 20 (one B load, six broadcasts, six FMAs), which leaves the core more room to keep the FMA units
//! busy while B streams in.

use super::gemm::{MR, NR};
use std::arch::x86_64::*;

/// Whether this CPU runs these kernels.
#[inline]
pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// `C[6 × 16] = alpha · Σ_p a[p · 6 + i] · b[p · 16 + j] + beta · C` over `kc` steps, C at `c` with row stride
/// `ldc`; with `beta == 0` C is only written.
///
/// # Safety
/// The CPU must support AVX-512F; `a` must hold `kc · MR` and `b` `kc · NR` floats; `c` must be valid for
/// reads and writes of 6 rows of 16 floats at row stride `ldc`, owned by the caller.
#[target_feature(enable = "avx512f")]
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

/// As [`kernel_6x16`] with A read in place: element `(i, p)` at `a[p · a_step + i · a_row]`.
///
/// # Safety
/// As for [`kernel_6x16`], with `a` valid for reads at `p · a_step + i · a_row` for `p < kc`, `i < 6`.
#[target_feature(enable = "avx512f")]
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
unsafe fn store(acc: [__m512; MR], c: *mut f32, ldc: usize, alpha: f32, beta: f32) {
    let av = _mm512_set1_ps(alpha);
    if beta == 0.0 {
        for (i, v) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(i * ldc), _mm512_mul_ps(*v, av));
        }
    } else {
        let bv = _mm512_set1_ps(beta);
        for (i, v) in acc.iter().enumerate() {
            let row = c.add(i * ldc);
            let old = _mm512_mul_ps(_mm512_loadu_ps(row), bv);
            _mm512_storeu_ps(row, _mm512_fmadd_ps(*v, av, old));
        }
    }
}

/// The six accumulators (row `i` in `acc[i]`) after `kc` steps, A's element `(i, p)` at
/// `a[p · a_step + i · a_row]` (a packed panel is `a_row = 1`, `a_step = MR`).
#[inline(always)]
unsafe fn accumulate(
    kc: usize,
    (mut a, a_row, a_step): (*const f32, usize, usize),
    mut b: *const f32,
) -> [__m512; MR] {
    let mut c = [_mm512_setzero_ps(); MR];
    let rows: [usize; MR] = std::array::from_fn(|i| i * a_row);
    macro_rules! step {
        () => {
            let bv = _mm512_loadu_ps(b);
            for i in 0..MR {
                c[i] = _mm512_fmadd_ps(_mm512_set1_ps(*a.add(rows[i])), bv, c[i]);
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
