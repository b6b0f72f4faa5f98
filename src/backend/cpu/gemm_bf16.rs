//! f32 products computed in bf16 on CPUs with AVX512-BF16: `C = alpha · A · B + beta · C` with A and B f32 (any
//! strides), each element rounded to bf16 (to nearest, ties to even) as it is packed, and `vdpbf16ps`
//! multiplying pairs of bf16 along the depth and accumulating in f32 — the recipe of the GPU's mixed precision
//! (the product itself is not rounded to bf16 here: it stays f32).
//!
//! [`Bf16Pairs`] is a packing format of the GEMM's driver (`gemm::drive`: the same lazily packed panels, tiles
//! and parallel phases as the f32 product). Depth goes in pairs (`kp = ⌈kc/2⌉` per block, a zero pads an odd
//! depth); an A micro-panel holds `MR` rows as `[kp][MR]` 32-bit pairs `(A[i, 2p], A[i, 2p + 1])`, a B
//! micro-panel `NR` columns as `[kp][NR]` pairs `(B[2p, j], B[2p + 1, j])`. The micro-kernel (6 × 32, twelve zmm
//! accumulators) issues per pair of depth steps two loads of B, six broadcasts of A and twelve `vdpbf16ps`:
//! 384 multiply-adds; full tiles are written to C from the registers.
//!
//! The vector conversions (`vcvtne2ps2bf16`) flush subnormal f32 to zero where the scalar rounding keeps them
//! as subnormal bf16; `vdpbf16ps` treats subnormal inputs as zero, so the products are the same either way.
//!
//! `kernel_portable` is the twin every CPU runs (and the tests compare against): the same packed panels, each
//! pair's two products summed in f32 and added to the accumulator.

use super::gemm::{drive, MatRef, Packing, Product};

/// Rows of A per micro-panel: the driver's.
pub use super::gemm::MR;
/// Columns of B per micro-panel.
pub const NR: usize = 32;

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
        && std::is_x86_feature_detected!("avx512bf16")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512bw");
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

/// Packs rows `i0..i0 + count · MR` (zero past `m`) and depth `pc..pc + kc` of A as `count` panels
/// `[⌈kc/2⌉][MR]`, `stride` words apart.
#[allow(clippy::too_many_arguments)]
fn pack_a(
    a: MatRef<'_, f32>,
    m: usize,
    i0: usize,
    pc: usize,
    kc: usize,
    fast: bool,
    count: usize,
    panels: &mut [u32],
    stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if fast && a.col_stride != 1 && a.row_stride == 1 {
        return pack_a_steps(a, m, i0, pc, kc, count, panels, stride);
    }
    for (g, panel) in panels.chunks_mut(stride).take(count).enumerate() {
        let i0 = i0 + g * MR;
        if a.col_stride == 1 {
            let line = |r: usize| {
                let i = i0 + r;
                (i < m).then(|| a.data[a.offset + i * a.row_stride + pc..][..kc].as_ptr())
            };
            pack_depth_runs(line, MR, kc, fast, panel);
            continue;
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
}

/// Panels of a transposed A (the output gradient of a weight gradient: each depth step is a run of rows), as
/// [`pack_a`] packs them: `count` panels from row `i0`, `stride` words apart, up to five at a time (30 rows
/// of each depth step read in one pass). Consecutive steps lie a row of the output gradient apart, often on
/// another page, where the CPU's prefetchers stop: the loop asks for the steps eight ahead itself.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn pack_a_steps(
    a: MatRef<'_, f32>,
    m: usize,
    i0: usize,
    pc: usize,
    kc: usize,
    count: usize,
    panels: &mut [u32],
    stride: usize,
) {
    const AT_ONCE: usize = 32 / MR;
    let kp = kc.div_ceil(2);
    for g0 in (0..count).step_by(AT_ONCE) {
        let group = AT_ONCE.min(count - g0);
        let first = i0 + g0 * MR;
        let rows = (group * MR).min(m.saturating_sub(first));
        // Depth step `p`'s rows of the group (none past the block or when every row lies past `m`).
        let step = |p: usize| {
            let at = a.offset + (pc + p) * a.col_stride + first;
            (p < kc && rows > 0).then(|| &a.data[at..][..rows])
        };
        let mut words = [0u32; 32];
        for q in 0..kp {
            for ahead in [step(2 * q + 8), step(2 * q + 9)].into_iter().flatten() {
                super::simd::prefetch(bytemuck::cast_slice(ahead));
            }
            if let Some(even) = step(2 * q) {
                let odd = step(2 * q + 1).map(<[f32]>::as_ptr);
                // SAFETY: the features were detected (the caller's `fast`) and both steps hold `rows` floats.
                unsafe { avx512::pair_steps(even.as_ptr(), odd, rows, &mut words) };
            }
            for (g, w) in words.chunks_exact(MR).take(group).enumerate() {
                panels[(g0 + g) * stride + q * MR..][..MR].copy_from_slice(w);
            }
        }
    }
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

    /// `out[i] = (even[i], odd[i])` as bf16 pairs for the `rows ≤ 32` rows `i`, zeros after them (`odd`
    /// absent: zeros).
    ///
    /// # Safety
    /// The CPU must support AVX-512F, AVX512-BW and AVX512-BF16; `even` (and `odd`) must hold `rows` floats.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn pair_steps(
        even: *const f32,
        odd: Option<*const f32>,
        rows: usize,
        out: &mut [u32; 32],
    ) {
        assert!(rows <= 32);
        // 16-bit lanes 0..16 hold the even step's rows, 16..32 the odd one's: pairs (even[j], odd[j]).
        const ORDER: [u16; 32] = {
            let mut order = [0u16; 32];
            let mut x = 0;
            while x < 32 {
                order[x] = (x / 2 + 16 * (x % 2)) as u16;
                x += 1;
            }
            order
        };
        let order = _mm512_loadu_si512(ORDER.as_ptr() as *const __m512i);
        for h in 0..2 {
            let mask = ((1u32 << rows.saturating_sub(16 * h).min(16)) - 1) as __mmask16;
            // Masked-off lanes are neither read nor faulted on; the pointers past `rows` are not dereferenced.
            let e = _mm512_maskz_loadu_ps(mask, even.wrapping_add(16 * h));
            let o = match odd {
                Some(odd) => _mm512_maskz_loadu_ps(mask, odd.wrapping_add(16 * h)),
                None => _mm512_setzero_ps(),
            };
            let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(o, e));
            let p = out.as_mut_ptr().add(16 * h) as *mut __m512i;
            _mm512_storeu_si512(p, _mm512_permutexvar_epi16(order, both));
        }
    }

    /// `C[6 × 32] = alpha · A · B + beta · C` over `kp` pairs with `vdpbf16ps`, C at `c` with row stride `ldc`;
    /// with `beta == 0` C is only written. (Edge tiles pass a buffer with `ldc = NR`.)
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX512-BF16; `a` must hold `kp · MR` and `b` `kp · NR` words; `c` must
    /// be valid for reads and writes of 6 rows of 32 floats at row stride `ldc`, owned by the caller.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn kernel(
        kp: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        beta: f32,
    ) {
        let mut acc = [_mm512_setzero_ps(); 2 * MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kp {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b as *const __m512i));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(16) as *const __m512i));
            for i in 0..MR {
                let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(i) as i32));
                acc[2 * i] = _mm512_dpbf16_ps(acc[2 * i], ai, b0);
                acc[2 * i + 1] = _mm512_dpbf16_ps(acc[2 * i + 1], ai, b1);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        let (alpha, beta_v) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
        for (h, &v) in acc.iter().enumerate() {
            let p = c.add((h / 2) * ldc + (h % 2) * 16);
            let mut out = _mm512_mul_ps(alpha, v);
            if beta != 0.0 {
                out = _mm512_add_ps(out, _mm512_mul_ps(beta_v, _mm512_loadu_ps(p)));
            }
            _mm512_storeu_ps(p, out);
        }
    }
}

