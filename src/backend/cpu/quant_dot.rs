//! Dot products of quantized weight rows with 8-bit activations, in integers: the decoding path of a
//! quantized `linear` (one to four rows of `x`, as when generating a token at a time).
//!
//! Each row of `x: [K]` is quantized in blocks of 32 to `q = round(x / d)` with `d = max|x| / 127` (an f32
//! scale per block, [`Q8Row`]). A row of W in Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1 (blocks of 32 with an f16 scale
//! `dw`, and for Q4_1 and Q5_1 an f16 minimum `mw`; Q5_0's and Q5_1's nibbles have a fifth bit in a `u32`), Q4_K or Q5_K (super-blocks of 256: blocks of 32 with the scale `d·sc` and the
//! minimum `−dmin·m` of their 6-bit codes, `k_scale_min`; Q5_K's values have a fifth bit), or Q6_K (blocks of
//! 32 of 6-bit values minus 32 with an 8-bit scale per 16, which multiplies the integer lanes, and the
//! super-block's `d` as `dw`) then dots with it block by block:
//!
//! - the 32 products `w_j · q_j` are summed exactly in integers, in eight lanes (lane `l` holds
//!   `j = 4l .. 4l + 3`, the grouping of `vpmaddubsw` + `vpmaddwd` and of `vpdpbusd`), `w_j` the block's
//!   integer (`q - 8` for Q4_0, `q - 16` for Q5_0, the raw value for Q4_1 and Q5_1);
//! - lane `l` is converted to f32 and multiply-added into lane `l` of an accumulator, with `dw · d` as the
//!   factor (even blocks into one accumulator, odd into another, so consecutive blocks overlap);
//! - Q4_1, Q5_1, Q4_K and Q5_K add `mw · d · Σq` per block, in a scalar sum in block order;
//! - the accumulators are summed lane-wise, then `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`, then the
//!   minimum sum added.
//!
//! The AVX2 kernels and the scalar twin do exactly these operations (fused multiply-adds where the list says
//! multiply-add), so both give the same bits; the tests check it, and the product against the f32 one within
//! the activations' rounding. This is llama.cpp's scheme for these formats: the activations lose about 0.4% of
//! each block's largest value, the weights are read once as they are stored, and no f32 copy of a row is made.

use super::simd::vectorized;
use crate::io::gguf::GgmlType;

/// Elements per block, in every format this file handles.
pub const BLOCK: usize = 32;

/// Whether rows of `ty` dot with [`Q8Row`]s here.
pub fn supports(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q8_0
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
    )
}

/// One row of activations `[K]` (`K` a multiple of 32) in 8-bit blocks.
#[derive(Clone, Debug, Default)]
pub struct Q8Row {
    /// `[K]`: `round(x / d)` of each element, in `-127..=127`.
    pub q: Vec<i8>,
    /// `[K / 32]`: each block's scale `max|x| / 127` (NaN if the block holds a NaN or an infinity, so the
    /// products with it are NaN as the f32 ones would be).
    pub d: Vec<f32>,
    /// `[K / 32]`: `d · Σq` of each block (for the minimums of Q4_1, Q5_1, Q4_K and Q5_K).
    pub s: Vec<f32>,
}

impl Q8Row {
    /// `x` quantized; `x.len()` must be a multiple of 32.
    pub fn quantize(x: &[f32]) -> Q8Row {
        assert!(
            x.len().is_multiple_of(BLOCK),
            "internal: {} activations are not whole blocks",
            x.len()
        );
        let mut row = Q8Row {
            q: vec![0; x.len()],
            d: Vec::with_capacity(x.len() / BLOCK),
            s: Vec::with_capacity(x.len() / BLOCK),
        };
        for (block, q) in x.chunks_exact(BLOCK).zip(row.q.chunks_exact_mut(BLOCK)) {
            let finite = block.iter().all(|v| v.is_finite());
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = if finite { amax / 127.0 } else { f32::NAN };
            let mut sum = 0i32;
            if d > 0.0 {
                sum = vectorized(
                    #[inline(always)]
                    || {
                        let mut sum = 0i32;
                        for (q, &v) in q.iter_mut().zip(block) {
                            *q = (v / d).round().clamp(-127.0, 127.0) as i8;
                            sum += *q as i32;
                        }
                        sum
                    },
                );
            }
            row.d.push(d);
            row.s.push(d * sum as f32);
        }
        row
    }
}

