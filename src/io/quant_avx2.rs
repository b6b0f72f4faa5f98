//! AVX2 twins of the most common block dequantizers (Q8_0, Q4_0, Q4_1): eight elements per instruction,
//! the same arithmetic in the same order as the scalar kernels of `io::quant` (a multiply, then an add or a
//! subtract, each rounded to f32; never fused), so both give the same bits. `io::quant` calls them when the
//! CPU has AVX2.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::quant::f16_at;

/// Whether this CPU has AVX2 (detected once; later calls read a cached flag).
#[inline(always)]
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2");
    #[allow(unreachable_code)]
    false
}

/// Eight unsigned bytes from the low half of `v` as f32.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn u8x8(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// The 32 nibbles of 16 bytes as f32 in ggml's order: the low nibbles are elements 0..16, the high 16..32.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn nibbles(bytes: *const u8) -> [__m256; 4] {
    let q = _mm_loadu_si128(bytes as *const __m128i);
    let mask = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(q, mask);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
    [
        u8x8(lo),
        u8x8(_mm_srli_si128(lo, 8)),
        u8x8(hi),
        u8x8(_mm_srli_si128(hi, 8)),
    ]
}

/// Q8_0 (see `io::quant::dequant_q8_0`).
///
/// # Safety
/// The CPU must have AVX2; `src` holds whole blocks for `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dequant_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(32)) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        let q = _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i);
        let halves = [_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)];
        for (i, h) in halves.into_iter().enumerate() {
            for (j, part) in [h, _mm_srli_si128(h, 8)].into_iter().enumerate() {
                let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part));
                _mm256_storeu_ps(y.as_mut_ptr().add(16 * i + 8 * j), _mm256_mul_ps(d, f));
            }
        }
    }
}

/// Q4_0 (see `io::quant::dequant_q4_0`): `d·(q − 8)`.
///
/// # Safety
/// As for [`dequant_q8_0`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dequant_q4_0(src: &[u8], dst: &mut [f32]) {
    let eight = _mm256_set1_ps(8.0);
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(32)) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        for (i, f) in nibbles(b.as_ptr().add(2)).into_iter().enumerate() {
            let v = _mm256_mul_ps(d, _mm256_sub_ps(f, eight));
            _mm256_storeu_ps(y.as_mut_ptr().add(8 * i), v);
        }
    }
}

/// Q4_1 (see `io::quant::dequant_q4_1`): `d·q + m`.
///
/// # Safety
/// As for [`dequant_q8_0`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dequant_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(32)) {
        let (d, m) = (_mm256_set1_ps(f16_at(b, 0)), _mm256_set1_ps(f16_at(b, 2)));
        for (i, f) in nibbles(b.as_ptr().add(4)).into_iter().enumerate() {
            let v = _mm256_add_ps(_mm256_mul_ps(d, f), m);
            _mm256_storeu_ps(y.as_mut_ptr().add(8 * i), v);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use crate::io::quant;

    /// Random blocks (any bytes: scales may be NaN, infinite or subnormal) give the same bits both ways.
    #[test]
    fn the_avx2_kernels_give_the_scalar_kernels_bits() {
        if !super::available() {
            eprintln!("skipping: this CPU has no AVX2");
            return;
        }
        let mut rng = crate::rng::Rng::new(9);
        type Pair = (usize, fn(&[u8], &mut [f32]), unsafe fn(&[u8], &mut [f32]));
        let kernels: [Pair; 3] = [
            (34, quant::scalar_q8_0, super::dequant_q8_0),
            (18, quant::scalar_q4_0, super::dequant_q4_0),
            (20, quant::scalar_q4_1, super::dequant_q4_1),
        ];
        for (bytes, scalar, simd) in kernels {
            let src: Vec<u8> = (0..bytes * 64).map(|_| rng.below(256) as u8).collect();
            let (mut a, mut b) = (vec![0f32; 64 * 32], vec![1f32; 64 * 32]);
            scalar(&src, &mut a);
            // SAFETY: the CPU has AVX2 (checked above); the source holds 64 whole blocks.
            unsafe { simd(&src, &mut b) };
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                    "block bytes {bytes}, element {i}: {x} vs {y}"
                );
            }
        }
    }
}
