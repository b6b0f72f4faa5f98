//! f32 products computed in bf16 on CPUs with AVX512-BF16: `C = alpha · A · B + beta · C` with A and B f32 (any
//! strides), each element rounded to bf16 (to nearest, ties to even) as it is packed, and `vdpbf16ps`
//! multiplying pairs of bf16 along the depth and accumulating in f32 — the recipe of the GPU's mixed precision
//! (the product itself is not rounded to bf16 here: it stays f32).
//!
//! Packed layout: depth goes in pairs (`kp = ⌈k/2⌉`, a zero pads an odd depth); an A micro-panel holds `MR`
//! rows as `[kp][MR]` 32-bit pairs `(A[i, 2p], A[i, 2p + 1])`, a B micro-panel `NR` columns as `[kp][NR]` pairs
//! `(B[2p, j], B[2p + 1, j])`. Per depth block of at most `KC` the B panels of `NC` columns are packed once
//! (in parallel) and the A panels of each row block of `MB` rows; tiles of `MR × NR` then run in parallel, each
//! over the whole block, and add its product to C (with beta on the first block). The micro-kernel (6 × 32, twelve zmm accumulators) issues per pair of depth steps two
//! loads of B, six broadcasts of A and twelve `vdpbf16ps`: 64 multiply-adds each.
//!
//! `kernel_portable` is the twin every CPU runs (and the tests compare against): the same packed panels, each
//! pair's two products summed in f32 and added to the accumulator.

use super::gemm::MatRef;
use rayon::prelude::*;

/// Rows of A per micro-panel.
pub const MR: usize = 6;
/// Columns of B per micro-panel.
pub const NR: usize = 32;
/// Depth of one packed block (256 pairs).
const KC: usize = 512;
/// Columns of B packed at once.
const NC: usize = 2048;
/// Rows of A packed at once (768 KiB of pairs at the deepest block, within the L2 cache).
const MB: usize = 768;

thread_local! {
    static PRODUCTS_IN_BF16: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the f32 GEMMs it calls on this thread computed in bf16 when `enabled` and [`available`]
/// (mixed precision on the CPU; off by default, so f32 products keep their bits).
pub fn with_products_in_bf16<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    let before = PRODUCTS_IN_BF16.with(|c| c.replace(enabled));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PRODUCTS_IN_BF16.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// Whether f32 GEMMs on this thread run here (see [`with_products_in_bf16`]).
pub fn products_in_bf16() -> bool {
    PRODUCTS_IN_BF16.with(|c| c.get()) && available()
}

/// Whether this CPU multiplies in bf16 (AVX512-BF16, within the `TAPEGRAD_SIMD` cap).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::simd::level() == super::simd::Level::Avx512
        && std::is_x86_feature_detected!("avx512bf16");
    #[allow(unreachable_code)]
    false
}

/// `x` rounded to bf16 (nearest, ties to even; NaN stays a quiet NaN), as its 16 bits.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// A pair of bf16 in one 32-bit word: `lo` the even depth step, `hi` the odd one.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(bf16_bits(lo)) | u32::from(bf16_bits(hi)) << 16
}

/// Packs `rows` lines of a matrix, each contiguous along the depth (`line(r)` its element `pc`), as `[⌈kc/2⌉]
/// [rows]` pairs at `panel`: 32 depth steps at a time through the AVX512-BF16 conversion when `fast`.
fn pack_depth_runs(
    line: impl Fn(usize) -> Option<*const f32>,
    rows: usize,
    kc: usize,
    fast: bool,
    panel: &mut [u32],
) {
    let kp = kc.div_ceil(2);
    for r in 0..rows {
        let Some(src) = line(r) else {
            for q in 0..kp {
                panel[q * rows + r] = 0;
            }
            continue;
        };
        let mut q = 0;
        #[cfg(target_arch = "x86_64")]
        if fast {
            let mut words = [0u32; 16];
            while 2 * q + 32 <= kc {
                // SAFETY: the features were detected (`fast`) and the line holds kc floats from `src`.
                unsafe { avx512::pairs_of_32(src.add(2 * q), &mut words) };
                for (w, &v) in words.iter().enumerate() {
                    panel[(q + w) * rows + r] = v;
                }
                q += 16;
            }
        }
        for q in q..kp {
            // SAFETY: the line holds kc floats from `src`.
            let at = |p: usize| if p < kc { unsafe { *src.add(p) } } else { 0.0 };
            panel[q * rows + r] = pair(at(2 * q), at(2 * q + 1));
        }
    }
}