/// `Σ w·x` of one row of W (`row`: its blocks, `ty` one that [`supports`]) with `x`.
#[inline(always)]
pub fn dot(ty: GgmlType, row: &[u8], x: &Q8Row) -> f32 {
    dots(ty, [row], x)[0]
}

/// [`dot`] of `R` rows of W with the same `x`, each giving the same bits as alone; the rows' blocks are read
/// side by side (independent streams from memory, one load of `x` for all).
#[inline(always)]
pub fn dots<const R: usize>(ty: GgmlType, rows: [&[u8]; R], x: &Q8Row) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the CPU has AVX2, FMA and F16C; the rows are whole blocks of `ty` for `x.d.len()` blocks.
        return unsafe { avx2::dots(ty, rows, x) };
    }
    rows.map(|row| scalar::dot(ty, row, x))
}

/// The scalar twin: each block of 32 read as its scale, its minimum (Q4_1, Q5_1, Q4_K, Q5_K; 0 otherwise) and
/// its 32 integers (`q - 8` for Q4_0, `q - 16` for Q5_0, `(q - 32) · sc` for Q6_K), then the operations of the module's header one at a
/// time.
pub(crate) mod scalar {
    use super::{Q8Row, BLOCK};
    use crate::io::gguf::GgmlType;
    use crate::io::quant::{f16_at, k_scale_min};

