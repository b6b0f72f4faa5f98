//! Dequantization of ggml tensor blocks to `f32`: the plain types (F32, F16, BF16, F64, I8–I64) and the block
//! quantizations Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q4_K, Q5_K and Q6_K, each a kernel over whole blocks as
//! ggml lays them out, checked against hand-built blocks.

use half::{bf16, f16};
use rayon::prelude::*;

use super::gguf::GgmlType;

/// A block dequantizer: reads whole blocks from the first slice, writes their elements to the second.
pub(crate) type Kernel = fn(&[u8], &mut [f32]);

/// Tensors with at least this many elements are dequantized in parallel.
pub(crate) const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;
/// Elements per parallel work item when dequantizing.
const PARALLEL_CHUNK_ELEMENTS: usize = 1 << 14;

/// Runs `kernel` over `src` to produce `n` floats, in parallel for large tensors. `src` holds exactly the
/// blocks for `n` elements (checked when the file was opened).
pub(crate) fn dequantize(kernel: Kernel, ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let (block, block_bytes) = ty.block_layout().unwrap_or((1, 4));
    let mut out = vec![0f32; n];
    if n >= PARALLEL_MIN_ELEMENTS {
        let blocks = (PARALLEL_CHUNK_ELEMENTS / block).max(1);
        out.par_chunks_mut(blocks * block)
            .zip(src.par_chunks(blocks * block_bytes))
            .for_each(|(dst, src)| kernel(src, dst));
    } else {
        kernel(src, &mut out);
    }
    out
}

#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// A block's `N` bytes as an array, so the loops over it carry no bounds checks (and vectorize).
#[inline(always)]
fn block<const N: usize>(b: &[u8]) -> &[u8; N] {
    b.try_into().expect("a whole block")
}

/// A block's `N` outputs as an array (see [`block`]).
#[inline(always)]
fn block_mut<const N: usize>(y: &mut [f32]) -> &mut [f32; N] {
    y.try_into().expect("a whole block")
}

/// Plain little-endian elements of `N` bytes each, converted one by one.
pub(crate) fn dequant_plain<const N: usize>(
    src: &[u8],
    dst: &mut [f32],
    convert: impl Fn([u8; N]) -> f32,
) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(N)) {
        *d = convert(s.try_into().expect("chunks_exact yields N bytes"));
    }
}

/// F32: little-endian IEEE floats.
pub(crate) fn dequant_f32(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, f32::from_le_bytes)
}

/// F16: little-endian IEEE half floats.
pub(crate) fn dequant_f16(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| f16::from_le_bytes(b).to_f32())
}

/// BF16: little-endian bfloat16.
pub(crate) fn dequant_bf16(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| bf16::from_le_bytes(b).to_f32())
}

/// F64: little-endian doubles, rounded to f32.
pub(crate) fn dequant_f64(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| f64::from_le_bytes(b) as f32)
}

/// I8: signed bytes.
pub(crate) fn dequant_i8(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b: [u8; 1]| f32::from(b[0] as i8))
}

/// I16: little-endian signed 16-bit integers.
pub(crate) fn dequant_i16(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| f32::from(i16::from_le_bytes(b)))
}

/// I32: little-endian signed 32-bit integers (rounded to f32).
pub(crate) fn dequant_i32(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| i32::from_le_bytes(b) as f32)
}

/// I64: little-endian signed 64-bit integers (rounded to f32).
pub(crate) fn dequant_i64(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| i64::from_le_bytes(b) as f32)
}

/// Q8_0: blocks of 32 = f16 scale `d`, 32 × i8 `q`; `x = d·q`.
#[inline(always)]
pub(crate) fn dequant_q8_0(src: &[u8], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::quant_avx2::available() {
        // SAFETY: the CPU has AVX2, and `src` holds whole blocks for `dst` as this kernel requires.
        return unsafe { super::quant_avx2::dequant_q8_0(src, dst) };
    }
    scalar_q8_0(src, dst)
}