/// Packs rows `i0..i0 + MR` (zero past `m`) and depth `pc..pc + kc` of A as one panel `[⌈kc/2⌉][MR]`.
fn pack_a(
    a: MatRef<'_, f32>,
    m: usize,
    i0: usize,
    pc: usize,
    kc: usize,
    fast: bool,
    panel: &mut [u32],
) {
    if a.col_stride == 1 {
        let line = |r: usize| {
            let i = i0 + r;
            (i < m).then(|| a.data[a.offset + i * a.row_stride + pc..][..kc].as_ptr())
        };
        pack_depth_runs(line, MR, kc, fast, panel);
        return;
    }
    pack_scalar(MR, kc, panel, |r, p| {
        let i = i0 + r;
        if i < m && p < kc {
            a.at(i, pc + p)
        } else {
            0.0
        }
    });
}

/// The scalar packing of `lanes` rows (A) or columns (B) as `[⌈kc/2⌉][lanes]` pairs, `value(lane, p)` the element
/// at depth `p` of the block (zero outside the matrix).
fn pack_scalar(lanes: usize, kc: usize, panel: &mut [u32], value: impl Fn(usize, usize) -> f32) {
    for (q, dst) in panel
        .chunks_exact_mut(lanes)
        .take(kc.div_ceil(2))
        .enumerate()
    {
        for (lane, d) in dst.iter_mut().enumerate() {
            *d = pair(value(lane, 2 * q), value(lane, 2 * q + 1));
        }
    }
}