    /// The block's integers.
    fn ints(ty: GgmlType, b: &[u8]) -> [i32; BLOCK] {
        let mut w = [0i32; BLOCK];
        match ty {
            GgmlType::Q8_0 => {
                for (w, &q) in w.iter_mut().zip(&b[2..34]) {
                    *w = q as i8 as i32;
                }
            }
            _ => {
                // Where the nibbles start, where the fifth bits are (if any), and the offset.
                let (at, high, offset) = match ty {
                    GgmlType::Q4_0 => (2, None, 8),
                    GgmlType::Q5_0 => (6, Some(2), 16),
                    GgmlType::Q5_1 => (8, Some(4), 0),
                    _ => (4, None, 0),
                };
                let qh = high.map_or(0, |h| {
                    u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]])
                });
                let fifth = |j: usize| ((qh >> j) & 1) as i32 * 16;
                for (j, &q) in b[at..at + 16].iter().enumerate() {
                    w[j] = ((q & 0x0f) as i32 | fifth(j)) - offset;
                    w[j + 16] = ((q >> 4) as i32 | fifth(j + 16)) - offset;
                }
            }
        }
        w
    }

    /// Block of 32 `i` of a Q4_K row: its scale `d·sc`, its minimum `−dmin·m` and its 32 nibbles.
    fn q4_k(row: &[u8], i: usize) -> (f32, f32, [i32; BLOCK]) {
        let (b, j) = (&row[i / 8 * 144..][..144], i % 8);
        let (sc, m) = k_scale_min(j, &b[4..16]);
        let qs = &b[16 + 32 * (j / 2)..][..32];
        let w =
            std::array::from_fn(|l| i32::from(if j % 2 == 0 { qs[l] & 0x0f } else { qs[l] >> 4 }));
        (f16_at(b, 0) * sc, -(f16_at(b, 2) * m), w)
    }

    /// Block of 32 `i` of a Q5_K row: as [`q4_k`], each nibble with its fifth bit from `qh` (bit `i % 8`).
    fn q5_k(row: &[u8], i: usize) -> (f32, f32, [i32; BLOCK]) {
        let (b, j) = (&row[i / 8 * 176..][..176], i % 8);
        let (sc, m) = k_scale_min(j, &b[4..16]);
        let (qh, qs) = (&b[16..48], &b[48 + 32 * (j / 2)..][..32]);
        let w = std::array::from_fn(|l| {
            let low = if j % 2 == 0 { qs[l] & 0x0f } else { qs[l] >> 4 };
            i32::from(low | ((qh[l] >> j) & 1) << 4)
        });
        (f16_at(b, 0) * sc, -(f16_at(b, 2) * m), w)
    }

    /// Block of 32 `i` of a Q6_K row: its scale `d` and its 32 integers `(q − 32) · sc`, `sc` the 8-bit scale
    /// of each half of 16 (a lane's four elements share it, so the lanes' sums stay exact).
    fn q6_k(row: &[u8], i: usize) -> (f32, f32, [i32; BLOCK]) {
        let (b, j) = (&row[i / 8 * 210..][..210], i % 8);
        let (half, c) = (j / 4, j % 4);
        let ql = &b[half * 64 + 32 * (c % 2)..][..32];
        let qh = &b[128 + half * 32..][..32];
        let sc = &b[192 + half * 8 + 2 * c..][..2];
        let w = std::array::from_fn(|l| {
            let low = if c < 2 { ql[l] & 0x0f } else { ql[l] >> 4 };
            let q = i32::from(low | ((qh[l] >> (2 * c)) & 3) << 4) - 32;
            q * i32::from(sc[l / 16] as i8)
        });
        (f16_at(b, 208), 0.0, w)
    }

    /// The scalar twin of the AVX2 kernel (see the module's header for the order of operations).
    pub fn dot(ty: GgmlType, row: &[u8], x: &Q8Row) -> f32 {
        let mut acc = [[0f32; 8]; 2];
        let mut mins = 0f32;
        for i in 0..x.d.len() {
            let (wscale, wmin, w) = match ty {
                GgmlType::Q4_K => q4_k(row, i),
                GgmlType::Q5_K => q5_k(row, i),
                GgmlType::Q6_K => q6_k(row, i),
                _ => {
                    let bytes = ty.block_layout().expect("a block format").1;
                    let b = &row[i * bytes..][..bytes];
                    let min = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                        f16_at(b, 2)
                    } else {
                        0.0
                    };
                    (f16_at(b, 0), min, ints(ty, b))
                }
            };
            let q = &x.q[i * BLOCK..(i + 1) * BLOCK];
            let scale = wscale * x.d[i];
            for (l, a) in acc[i % 2].iter_mut().enumerate() {
                let lane: i32 = (4 * l..4 * l + 4).map(|j| w[j] * q[j] as i32).sum();
                *a = (lane as f32).mul_add(scale, *a);
            }
            if matches!(
                ty,
                GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K
            ) {
                mins = wmin.mul_add(x.s[i], mins);
            }
        }
        let a: [f32; 8] = std::array::from_fn(|l| acc[0][l] + acc[1][l]);
        ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])) + mins
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Q8Row, BLOCK};
    use crate::io::gguf::GgmlType;
    use std::arch::x86_64::*;

    /// Whether this CPU has AVX2, FMA and F16C (detected once; later calls read a cached flag).
    #[inline(always)]
    pub fn available() -> bool {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }

    /// The two f16 at `p` (a block's scale, and its minimum or its first two bytes) as f32, in lanes 0 and 1.
    /// Written out so that the load goes through a general register into a fresh vector one (`vmovd`): left to
    /// itself, the compiler narrows it to a 2-byte insert into whatever register it picks — the accumulator,
    /// as it happens — which ties each block to the one before and serializes the loop.
    #[inline(always)]
    unsafe fn f16_pair(p: *const u8) -> __m128 {
        let bits = std::ptr::read_unaligned(p as *const u32);
        let out: __m128;
        std::arch::asm!(
            "vmovd {v}, {g:e}",
            "vcvtph2ps {v}, {v}",
            g = in(reg) bits,
            v = out(xmm_reg) out,
            options(pure, nomem, nostack, preserves_flags),
        );
        out
    }

    /// The 32 nibbles of 16 bytes in ggml's order (low nibbles are elements 0..16, high ones 16..32).
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        let mask = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    /// The 32 fifth bits of Q5_0 and Q5_1 (the `u32` at `p`, bit `j` for element `j`) as bytes of 0 or 16.
    #[inline(always)]
    unsafe fn fifth_bits(p: *const u8) -> __m256i {
        let qh = _mm256_set1_epi32(std::ptr::read_unaligned(p as *const i32));
        // Byte `j` gets byte `j / 8` of `qh` (the shuffle works within each 128-bit half, which both hold
        // `qh`), then keeps bit `j % 8` of it.
        let spread = _mm256_shuffle_epi8(
            qh,
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(16))
    }

    /// Eight lanes of `Σ u·s` over four bytes each: `u` unsigned, `s` signed (pair sums fit in i16: at most
    /// 2 · 128 · 127).
    #[inline(always)]
    unsafe fn lanes_unsigned(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    /// The same for two signed operands: `|w| · (x with w's sign)`.
    #[inline(always)]
    unsafe fn lanes_signed(w: __m256i, x: __m256i) -> __m256i {
        lanes_unsigned(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
    }

    /// See `scalar::dot`, for `R` rows at once.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; each row holds `x.d.len()` whole blocks of `ty`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dots<const R: usize>(ty: GgmlType, rows: [&[u8]; R], x: &Q8Row) -> [f32; R] {
        let (eight, sixteen) = (_mm256_set1_epi8(8), _mm256_set1_epi8(16));
        match ty {
            GgmlType::Q8_0 => blocks::<R, 34, false>(rows, x, |b, q| {
                lanes_signed(_mm256_loadu_si256(b.add(2) as *const __m256i), q)
            }),
            GgmlType::Q4_0 => blocks::<R, 18, false>(rows, x, |b, q| {
                lanes_signed(_mm256_sub_epi8(nibbles(b.add(2)), eight), q)
            }),
            GgmlType::Q5_0 => blocks::<R, 22, false>(rows, x, |b, q| {
                let w = _mm256_or_si256(nibbles(b.add(6)), fifth_bits(b.add(2)));
                lanes_signed(_mm256_sub_epi8(w, sixteen), q)
            }),
            GgmlType::Q5_1 => blocks::<R, 24, true>(rows, x, |b, q| {
                lanes_unsigned(_mm256_or_si256(nibbles(b.add(8)), fifth_bits(b.add(4))), q)
            }),
            GgmlType::Q4_K => k_quants::<R, 144>(rows, x),
            GgmlType::Q5_K => k_quants::<R, 176>(rows, x),
            GgmlType::Q6_K => q6_k::<R>(rows, x),
            _ => blocks::<R, 20, true>(rows, x, |b, q| lanes_unsigned(nibbles(b.add(4)), q)),
        }
    }

    /// Q4_K (`BYTES` 144) and Q5_K (`BYTES` 176): super-blocks of 256, each 8 blocks of 32 with a 6-bit scale
    /// and minimum (see `scalar::q4_k`, `scalar::q5_k`); Q5_K's nibbles get their fifth bit from the 32 bytes
    /// `qh` (bit `j` for block `j`). Block `i` of the row goes to accumulator `i % 2` as in `blocks`.
    #[inline(always)]
    unsafe fn k_quants<const R: usize, const BYTES: usize>(
        rows: [&[u8]; R],
        x: &Q8Row,
    ) -> [f32; R] {
        let five = BYTES == 176;
        let n = x.d.len();
        assert!(x.q.len() == n * BLOCK && x.s.len() == n && n.is_multiple_of(8));
        assert!(rows.iter().all(|r| r.len() == n / 8 * BYTES));
        let (mask, one) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(1));
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut mins = [0f32; R];
        for sb in 0..n / 8 {
            for r in 0..R {
                let b = rows[r].as_ptr().add(sb * BYTES);
                let dm = f16_pair(b);
                let (d, dmin) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
                let scales = std::slice::from_raw_parts(b.add(4), 12);
                let (qh, nibbles) = if five {
                    (_mm256_loadu_si256(b.add(16) as *const __m256i), b.add(48))
                } else {
                    (_mm256_setzero_si256(), b.add(16))
                };
                for g in 0..4 {
                    let qs = _mm256_loadu_si256(nibbles.add(32 * g) as *const __m256i);
                    let halves = [
                        _mm256_and_si256(qs, mask),
                        _mm256_and_si256(_mm256_srli_epi16(qs, 4), mask),
                    ];
                    for (h, mut w) in halves.into_iter().enumerate() {
                        let j = 2 * g + h;
                        let i = sb * 8 + j;
                        if five {
                            let shift = _mm_cvtsi32_si128(j as i32);
                            let bit = _mm256_and_si256(_mm256_srl_epi16(qh, shift), one);
                            w = _mm256_or_si256(w, _mm256_slli_epi16(bit, 4));
                        }
                        let (sc, m) = crate::io::quant::k_scale_min(j, scales);
                        let qv = _mm256_loadu_si256(x.q.as_ptr().add(i * BLOCK) as *const __m256i);
                        let scale = _mm256_set1_ps(d * sc * *x.d.get_unchecked(i));
                        let a = &mut acc[r][h];
                        *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes_unsigned(w, qv)), scale, *a);
                        mins[r] = (-(dmin * m)).mul_add(*x.s.get_unchecked(i), mins[r]);
                    }
                }
            }
        }
        totals(acc, mins)
    }

    /// Q6_K: super-blocks of 256 (210 bytes) in two halves of 128, each four blocks of 32 whose 6-bit values
    /// come from `ql` (low 4 bits) and `qh` (high 2), minus 32, with an 8-bit scale per 16 elements: the
    /// integer lanes are multiplied by their half's scale (exact), then by `d` (see `scalar::q6_k`).
    #[inline(always)]
    unsafe fn q6_k<const R: usize>(rows: [&[u8]; R], x: &Q8Row) -> [f32; R] {
        let n = x.d.len();
        assert!(x.q.len() == n * BLOCK && x.s.len() == n && n.is_multiple_of(8));
        assert!(rows.iter().all(|r| r.len() == n / 8 * 210));
        let (mask, three, offset) = (
            _mm256_set1_epi8(0x0f),
            _mm256_set1_epi8(3),
            _mm256_set1_epi8(32),
        );
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for sb in 0..n / 8 {
            for r in 0..R {
                let block = &rows[r][sb * 210..][..210];
                let b = block.as_ptr();
                let d = crate::io::quant::f16_at(block, 208);
                for half in 0..2 {
                    let qh = _mm256_loadu_si256(b.add(128 + 32 * half) as *const __m256i);
                    for c in 0..4 {
                        let ql =
                            _mm256_loadu_si256(b.add(64 * half + 32 * (c % 2)) as *const __m256i);
                        let low = if c < 2 {
                            _mm256_and_si256(ql, mask)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16(ql, 4), mask)
                        };
                        let high = _mm256_and_si256(
                            _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c as i32)),
                            three,
                        );
                        let w = _mm256_sub_epi8(
                            _mm256_or_si256(low, _mm256_slli_epi16(high, 4)),
                            offset,
                        );
                        let i = sb * 8 + 4 * half + c;
                        let qv = _mm256_loadu_si256(x.q.as_ptr().add(i * BLOCK) as *const __m256i);
                        let sc = |k: usize| i32::from(block[192 + 8 * half + 2 * c + k] as i8);
                        let (s0, s1) = (sc(0), sc(1));
                        let scales = _mm256_setr_epi32(s0, s0, s0, s0, s1, s1, s1, s1);
                        let lanes = _mm256_mullo_epi32(lanes_signed(w, qv), scales);
                        let scale = _mm256_set1_ps(d * *x.d.get_unchecked(i));
                        let a = &mut acc[r][i % 2];
                        *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), scale, *a);
                    }
                }
            }
        }
        totals(acc, [0.0; R])
    }

    /// The loop over the blocks (`BYTES` each; `MIN`: the block has a minimum after its scale) of `R` rows,
    /// two blocks at a time: per row, even blocks into one accumulator, odd into the other. `lanes(block, q)`
    /// gives a block's eight integer lanes against the activations `q`.
    #[inline(always)]
    unsafe fn blocks<const R: usize, const BYTES: usize, const MIN: bool>(
        rows: [&[u8]; R],
        x: &Q8Row,
        lanes: impl Fn(*const u8, __m256i) -> __m256i,
    ) -> [f32; R] {
        let n = x.d.len();
        assert!(x.q.len() == n * BLOCK && x.s.len() == n);
        assert!(rows.iter().all(|r| r.len() == n * BYTES));
        let (q, d, s) = (x.q.as_ptr(), x.d.as_ptr(), x.s.as_ptr());
        let mut b = [std::ptr::null(); R];
        for (b, r) in b.iter_mut().zip(rows) {
            *b = r.as_ptr();
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut mins = [0f32; R];
        // Block `i` of every row into accumulator `parity` (a macro: written as a closure, the loop body was not
        // inlined and its intrinsics became calls, 6× slower).
        macro_rules! block {
            ($i:expr, $parity:expr) => {{
                let i = $i;
                let qv = _mm256_loadu_si256(q.add(i * BLOCK) as *const __m256i);
                let di = *d.add(i);
                for r in 0..R {
                    let b = b[r].add(i * BYTES);
                    let dm = f16_pair(b);
                    let scale = _mm256_set1_ps(_mm_cvtss_f32(dm) * di);
                    let a = &mut acc[r][$parity];
                    *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes(b, qv)), scale, *a);
                    if MIN {
                        let m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
                        mins[r] = m.mul_add(*s.add(i), mins[r]);
                    }
                }
            }};
        }
        for i in (0..n & !1).step_by(2) {
            block!(i, 0);
            block!(i + 1, 1);
        }
        if n % 2 == 1 {
            block!(n - 1, 0);
        }
        totals(acc, mins)
    }

    /// Each row's two accumulators summed lane-wise, then `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`,
    /// then its minimum sum added.
    #[inline(always)]
    unsafe fn totals<const R: usize>(acc: [[__m256; 2]; R], mins: [f32; R]) -> [f32; R] {
        let mut out = [0f32; R];
        for r in 0..R {
            let a = _mm256_add_ps(acc[r][0], acc[r][1]);
            // (a0 + a4, a1 + a5, a2 + a6, a3 + a7), then (t0 + t2, t1 + t3), then their sum.
            let t = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
            let u = _mm_add_ps(t, _mm_movehl_ps(t, t));
            let total = _mm_add_ss(u, _mm_shuffle_ps(u, u, 1));
            out[r] = _mm_cvtss_f32(total) + mins[r];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::QuantMatrix;
    use crate::rng::Rng;

    /// Every format with an integer dot product.
    const FORMATS: [GgmlType; 8] = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// A `[rows, k]` matrix of `ty`: quantized normal values, or for the formats with no quantizer here (Q5_0,
    /// Q5_1 and the K formats) random blocks with their f16 scale (and minimum) set to about 0.01.
    fn matrix(ty: GgmlType, rows: usize, k: usize, seed: u64) -> QuantMatrix {
        let scales = match ty {
            GgmlType::Q5_0 => [0, 0],
            GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => [0, 2],
            GgmlType::Q6_K => [208, 208],
            _ => return QuantMatrix::quantize(&values(rows * k, seed), rows, k, ty).unwrap(),
        };
        let (elements, bytes) = ty.block_layout().unwrap();
        let mut rng = Rng::new(seed);
        let mut data: Vec<u8> = (0..rows * k / elements * bytes)
            .map(|_| rng.below(256) as u8)
            .collect();
        for b in data.chunks_exact_mut(bytes) {
            b[scales[1]..][..2].copy_from_slice(&half::f16::from_f32(0.007).to_le_bytes());
            b[scales[0]..][..2].copy_from_slice(&half::f16::from_f32(0.011).to_le_bytes());
        }
        QuantMatrix::from_blocks(ty, rows, k, data).unwrap()
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| rng.normal() as f32 * 0.7).collect()
    }

    #[test]
    fn activations_round_to_the_nearest_step_of_their_block() {
        let mut x = values(64, 1);
        x[40..].fill(0.0);
        x[33] = -3.0;
        let row = Q8Row::quantize(&x);
        assert_eq!(row.d[1], 3.0 / 127.0);
        assert_eq!(row.q[33], -127);
        for (j, (&v, &q)) in x.iter().zip(&row.q).enumerate() {
            let d = row.d[j / BLOCK];
            assert!((v - q as f32 * d).abs() <= d / 2.0 * 1.0001, "element {j}");
        }
        let sum: i32 = row.q[32..].iter().map(|&q| q as i32).sum();
        assert_eq!(row.s[1], row.d[1] * sum as f32);
        let zeros = Q8Row::quantize(&[0.0; 32]);
        assert_eq!((zeros.d[0], zeros.s[0]), (0.0, 0.0));
        assert!(zeros.q.iter().all(|&q| q == 0));
    }

    #[test]
    fn a_non_finite_activation_makes_its_products_nan() {
        let mut x = values(64, 2);
        x[5] = f32::INFINITY;
        let w = QuantMatrix::quantize(&values(64, 3), 1, 64, GgmlType::Q8_0).unwrap();
        let row = Q8Row::quantize(&x);
        assert!(row.d[0].is_nan() && row.d[1].is_finite());
        assert!(dot(GgmlType::Q8_0, w.row(0), &row).is_nan());
    }

    #[test]
    fn the_simd_kernel_and_the_scalar_twin_give_the_same_bits() {
        for ty in FORMATS {
            for (k, seed) in [(256, 4), (768, 5), (1536, 7), (32, 8), (96, 9), (576, 6)] {
                if k % ty.block_layout().unwrap().0 != 0 {
                    continue;
                }
                let w = matrix(ty, 3, k, seed);
                let x = Q8Row::quantize(&values(k, seed + 100));
                for (r, row) in (0..3).map(|r| w.row(r)).enumerate() {
                    let simd = dot(ty, row, &x);
                    let twin = scalar::dot(ty, row, &x);
                    assert_eq!(simd.to_bits(), twin.to_bits(), "{ty} K {k} row {r}");
                }
            }
        }
    }

    #[test]
    fn rows_side_by_side_give_each_row_s_bits() {
        for ty in FORMATS {
            let k = 256;
            let w = matrix(ty, 2, k, 11);
            let x = Q8Row::quantize(&values(k, 12));
            let (a, b) = (w.row(0), w.row(1));
            let both = dots(ty, [a, b], &x);
            assert_eq!(
                both.map(f32::to_bits),
                [dot(ty, a, &x), dot(ty, b, &x)].map(f32::to_bits)
            );
            assert_eq!(both[1].to_bits(), scalar::dot(ty, b, &x).to_bits());
        }
    }

    #[test]
    fn extreme_bytes_do_not_saturate() {
        // Q8_0 weights of -128 (a byte the quantizer never writes, but a file may hold) against ±127.
        let mut block = vec![0u8; 34];
        block[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        block[2..].fill(0x80);
        let x = Q8Row::quantize(&[-1.0; 32]);
        let got = dot(GgmlType::Q8_0, &block, &x);
        assert!((got - 32.0 * 128.0).abs() < 1e-3, "{got}");
        assert_eq!(scalar::dot(GgmlType::Q8_0, &block, &x), got);
        // Q4_1 nibbles of 15 against 127 and -127.
        let mut block = vec![0xffu8; 20];
        block[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        block[2..4].copy_from_slice(&half::f16::from_f32(0.0).to_le_bytes());
        let x = Q8Row::quantize(&[1.0; 32]);
        let got = dot(GgmlType::Q4_1, &block, &x);
        assert!((got - 32.0 * 15.0 * 0.5).abs() < 1e-3, "{got}");
        let x = Q8Row::quantize(&[-1.0; 32]);
        assert!((dot(GgmlType::Q4_1, &block, &x) + 32.0 * 15.0 * 0.5).abs() < 1e-3);
        // Q5_0 values of 15 (every bit set) and -16 (none), Q5_1 values of 31, against ±127.
        for (ty, fill, value) in [
            (GgmlType::Q5_0, 0xff, 15.0),
            (GgmlType::Q5_0, 0x00, -16.0),
            (GgmlType::Q5_1, 0xff, 31.0),
        ] {
            let mut block = vec![fill; ty.block_layout().unwrap().1];
            block[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
            if ty == GgmlType::Q5_1 {
                block[2..4].copy_from_slice(&half::f16::from_f32(0.0).to_le_bytes());
            }
            for sign in [1.0, -1.0] {
                let x = Q8Row::quantize(&[sign; 32]);
                let got = dot(ty, &block, &x);
                assert!(
                    (got - sign * 32.0 * value * 0.5).abs() < 1e-3,
                    "{ty} {fill} {got}"
                );
                assert_eq!(scalar::dot(ty, &block, &x).to_bits(), got.to_bits());
            }
        }
    }

    #[test]
    fn the_product_is_the_f32_one_within_the_activations_rounding() {
        for ty in FORMATS {
            let k = 768;
            let w = matrix(ty, 8, k, 8);
            let dense = w.dequantize();
            let x = values(k, 9);
            let q = Q8Row::quantize(&x);
            for (r, row) in (0..8).map(|r| w.row(r)).enumerate() {
                let wr = &dense[r * k..(r + 1) * k];
                let exact: f64 = wr.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                // Each activation moves by at most half its block's step.
                let bound: f64 = wr
                    .iter()
                    .enumerate()
                    .map(|(j, &a)| (a as f64).abs() * q.d[j / BLOCK] as f64 / 2.0)
                    .sum();
                let got = dot(ty, row, &q) as f64;
                assert!(
                    (got - exact).abs() <= bound * 1.01 + 1e-5,
                    "{ty} row {r}: {got} vs {exact} (bound {bound})"
                );
            }
        }
    }
}