/// The scalar kernel of [`dequant_q8_0`] (and the reference its AVX2 twin is tested against).
#[inline(always)]
pub(crate) fn scalar_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let (q, y): (&[u8; 32], &mut [f32; 32]) = (block(&b[2..34]), block_mut(y));
        for (y, &q) in y.iter_mut().zip(q) {
            *y = d * f32::from(q as i8);
        }
    }
}

/// Q8_1: blocks of 32 = f16 scale `d`, f16 `s` (= d·Σq, unused here), 32 × i8 `q`; `x = d·q`.
pub(crate) fn dequant_q8_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(36).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        for (y, &q) in y.iter_mut().zip(&b[4..36]) {
            *y = d * f32::from(q as i8);
        }
    }
}

/// Q4_0: blocks of 32 = f16 `d`, 16 bytes of nibbles (low nibbles are elements 0..16, high nibbles 16..32);
/// `x = d·(q − 8)`.
#[inline(always)]
pub(crate) fn dequant_q4_0(src: &[u8], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::quant_avx2::available() {
        // SAFETY: the CPU has AVX2, and `src` holds whole blocks for `dst` as this kernel requires.
        return unsafe { super::quant_avx2::dequant_q4_0(src, dst) };
    }
    scalar_q4_0(src, dst)
}

/// The scalar kernel of [`dequant_q4_0`] (and the reference its AVX2 twin is tested against).
#[inline(always)]
pub(crate) fn scalar_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let (q, y): (&[u8; 16], &mut [f32; 32]) = (block(&b[2..18]), block_mut(y));
        let (lo, hi) = y.split_at_mut(16);
        for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
            *lo = d * (f32::from(q & 0x0f) - 8.0);
            *hi = d * (f32::from(q >> 4) - 8.0);
        }
    }
}

/// Q4_1: blocks of 32 = f16 `d`, f16 `m`, 16 bytes of nibbles laid out as in Q4_0; `x = d·q + m`.
#[inline(always)]
pub(crate) fn dequant_q4_1(src: &[u8], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::quant_avx2::available() {
        // SAFETY: the CPU has AVX2, and `src` holds whole blocks for `dst` as this kernel requires.
        return unsafe { super::quant_avx2::dequant_q4_1(src, dst) };
    }
    scalar_q4_1(src, dst)
}

/// The scalar kernel of [`dequant_q4_1`] (and the reference its AVX2 twin is tested against).
#[inline(always)]
pub(crate) fn scalar_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let (q, y): (&[u8; 16], &mut [f32; 32]) = (block(&b[4..20]), block_mut(y));
        let (lo, hi) = y.split_at_mut(16);
        for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
            *lo = d * f32::from(q & 0x0f) + m;
            *hi = d * f32::from(q >> 4) + m;
        }
    }
}

/// Q5_0: blocks of 32 = f16 `d`, u32 `qh` (bit j is the fifth bit of element j), 16 bytes of nibbles laid out
/// as in Q4_0; `x = d·(q − 16)`.
#[inline(always)]
pub(crate) fn dequant_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(22).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let (lo, hi) = y.split_at_mut(16);
        for (j, &q) in b[6..22].iter().enumerate() {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            lo[j] = d * ((u32::from(q & 0x0f) | h0) as f32 - 16.0);
            hi[j] = d * ((u32::from(q >> 4) | h1) as f32 - 16.0);
        }
    }
}