/// Packs columns `j0..j0 + NR` (zero past `n`) and depth `pc..pc + kc` of B as one panel `[⌈kc/2⌉][NR]`.
fn pack_b(
    b: MatRef<'_, f32>,
    n: usize,
    j0: usize,
    pc: usize,
    kc: usize,
    fast: bool,
    panel: &mut [u32],
) {
    if b.row_stride == 1 && b.col_stride != 1 {
        // A weight read as Wᵀ: each column is a run of depth.
        let line = |c: usize| {
            let j = j0 + c;
            (j < n).then(|| b.data[b.offset + j * b.col_stride + pc..][..kc].as_ptr())
        };
        pack_depth_runs(line, NR, kc, fast, panel);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fast && b.col_stride == 1 && j0 + NR <= n {
        // Row-major: two depth rows of the panel's 32 columns make its 32 pairs.
        let row = |p: usize| b.data[b.offset + p * b.row_stride + j0..][..NR].as_ptr();
        let zero = [0.0f32; NR];
        for (q, dst) in panel.chunks_exact_mut(NR).enumerate() {
            let p = pc + 2 * q;
            let odd = if p + 1 < pc + kc {
                row(p + 1)
            } else {
                zero.as_ptr()
            };
            // SAFETY: the features were detected (`fast`) and both rows hold 32 floats.
            unsafe { avx512::interleave_rows(row(p), odd, dst) };
        }
        return;
    }
    pack_scalar(NR, kc, panel, |c, p| {
        let j = j0 + c;
        if j < n && p < kc {
            b.at(pc + p, j)
        } else {
            0.0
        }
    });
}

/// The f32 value of bf16 bits.
#[inline(always)]
fn widen(bits: u32) -> f32 {
    f32::from_bits(bits << 16)
}

/// `acc[i · NR + j] += Σ_q a[q][i] · b[q][j]` over `kp` pairs, the portable twin of the AVX512-BF16 kernel.
pub fn kernel_portable(kp: usize, a: &[u32], b: &[u32], acc: &mut [f32; MR * NR]) {
    for q in 0..kp {
        let (a, b) = (&a[q * MR..][..MR], &b[q * NR..][..NR]);
        for i in 0..MR {
            let (a0, a1) = (widen(a[i] & 0xffff), widen(a[i] >> 16));
            for j in 0..NR {
                let (b0, b1) = (widen(b[j] & 0xffff), widen(b[j] >> 16));
                acc[i * NR + j] += a0 * b0 + a1 * b1;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// The 32 floats at `src` as 16 bf16 pairs (rounded to nearest even).
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX512-BF16; `src` must hold 32 floats.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn pairs_of_32(src: *const f32, out: &mut [u32; 16]) {
        let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src.add(16)), _mm512_loadu_ps(src));
        _mm512_storeu_si512(
            out.as_mut_ptr() as *mut __m512i,
            std::mem::transmute::<__m512bh, __m512i>(v),
        );
    }

    /// `out[j] = (even[j], odd[j])` as bf16 pairs for the 32 columns `j`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, AVX512-BW and AVX512-BF16; `even` and `odd` must hold 32 floats, `out`
    /// 32 words.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn interleave_rows(even: *const f32, odd: *const f32, out: &mut [u32]) {
        assert!(out.len() >= NR);
        let e: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(
            _mm512_loadu_ps(even.add(16)),
            _mm512_loadu_ps(even),
        ));
        let o: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(
            _mm512_loadu_ps(odd.add(16)),
            _mm512_loadu_ps(odd),
        ));
        // 16-bit lanes: index < 32 takes `e`, ≥ 32 takes `o`; pairs (e[j], o[j]).
        let lo: [u16; 32] =
            std::array::from_fn(|x| (x / 2) as u16 + if x % 2 == 1 { 32 } else { 0 });
        let hi: [u16; 32] = std::array::from_fn(|x| lo[x] + 16);
        let lo = _mm512_loadu_si512(lo.as_ptr() as *const __m512i);
        let hi = _mm512_loadu_si512(hi.as_ptr() as *const __m512i);
        let p = out.as_mut_ptr() as *mut __m512i;
        _mm512_storeu_si512(p, _mm512_permutex2var_epi16(e, lo, o));
        _mm512_storeu_si512(p.add(1), _mm512_permutex2var_epi16(e, hi, o));
    }

    /// As [`super::kernel_portable`] with `vdpbf16ps`: `acc` (row-major `MR × NR`) `+= A · B` over `kp` pairs.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX512-BF16; `a` must hold `kp · MR` and `b` `kp · NR` words.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn kernel(kp: usize, a: *const u32, b: *const u32, acc: &mut [f32; MR * NR]) {
        let mut c = [_mm512_setzero_ps(); 2 * MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kp {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b as *const __m512i));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(16) as *const __m512i));
            for i in 0..MR {
                let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(i) as i32));
                c[2 * i] = _mm512_dpbf16_ps(c[2 * i], ai, b0);
                c[2 * i + 1] = _mm512_dpbf16_ps(c[2 * i + 1], ai, b1);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        for (i, row) in acc.chunks_exact_mut(NR).enumerate() {
            let p = row.as_mut_ptr();
            _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), c[2 * i]));
            _mm512_storeu_ps(
                p.add(16),
                _mm512_add_ps(_mm512_loadu_ps(p.add(16)), c[2 * i + 1]),
            );
        }
    }
}

/// One tile's accumulation through the fastest kernel this CPU runs (`fast` = AVX512-BF16 detected).
#[inline]
fn accumulate(fast: bool, kp: usize, a: &[u32], b: &[u32], acc: &mut [f32; MR * NR]) {
    assert!(a.len() >= kp * MR && b.len() >= kp * NR);
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: the features were detected and the panels hold kp pairs (checked above).
        unsafe { avx512::kernel(kp, a.as_ptr(), b.as_ptr(), acc) };
        return;
    }
    let _ = fast;
    kernel_portable(kp, a, b, acc);
}