/// The bf16 pairs of [`gemm_bf16`] as a packing format of the GEMM's driver; `fast` picks the AVX512-BF16
/// packing and kernel (callers pass [`available`]; the tests pass `false` too).
pub struct Bf16Pairs {
    fast: bool,
}

impl Bf16Pairs {
    /// The format, with the AVX512-BF16 packing and kernel when `fast` and this CPU has them.
    pub fn new(fast: bool) -> Bf16Pairs {
        Bf16Pairs {
            fast: fast && available(),
        }
    }
}

impl Packing<f32> for Bf16Pairs {
    type Packed = u32;
    const NR: usize = NR;

    fn depth(&self, kc: usize) -> usize {
        kc.div_ceil(2)
    }

    fn with_scratch<R>(
        &self,
        len_a: usize,
        len_b: usize,
        f: impl FnOnce(&mut [u32], &mut [u32]) -> R,
    ) -> R {
        thread_local! {
            static SCRATCH: std::cell::RefCell<(Vec<u32>, Vec<u32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
        }
        SCRATCH.with(|cell| super::gemm::with_cell_scratch(cell, len_a, len_b, f))
    }

    fn pack_a(
        &self,
        a: MatRef<'_, f32>,
        i0: usize,
        m: usize,
        pc: usize,
        kc: usize,
        count: usize,
        panels: &mut [u32],
        stride: usize,
    ) {
        pack_a(a, m, i0, pc, kc, self.fast, count, panels, stride)
    }

    fn pack_b(
        &self,
        b: MatRef<'_, f32>,
        pc: usize,
        kc: usize,
        j0: usize,
        n: usize,
        count: usize,
        panels: &mut [u32],
        stride: usize,
    ) {
        let len = kc.div_ceil(2) * NR;
        for g in 0..count {
            pack_b(
                b,
                n,
                j0 + g * NR,
                pc,
                kc,
                self.fast,
                &mut panels[g * stride..][..len],
            );
        }
    }

    unsafe fn tile(
        &self,
        kc: usize,
        a: &[u32],
        b: &[u32],
        c: *mut f32,
        ldc: usize,
        (mr, nr): (usize, usize),
        alpha: f32,
        beta: f32,
    ) {
        let kp = kc.div_ceil(2);
        assert!(a.len() >= kp * MR && b.len() >= kp * NR);
        #[cfg(target_arch = "x86_64")]
        if self.fast && mr == MR && nr == NR {
            // SAFETY: the features were detected, the panels hold kp pairs (checked above) and the caller owns
            // the full tile of C.
            unsafe { avx512::kernel(kp, a.as_ptr(), b.as_ptr(), c, ldc, alpha, beta) };
            return;
        }
        let mut acc = [0.0f32; MR * NR];
        #[cfg(target_arch = "x86_64")]
        if self.fast {
            // SAFETY: as above, into the tile's own buffer.
            unsafe { avx512::kernel(kp, a.as_ptr(), b.as_ptr(), acc.as_mut_ptr(), NR, 1.0, 0.0) };
        } else {
            kernel_portable(kp, a, b, &mut acc);
        }
        #[cfg(not(target_arch = "x86_64"))]
        kernel_portable(kp, a, b, &mut acc);
        for (r, acc) in acc.chunks_exact(NR).take(mr).enumerate() {
            // SAFETY: the caller owns rows 0..mr, columns 0..nr of C at `c`.
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), nr) };
            for (o, &v) in row.iter_mut().zip(acc) {
                *o = if beta == 0.0 {
                    alpha * v
                } else {
                    alpha * v + beta * *o
                };
            }
        }
    }
}