/// Q5_1: blocks of 32 = f16 `d`, f16 `m`, u32 `qh`, 16 bytes of nibbles, as Q5_0; `x = d·q + m`.
#[inline(always)]
pub(crate) fn dequant_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(24).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let (lo, hi) = y.split_at_mut(16);
        for (j, &q) in b[8..24].iter().enumerate() {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            lo[j] = d * (u32::from(q & 0x0f) | h0) as f32 + m;
            hi[j] = d * (u32::from(q >> 4) | h1) as f32 + m;
        }
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) packed in the 12 scale bytes of Q4_K / Q5_K.
#[inline(always)]
pub(crate) fn k_scale_min(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

/// Q4_K: super-blocks of 256 = f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles.
/// Each 64 elements use 32 bytes: low nibbles with sub-block 2i, high nibbles with 2i+1;
/// `x = d·sc·q − dmin·m`.
#[inline(always)]
pub(crate) fn dequant_q4_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(144).zip(dst.chunks_exact_mut(256)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        let qs = &b[16..144];
        for (i, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = k_scale_min(2 * i, scales);
            let (sc2, m2) = k_scale_min(2 * i + 1, scales);
            let (d1, m1) = (d * sc1, dmin * m1);
            let (d2, m2) = (d * sc2, dmin * m2);
            let (q, y): (&[u8; 32], &mut [f32; 64]) = (block(q), block_mut(y));
            let (lo, hi) = y.split_at_mut(32);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
                *lo = d1 * f32::from(q & 0x0f) - m1;
                *hi = d2 * f32::from(q >> 4) - m2;
            }
        }
    }
}

/// Q5_K: super-blocks of 256 = f16 `d`, f16 `dmin`, 12 scale bytes, 32 bytes `qh`, 128 bytes of nibbles; as
/// Q4_K, with the fifth bit of element l of 64-group i in bit 2i (low half) or 2i+1 (high half) of `qh[l]`.
#[inline(always)]
pub(crate) fn dequant_q5_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(176).zip(dst.chunks_exact_mut(256)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let qs = &b[48..176];
        for (i, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = k_scale_min(2 * i, scales);
            let (sc2, m2) = k_scale_min(2 * i + 1, scales);
            let (d1, m1) = (d * sc1, dmin * m1);
            let (d2, m2) = (d * sc2, dmin * m2);
            let (lo, hi) = y.split_at_mut(32);
            for l in 0..32 {
                let h1 = ((qh[l] >> (2 * i)) & 1) << 4;
                let h2 = ((qh[l] >> (2 * i + 1)) & 1) << 4;
                lo[l] = d1 * f32::from((q[l] & 0x0f) | h1) - m1;
                hi[l] = d2 * f32::from((q[l] >> 4) | h2) - m2;
            }
        }
    }
}