/// `C = alpha · A · B + beta · C` with `A: [m × k]`, `B: [k × n]` (any strides, rounded to bf16) and `C: [m × n]`
/// row-major with row stride `ldc`, accumulated in f32. With `beta == 0` C is only written. `fast` picks the
/// AVX512-BF16 kernel (callers pass [`available`]; the tests pass `false` too).
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    fast: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    super::gemm::check_c("gemm_bf16", m, n, c.len(), ldc);
    let out = super::gemm_panels::SharedOut(c.as_mut_ptr());
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let jp = nc.div_ceil(NR);
        for ic in (0..m).step_by(MB) {
            let mb = MB.min(m - ic);
            let ip = mb.div_ceil(MR);
            for pc in (0..k.max(1)).step_by(KC) {
                let kc = KC.min(k - pc.min(k));
                let kp = kc.div_ceil(2);
                let mut pb = vec![0u32; jp * kp * NR];
                pb.par_chunks_mut((kp * NR).max(1))
                    .enumerate()
                    .for_each(|(j, panel)| pack_b(b, n, jc + j * NR, pc, kc, fast, panel));
                let mut pa = vec![0u32; ip * kp * MR];
                pa.par_chunks_mut((kp * MR).max(1))
                    .enumerate()
                    .for_each(|(i, panel)| pack_a(a, m, ic + i * MR, pc, kc, fast, panel));
                // Each block's product lands in C: with beta on the first block, added to it after.
                let beta_now = if pc == 0 { beta } else { 1.0 };
                // Neighbouring tasks share a B panel (32 KiB) and walk the A panels.
                (0..ip * jp).into_par_iter().for_each(|t| {
                    let (i, j) = (t % ip, t / ip);
                    let mut acc = [0.0f32; MR * NR];
                    accumulate(
                        fast,
                        kp,
                        &pa[i * kp * MR..][..kp * MR],
                        &pb[j * kp * NR..][..kp * NR],
                        &mut acc,
                    );
                    let (i0, j0) = (ic + i * MR, jc + j * NR);
                    let (mr, nr) = (MR.min(m - i0), NR.min(n - j0));
                    super::simd::vectorized(|| {
                        for (r, acc) in acc.chunks_exact(NR).take(mr).enumerate() {
                            // SAFETY: rows i0..i0+mr, columns j0..j0+nr of C belong to this tile only and lie
                            // inside C (checked by the assert at the top).
                            let row = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out.ptr().add((i0 + r) * ldc + j0),
                                    nr,
                                )
                            };
                            if beta_now == 0.0 {
                                for (o, &v) in row.iter_mut().zip(acc) {
                                    *o = alpha * v;
                                }
                            } else {
                                for (o, &v) in row.iter_mut().zip(acc) {
                                    *o = alpha * v + beta_now * *o;
                                }
                            }
                        }
                    })
                });
                if k == 0 {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn view(data: &[f32], row_stride: usize, col_stride: usize) -> MatRef<'_, f32> {
        MatRef {
            data,
            offset: 0,
            row_stride,
            col_stride,
        }
    }

    /// `C = A · B` in f64 over the bf16-rounded inputs.
    fn reference(m: usize, n: usize, k: usize, a: MatRef<f32>, b: MatRef<f32>) -> Vec<f64> {
        let r = |x: f32| f64::from(widen(u32::from(bf16_bits(x))));
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| r(a.at(i, p)) * r(b.at(p, j))).sum();
            }
        }
        c
    }

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert!(widen(u32::from(bf16_bits(f32::NAN))).is_nan());
    }

    #[test]
    fn products_match_the_rounded_inputs_in_f64_on_both_kernels() {
        let mut rng = Rng::new(11);
        // Edges of every kind: odd depth, depth past one block, tails of panels, one row, transposed operands.
        for (m, n, k) in [
            (1, 1, 1),
            (7, 33, 5),
            (13, 70, 513),
            (6, 32, 1030),
            (25, 9, 64),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
            for transposed in [false, true] {
                let (av, bv) = if transposed {
                    (view(&a, 1, m), view(&b, 1, k))
                } else {
                    (view(&a, k, 1), view(&b, n, 1))
                };
                let want = reference(m, n, k, av, bv);
                for fast in [false, available()] {
                    let ldc = n + 3;
                    let mut c = vec![f32::NAN; m * ldc];
                    gemm_bf16(m, n, k, 1.0, av, bv, 0.0, &mut c, ldc, fast);
                    for i in 0..m {
                        for j in 0..n {
                            let (got, want) = (f64::from(c[i * ldc + j]), want[i * n + j]);
                            // f32 accumulation of k exact products: k · 2^-24 relative to Σ|terms| ≤ k · 10.
                            let tol = (k as f64) * 6e-8 * 10.0;
                            assert!(
                                (got - want).abs() <= tol,
                                "{m}x{n}x{k} fast {fast}: {got} vs {want}"
                            );
                        }
                    }
                    // alpha and beta: C = 2 · A · B − C.
                    let before = c.clone();
                    gemm_bf16(m, n, k, 2.0, av, bv, -1.0, &mut c, ldc, fast);
                    for i in 0..m {
                        for j in 0..n {
                            let x = i * ldc + j;
                            assert!((c[x] - before[x]).abs() <= 1e-3 * (1.0 + before[x].abs()));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn vector_packing_rounds_as_the_scalar_packing() {
        if !available() {
            eprintln!(
                "skipped: this CPU has no AVX512-BF16 (the scalar packing is what runs here)"
            );
            return;
        }
        let mut rng = Rng::new(13);
        let (rows, k) = (40, 75);
        // Values that round both ways and ties, from a wide range of magnitudes.
        let x: Vec<f32> = (0..rows * k)
            .map(|i| {
                let v = rng.normal() as f32 * 2f32.powi((i % 9) as i32 - 4);
                if i % 7 == 0 {
                    f32::from_bits(v.to_bits() & !0xffff | 0x8000)
                } else {
                    v
                }
            })
            .collect();
        for (pc, kc) in [(0usize, 75usize), (3, 64), (10, 33)] {
            let kp = kc.div_ceil(2);
            let a = view(&x, k, 1);
            let (mut fast, mut slow) = (vec![0; kp * MR], vec![0; kp * MR]);
            pack_a(a, rows, 5, pc, kc, true, &mut fast);
            pack_a(a, rows, 5, pc, kc, false, &mut slow);
            assert_eq!(fast, slow, "A rows, depth {pc}+{kc}");
            let (mut fast, mut slow) = (vec![0; kp * NR], vec![0; kp * NR]);
            // The same data as Wᵀ (columns are runs of depth) and as a row-major B of 40 columns.
            pack_b(view(&x, 1, k), rows, 4, pc, kc, true, &mut fast);
            pack_b(view(&x, 1, k), rows, 4, pc, kc, false, &mut slow);
            assert_eq!(fast, slow, "B transposed, depth {pc}+{kc}");
            let b = view(&x[..kc.max(pc + kc) * rows], rows, 1);
            pack_b(b, rows, 8, pc, kc, true, &mut fast);
            pack_b(b, rows, 8, pc, kc, false, &mut slow);
            assert_eq!(fast, slow, "B row-major, depth {pc}+{kc}");
        }
    }

    #[test]
    fn the_f32_gemm_runs_in_bf16_only_inside_the_scope() {
        let mut rng = Rng::new(14);
        let (m, n, k) = (9, 40, 70);
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
        let (av, bv) = (view(&a, k, 1), view(&b, n, 1));
        let run = |in_bf16: bool| {
            let mut c = vec![0.0f32; m * n];
            with_products_in_bf16(in_bf16, || {
                super::super::gemm::gemm(m, n, k, 1.0, av, bv, 0.0, &mut c, n)
            });
            c
        };
        let mut direct = vec![0.0f32; m * n];
        gemm_bf16(m, n, k, 1.0, av, bv, 0.0, &mut direct, n, available());
        let (f32s, bf16s) = (run(false), run(true));
        if available() {
            assert_eq!(
                bf16s, direct,
                "inside the scope the f32 entry is the bf16 product"
            );
            assert_ne!(f32s, direct, "outside it the product keeps f32 operands");
        } else {
            assert_eq!(bf16s, f32s, "without AVX512-BF16 the flag changes nothing");
        }
        assert!(!products_in_bf16(), "the scope restores the flag");
    }

    #[test]
    fn the_avx512_kernel_matches_its_twin() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512-BF16 (the portable twin is what runs here)");
            return;
        }
        let mut rng = Rng::new(12);
        let kp = 37;
        let a: Vec<u32> = (0..kp * MR)
            .map(|_| pair(rng.normal() as f32, rng.normal() as f32))
            .collect();
        let b: Vec<u32> = (0..kp * NR)
            .map(|_| pair(rng.normal() as f32, rng.normal() as f32))
            .collect();
        let (mut fast, mut twin) = ([0.5f32; MR * NR], [0.5f32; MR * NR]);
        accumulate(true, kp, &a, &b, &mut fast);
        kernel_portable(kp, &a, &b, &mut twin);
        for (f, t) in fast.iter().zip(&twin) {
            assert!((f - t).abs() <= 1e-4 * (1.0 + t.abs()), "{f} vs {t}");
        }
    }
}