/// `C = alpha · A · B + beta · C` with `A: [m × k]`, `B: [k × n]` (any strides, rounded to bf16) and `C: [m × n]`
/// row-major with row stride `ldc`, accumulated in f32. With `beta == 0` C is only written. `fast` as for
/// [`Bf16Pairs`].
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
    let p = Product {
        m,
        n,
        k,
        alpha,
        a,
        b,
        beta,
    };
    drive(&Bf16Pairs::new(fast), p, c, ldc);
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
        if !bf16_cpu("vector_packing_rounds_as_the_scalar_packing") {
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
            pack_a(a, rows, 5, pc, kc, true, 1, &mut fast, kp * MR);
            pack_a(a, rows, 5, pc, kc, false, 1, &mut slow, kp * MR);
            assert_eq!(fast, slow, "A rows, depth {pc}+{kc}");
            // The same data as a transposed A (each depth step a run of the rows).
            let at = view(&x, 1, rows);
            pack_a(at, rows, 5, pc, kc, true, 1, &mut fast, kp * MR);
            pack_a(at, rows, 5, pc, kc, false, 1, &mut slow, kp * MR);
            assert_eq!(fast, slow, "A transposed, depth {pc}+{kc}");
            // Groups of neighbouring panels, whole, partly past the last row, and wholly past it.
            for (i0, count) in [(0, 4), (5, 6), (24, 4), (36, 2), (48, 1)] {
                let stride = kp * MR + 3;
                let (mut fast, mut slow) = (vec![7; count * stride], vec![7; count * stride]);
                let (on, off) = (Bf16Pairs { fast: true }, Bf16Pairs { fast: false });
                on.pack_a(at, i0, rows, pc, kc, count, &mut fast, stride);
                off.pack_a(at, i0, rows, pc, kc, count, &mut slow, stride);
                assert_eq!(fast, slow, "{count} panels from row {i0}, depth {pc}+{kc}");
            }
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

    fn bf16_cpu(test: &str) -> bool {
        super::super::simd::testable(test, available())
    }

    #[test]
    fn the_avx512_kernel_matches_its_twin() {
        if !bf16_cpu("the_avx512_kernel_matches_its_twin") {
            return;
        }
        let mut rng = Rng::new(12);
        let kc: usize = 73;
        let kp = kc.div_ceil(2);
        let a: Vec<u32> = (0..kp * MR)
            .map(|_| pair(rng.normal() as f32, rng.normal() as f32))
            .collect();
        let b: Vec<u32> = (0..kp * NR)
            .map(|_| pair(rng.normal() as f32, rng.normal() as f32))
            .collect();
        // A full tile and an edge tile, inside a larger C (row stride 40), with alpha and beta.
        for (mr, nr) in [(MR, NR), (4, 19)] {
            let (mut fast, mut twin) = (vec![0.5f32; MR * 40], vec![0.5f32; MR * 40]);
            for (format, c) in [(true, &mut fast), (false, &mut twin)] {
                // SAFETY: C holds MR rows of 40 floats, this thread's only.
                unsafe {
                    Bf16Pairs::new(format).tile(kc, &a, &b, c.as_mut_ptr(), 40, (mr, nr), 2.0, -1.0)
                };
            }
            for (x, (f, t)) in fast.iter().zip(&twin).enumerate() {
                assert!(
                    (f - t).abs() <= 1e-4 * (1.0 + t.abs()),
                    "{mr}x{nr} at {x}: {f} vs {t}"
                );
                let inside = x / 40 < mr && x % 40 < nr;
                assert_eq!(
                    inside,
                    *t != 0.5,
                    "{mr}x{nr}: only the tile is written ({x})"
                );
            }
        }
    }
}