/// Q6_K: super-blocks of 256 = 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2 bits), 16 × i8 scales,
/// f16 `d`; `x = d·scale·(q − 32)`, in two halves of 128 elements.
#[inline(always)]
pub(crate) fn dequant_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(210).zip(dst.chunks_exact_mut(256)) {
        let d = f16_at(b, 208);
        for half in 0..2 {
            let ql = &b[half * 64..half * 64 + 64];
            let qh = &b[128 + half * 32..128 + half * 32 + 32];
            let sc = &b[192 + half * 8..192 + half * 8 + 8];
            let y = &mut y[half * 128..half * 128 + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = i32::from((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32;
                let q2 = i32::from((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                let s = |k: usize| d * f32::from(sc[is + k] as i8);
                y[l] = s(0) * q1 as f32;
                y[l + 32] = s(2) * q2 as f32;
                y[l + 64] = s(4) * q3 as f32;
                y[l + 96] = s(6) * q4 as f32;
            }
        }
    }
}

#[cfg(test)]
// Reference checks index element by element on purpose, mirroring the format descriptions.
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;
    use crate::io::gguf::tests::{
        f32_bytes, h, pack_nibbles, q4_0_block, q4_1_block, q8_0_block, run,
    };

    #[test]
    fn dequant_plain_types() {
        let xs = [1.5f32, -2.0, 0.0, 3.25e-3];
        assert_eq!(run(dequant_f32, &f32_bytes(&xs), 4), xs);
        let f16s: Vec<u8> = xs.iter().flat_map(|&x| h(x)).collect();
        let back = run(dequant_f16, &f16s, 4);
        for (a, b) in back.iter().zip(xs) {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(1e-3));
        }
        let bf: Vec<u8> = [1.5f32, -2.0, 0.0, 256.0]
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(run(dequant_bf16, &bf, 4), [1.5, -2.0, 0.0, 256.0]);
        let f64s: Vec<u8> = [0.5f64, -7.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(run(dequant_f64, &f64s, 2), [0.5, -7.0]);
        assert_eq!(run(dequant_i8, &[0xff, 5], 2), [-1.0, 5.0]);
        assert_eq!(run(dequant_i16, &(-300i16).to_le_bytes(), 1), [-300.0]);
        assert_eq!(run(dequant_i32, &(70000i32).to_le_bytes(), 1), [70000.0]);
        assert_eq!(run(dequant_i64, &(-9i64).to_le_bytes(), 1), [-9.0]);
    }

    #[test]
    fn dequant_q8_0_block() {
        let q: Vec<i8> = (0..32).map(|j| (j * 7 - 100) as i8).collect();
        let mut src = q8_0_block(0.5, &q);
        src.extend(q8_0_block(-2.0, &q));
        let out = run(dequant_q8_0, &src, 64);
        for j in 0..32 {
            assert_eq!(out[j], 0.5 * f32::from(q[j]));
            assert_eq!(out[32 + j], -2.0 * f32::from(q[j]));
        }
    }

    #[test]
    fn dequant_q8_1_block() {
        let q: Vec<i8> = (0..32).map(|j| (j * 5 - 80) as i8).collect();
        let mut src = h(0.25).to_vec();
        src.extend(h(123.0));
        src.extend(q.iter().map(|&x| x as u8));
        let out = run(dequant_q8_1, &src, 32);
        for j in 0..32 {
            assert_eq!(out[j], 0.25 * f32::from(q[j]));
        }
    }

    #[test]
    fn dequant_q4_0_block() {
        let q: Vec<u8> = (0..32).map(|j| ((j * 5) % 16) as u8).collect();
        let src = q4_0_block(0.25, &q);
        assert_eq!(src.len(), 18);
        let out = run(dequant_q4_0, &src, 32);
        for j in 0..32 {
            assert_eq!(out[j], 0.25 * (f32::from(q[j]) - 8.0), "element {j}");
        }
    }

    #[test]
    fn dequant_q4_1_block() {
        let q: Vec<u8> = (0..32).map(|j| ((j * 3 + 1) % 16) as u8).collect();
        let src = q4_1_block(0.5, -1.0, &q);
        assert_eq!(src.len(), 20);
        let out = run(dequant_q4_1, &src, 32);
        for j in 0..32 {
            assert_eq!(out[j], 0.5 * f32::from(q[j]) - 1.0, "element {j}");
        }
    }

    fn q5_qh(q: &[u8]) -> [u8; 4] {
        let mut qh = 0u32;
        for (j, &x) in q.iter().enumerate() {
            qh |= u32::from(x >> 4) << j;
        }
        qh.to_le_bytes()
    }

    #[test]
    fn dequant_q5_blocks() {
        let q: Vec<u8> = (0..32).map(|j| ((j * 11 + 3) % 32) as u8).collect();
        let nibbles: Vec<u8> = q.iter().map(|x| x & 15).collect();
        let mut src = h(0.5).to_vec();
        src.extend(q5_qh(&q));
        src.extend(pack_nibbles(&nibbles));
        let out = run(dequant_q5_0, &src, 32);
        for j in 0..32 {
            assert_eq!(out[j], 0.5 * (f32::from(q[j]) - 16.0), "q5_0 element {j}");
        }
        let mut src = h(0.25).to_vec();
        src.extend(h(2.0));
        src.extend(q5_qh(&q));
        src.extend(pack_nibbles(&nibbles));
        let out = run(dequant_q5_1, &src, 32);
        for j in 0..32 {
            assert_eq!(out[j], 0.25 * f32::from(q[j]) + 2.0, "q5_1 element {j}");
        }
    }

    /// Packs eight 6-bit scales and mins into the 12-byte K-quant layout.
    fn pack_k_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
        }
        s
    }

    /// Sub-block (of 32) and byte position of element `e` of a Q4_K / Q5_K super-block, and whether it is the
    /// high nibble.
    fn k_position(e: usize) -> (usize, usize, bool) {
        let group = e / 64;
        let high = e % 64 >= 32;
        (2 * group + usize::from(high), 32 * group + e % 32, high)
    }

    #[test]
    fn dequant_q4_k_block() {
        let sc = [1u8, 63, 17, 32, 5, 48, 60, 33];
        let m = [0u8, 62, 31, 16, 47, 2, 63, 20];
        let q: Vec<u8> = (0..256).map(|e| ((e * 7 + e / 16) % 16) as u8).collect();
        let mut qs = [0u8; 128];
        for e in 0..256 {
            let (_, byte, high) = k_position(e);
            qs[byte] |= if high { q[e] << 4 } else { q[e] };
        }
        let mut src = h(0.5).to_vec();
        src.extend(h(0.125));
        src.extend(pack_k_scales(&sc, &m));
        src.extend(qs);
        assert_eq!(src.len(), 144);
        let out = run(dequant_q4_k, &src, 256);
        for e in 0..256 {
            let (sub, _, _) = k_position(e);
            let want = 0.5 * f32::from(sc[sub]) * f32::from(q[e]) - 0.125 * f32::from(m[sub]);
            assert_eq!(out[e], want, "element {e}");
        }
    }

    #[test]
    fn dequant_q5_k_block() {
        let sc = [3u8, 9, 63, 0, 40, 41, 12, 7];
        let m = [5u8, 1, 0, 63, 22, 33, 44, 55];
        let q: Vec<u8> = (0..256).map(|e| ((e * 13 + e / 8) % 32) as u8).collect();
        let mut qs = [0u8; 128];
        let mut qh = [0u8; 32];
        for e in 0..256 {
            let (sub, byte, high) = k_position(e);
            let nib = q[e] & 15;
            qs[byte] |= if high { nib << 4 } else { nib };
            qh[e % 32] |= (q[e] >> 4) << sub;
        }
        let mut src = h(0.25).to_vec();
        src.extend(h(0.5));
        src.extend(pack_k_scales(&sc, &m));
        src.extend(qh);
        src.extend(qs);
        assert_eq!(src.len(), 176);
        let out = run(dequant_q5_k, &src, 256);
        for e in 0..256 {
            let (sub, _, _) = k_position(e);
            let want = 0.25 * f32::from(sc[sub]) * f32::from(q[e]) - 0.5 * f32::from(m[sub]);
            assert_eq!(out[e], want, "element {e}");
        }
    }

    #[test]
    fn dequant_q6_k_block() {
        let scales: Vec<i8> = (0..16).map(|i| (i * 9 - 70) as i8).collect();
        let q: Vec<u8> = (0..256).map(|e| ((e * 29 + 5) % 64) as u8).collect();
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for e in 0..256 {
            let (half, r) = (e / 128, e % 128);
            let (quarter, l) = (r / 32, r % 32);
            let lo_byte = half * 64 + l + if quarter % 2 == 1 { 32 } else { 0 };
            let nib = q[e] & 15;
            ql[lo_byte] |= if quarter >= 2 { nib << 4 } else { nib };
            qh[half * 32 + l] |= (q[e] >> 4) << (2 * quarter);
        }
        let mut src = ql.to_vec();
        src.extend(qh);
        src.extend(scales.iter().map(|&s| s as u8));
        src.extend(h(0.5));
        assert_eq!(src.len(), 210);
        let out = run(dequant_q6_k, &src, 256);
        for e in 0..256 {
            let (half, r) = (e / 128, e % 128);
            let (quarter, l) = (r / 32, r % 32);
            let s = scales[half * 8 + l / 16 + 2 * quarter];
            let want = 0.5 * f32::from(s) * (f32::from(q[e]) - 32.0);
            assert_eq!(out[e], want, "element {e}");
        }
    }
}
