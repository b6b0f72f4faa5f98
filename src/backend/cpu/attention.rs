//! The CPU kernel of causal scaled-dot-product attention with grouped-query heads, in the FlashAttention-2
//! shape: `q: [B, H, Tq, D]`, `k, v: [B, Hkv, Tk, D]` → `[B, H, Tq, D]` (stored `[B, Tq, H, D]`), query `i`
//! attending keys `j ≤ i + (Tk − Tq)`.
//!
//! Forward: per (batch, head), query tiles of `BR` rows meet key tiles of `BC` keys; an online softmax keeps
//! the running maximum, denominator and output accumulator per row. Tiles wholly above the diagonal are never
//! visited; in a tile crossing the diagonal the masked scores are computed with the rest and set to zero
//! probability. Only O and the row log-sum-exp are kept — nothing of size T².
//!
//! Every tile product (`S = Q Kᵀ`, `O += P V`, and in the backward `dP = dO Vᵀ`, `dV += Pᵀ dO`, `dK += dSᵀ Q`,
//! `dQ += dS K`) runs through `tile_product`: `MR × NR` register blocks (4 × 16 at AVX2 width, 8 × 16 at
//! AVX-512 width), each reduction step one broadcast per row times one row of the right operand. The operands
//! are copied once per head, not per tile: the forward transposes the head's keys (for the score products) and
//! pads its value rows to a multiple of 16, the backward pads each query head's Q and dO rows and transposes
//! the key and value tile of each key block; the tiles then read them in place.
//!
//! Backward (derivation in docs/kernels.md): `Dᵢ = rowsum(dOᵢ ⊙ Oᵢ)`; per key tile, `P` is recomputed from
//! Q, K and the log-sum-exp; `dV += Pᵀ dO`, `dS = P ⊙ (dO Vᵀ − D)`, `dQ += dS K / √D`, `dK += dSᵀ Q / √D`.
//! One task per (batch, key/value head) owns dK, dV and the dQ rows of its query heads: no atomics, and the
//! result is deterministic.
//!
//! Up to `FEW_ROWS` query rows (decoding with a KV cache) skip the tiles: each row's scores, softmax and
//! weighted sum of values in one pass over the keys it sees (`forward_rows`); small calls run their heads on
//! the calling thread. Each head's kernel runs through `simd::vectorized`: compiled for AVX-512 or AVX2 + FMA
//! when the CPU has them.
//!
//! Inputs are read through their strides (the last dim must be contiguous); outputs are stored `[B, T, H, D]`.

use super::simd::vectorized;
use super::{dot, recycle};
use crate::backend::StorageElement;
use crate::dtype::Float;
use crate::shape::Layout;
use rayon::prelude::*;

/// Query rows per tile.
pub const BR: usize = 32;
/// Keys per tile.
pub const BC: usize = 64;

/// The shapes of one attention call: `q [B, H, Tq, D]`, `k`, `v [B, Hkv, Tk, D]`, scale `1/√D`.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub tq: usize,
    pub tk: usize,
    pub d: usize,
    pub scale: f64,
}

impl Geometry {
    /// How many keys precede the first query (`Tk − Tq`: a cached prefix).
    pub fn offset(&self) -> usize {
        self.tk - self.tq
    }
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Where row `(b, h, t)` of a `[B, H, T, D]` view starts.
#[derive(Clone, Copy)]
struct Rows {
    offset: usize,
    sb: usize,
    sh: usize,
    st: usize,
}

impl Rows {
    fn of(l: &Layout) -> Rows {
        let s = &l.strides;
        Rows {
            offset: l.offset,
            sb: s[0],
            sh: s[1],
            st: s[2],
        }
    }
    #[inline]
    fn at(&self, b: usize, h: usize, t: usize) -> usize {
        self.offset + b * self.sb + h * self.sh + t * self.st
    }
}

/// A storage slice with its row addressing.
fn view<'a, T>((data, layout): (&'a [T], &Layout)) -> (&'a [T], Rows) {
    (data, Rows::of(layout))
}

/// Copies keys `j0..j0 + n` of `(b, hk)` transposed into `tile[dd · ld + jj]`, so products with a query row
/// run along the keys (vectorized) instead of as one horizontal dot product per key.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transpose_keys<T: Float>(
    src: (&[T], Rows),
    b: usize,
    hk: usize,
    j0: usize,
    n: usize,
    d: usize,
    tile: &mut [T],
    ld: usize,
) {
    for jj in 0..n {
        let row = &src.0[src.1.at(b, hk, j0 + jj)..][..d];
        for (dd, &x) in row.iter().enumerate() {
            tile[dd * ld + jj] = x;
        }
    }
}

/// Columns of a micro-tile: two AVX2 vectors of f32, one AVX-512 vector.
const NR: usize = 16;
/// Rows of a micro-tile where the loops run at AVX2 width: eight ymm accumulators.
const MR_AVX2: usize = 4;
/// Rows of a micro-tile where they run at AVX-512 width: eight zmm accumulators, enough independent sums to
/// keep two vector pipes busy (four would leave them half idle).
const MR_AVX512: usize = 8;

#[inline(always)]
fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// `C (+)= A · B` on small tiles held in L1, in `MR × NR` register blocks: each step of the reduction
/// broadcasts `MR` values of A and multiplies them with one row of `NR` values of B.
/// `A(i, kk) = a[i·ars + kk·acs]` (so Aᵀ is a stride swap), `B(kk, c) = b[kk·ldb + c]`,
/// `C(i, c) = c[i·ldc + c]`; `m` is a multiple of `MR` and `n` of `NR`. `ACC` false overwrites C.
/// The reduction runs in order `kk = 0, 1, …`, so results are deterministic.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tile_product<T: Float, const ACC: bool, const MR: usize>(
    (m, n, k): (usize, usize, usize),
    a: &[T],
    (ars, acs): (usize, usize),
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
) {
    debug_assert!(m % MR == 0 && n % NR == 0);
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * ldc + n <= c.len());
    if k == 0 {
        if !ACC {
            for i in 0..m {
                c[i * ldc..][..n].fill(T::ZERO);
            }
        }
        return;
    }
    assert!((m - 1) * ars + (k - 1) * acs < a.len() && (k - 1) * ldb + n <= b.len());
    let (a, b) = (a.as_ptr(), b.as_ptr());
    for i0 in (0..m).step_by(MR) {
        for c0 in (0..n).step_by(NR) {
            let mut acc = [[T::ZERO; NR]; MR];
            if ACC {
                for (r, row) in acc.iter_mut().enumerate() {
                    row.copy_from_slice(&c[(i0 + r) * ldc + c0..][..NR]);
                }
            }
            for kk in 0..k {
                // SAFETY: the asserts above bound every index: i0 + r < m, kk < k, c0 + NR <= n.
                unsafe {
                    let brow = &*(b.add(kk * ldb + c0) as *const [T; NR]);
                    for (r, row) in acc.iter_mut().enumerate() {
                        let x = *a.add((i0 + r) * ars + kk * acs);
                        for (o, &y) in row.iter_mut().zip(brow) {
                            *o += x * y;
                        }
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                c[(i0 + r) * ldc + c0..][..NR].copy_from_slice(row);
            }
        }
    }
}

/// Folds `x` with `f` in eight interleaved lanes (so the loop vectorizes), each started at `init`, then
/// combines the lanes pairwise.
#[inline(always)]
fn lanes<T: Float>(x: &[T], init: T, f: impl Fn(T, T) -> T) -> T {
    let mut acc = [init; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &y) in acc.iter_mut().zip(c) {
            *a = f(*a, y);
        }
    }
    for (a, &y) in acc.iter_mut().zip(tail) {
        *a = f(*a, y);
    }
    f(
        f(f(acc[0], acc[4]), f(acc[1], acc[5])),
        f(f(acc[2], acc[6]), f(acc[3], acc[7])),
    )
}

/// Copies rows `t0..t0 + n` of `(b, h)` into `tile[r · ld + dd]` (`dd < d`), zeroing rows `n..rows`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn copy_rows<T: Float>(
    src: (&[T], Rows),
    b: usize,
    h: usize,
    t0: usize,
    n: usize,
    rows: usize,
    d: usize,
    ld: usize,
    tile: &mut [T],
) {
    for r in 0..n {
        tile[r * ld..][..d].copy_from_slice(&src.0[src.1.at(b, h, t0 + r)..][..d]);
    }
    for r in n..rows {
        tile[r * ld..][..d].fill(T::ZERO);
    }
}

/// Up to this many query rows (decoding a token at a time), `forward_rows` replaces the tiles.
pub const FEW_ROWS: usize = 4;
/// Below this many multiply-adds of scores (`B·H·Tq·Tk·D`) the heads run on the calling thread: waking the
/// pool would cost more than they do.
const SERIAL_WORK: usize = 1 << 20;

/// Per (b, h) for a few query rows: each row's scores against the keys it sees (read in place, no tiles),
/// their softmax, then the weighted sum of the value rows. Tiles of `BR` rows would compute `MR` rows for one
/// and copy every key and value tile once per query head. Returns what `forward_head` returns.
#[inline(always)]
fn forward_rows<T: Float>(
    q: (&[T], Rows),
    k: (&[T], Rows),
    v: (&[T], Rows),
    g: &Geometry,
    b: usize,
    h: usize,
) -> (Vec<T>, Vec<T>) {
    let (d, off, scale) = (g.d, g.offset(), T::from_f64(g.scale));
    let hk = h / g.group();
    #[inline(always)]
    fn row<T>((data, rows): (&[T], Rows), b: usize, h: usize, t: usize, d: usize) -> &[T] {
        &data[rows.at(b, h, t)..][..d]
    }
    let mut out = vec![T::ZERO; g.tq * d];
    let mut lse = vec![T::ZERO; g.tq];
    let mut p = Vec::with_capacity(g.tk);
    for (i, (o, lse)) in out.chunks_exact_mut(d.max(1)).zip(&mut lse).enumerate() {
        let qi = row(q, b, h, i, d);
        p.clear();
        for j in 0..i + off + 1 {
            p.push(dot(qi, row(k, b, hk, j, d)) * scale);
        }
        let mx = lanes(&p, T::NEG_INFINITY, T::max);
        p.iter_mut().for_each(|x| *x = T::fast_exp(*x - mx));
        let l = lanes(&p, T::ZERO, |a, b| a + b);
        for (j, &pj) in p.iter().enumerate() {
            for (o, &vj) in o.iter_mut().zip(row(v, b, hk, j, d)) {
                *o += pj * vj;
            }
        }
        let inv = T::ONE / l;
        o.iter_mut().for_each(|x| *x *= inv);
        *lse = mx + l.ln();
    }
    (out, lse)
}

/// Per (b, h): the output rows `[Tq, D]` and the row log-sum-exp `[Tq]`.
#[inline(always)]
fn forward_head<T: Float, const MR: usize>(
    q: (&[T], Rows),
    k: (&[T], Rows),
    v: (&[T], Rows),
    g: &Geometry,
    b: usize,
    h: usize,
) -> (Vec<T>, Vec<T>) {
    let (d, off, scale) = (g.d, g.offset(), T::from_f64(g.scale));
    let dp = round_up(d, NR);
    let hk = h / g.group();
    let mut out = vec![T::ZERO; g.tq * d];
    let mut lse = vec![T::ZERO; g.tq];
    let mut q_tile = vec![T::ZERO; BR * dp];
    // The head's keys transposed (`k_t[dd · ldk + j]`) and values in padded rows, copied once: every query
    // tile reads its key tiles there in place. The key stride is kept off multiples of 4 KiB, so the D rows of
    // a key tile do not all map to the same cache sets.
    let mut ldk = round_up(g.tk, NR) + NR;
    if ldk.is_multiple_of(1024) {
        ldk += NR;
    }
    let mut k_t = vec![T::ZERO; d * ldk];
    transpose_keys(k, b, hk, 0, g.tk, d, &mut k_t, ldk);
    let mut v_rows = vec![T::ZERO; round_up(g.tk, NR) * dp];
    copy_rows(v, b, hk, 0, g.tk, g.tk, d, dp, &mut v_rows);
    let mut s = vec![T::ZERO; BR * BC];
    let mut acc = vec![T::ZERO; BR * dp];
    let (mut m, mut l) = ([T::NEG_INFINITY; BR], [T::ZERO; BR]);
    for i0 in (0..g.tq).step_by(BR) {
        let rows = (i0 + BR).min(g.tq) - i0;
        let rows4 = round_up(rows, MR);
        copy_rows(q, b, h, i0, rows, rows4, d, dp, &mut q_tile);
        acc.fill(T::ZERO);
        m.fill(T::NEG_INFINITY);
        l.fill(T::ZERO);
        // Keys seen by the tile's last row; tiles wholly above the diagonal are not visited.
        let keys_end = i0 + rows + off;
        for j0 in (0..keys_end).step_by(BC) {
            let nk = (j0 + BC).min(keys_end) - j0;
            tile_product::<T, false, MR>(
                (rows4, round_up(nk, NR), d),
                &q_tile,
                (dp, 1),
                &k_t[j0..],
                ldk,
                &mut s,
                BC,
            );
            for r in 0..rows4 {
                let n = (i0 + r + off + 1).saturating_sub(j0).min(nk);
                let (p, masked) = s[r * BC..][..nk].split_at_mut(if r < rows { n } else { 0 });
                masked.fill(T::ZERO);
                if p.is_empty() {
                    continue;
                }
                p.iter_mut().for_each(|x| *x *= scale);
                let mx = lanes(p, m[r], T::max);
                let alpha = T::fast_exp(m[r] - mx);
                p.iter_mut().for_each(|x| *x = T::fast_exp(*x - mx));
                l[r] = l[r] * alpha + lanes(p, T::ZERO, |a, b| a + b);
                m[r] = mx;
                acc[r * dp..][..d].iter_mut().for_each(|x| *x *= alpha);
            }
            // O += P V
            let v_tile = &v_rows[j0 * dp..];
            tile_product::<T, true, MR>((rows4, dp, nk), &s, (BC, 1), v_tile, dp, &mut acc, dp);
        }
        for r in 0..rows {
            let inv = T::ONE / l[r];
            for (o, &a) in out[(i0 + r) * d..][..d].iter_mut().zip(&acc[r * dp..][..d]) {
                *o = a * inv;
            }
            lse[i0 + r] = m[r] + l[r].ln();
        }
    }
    (out, lse)
}

/// Per (b, kv head): dQ rows of its query heads `[G, Tq, D]`, and dK, dV `[Tk, D]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_group<T: Float, const MR: usize>(
    q: (&[T], Rows),
    k: (&[T], Rows),
    v: (&[T], Rows),
    o: (&[T], Rows),
    dout: (&[T], Rows),
    lse: &[T],
    g: &Geometry,
    b: usize,
    hk: usize,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (d, off, scale, group) = (g.d, g.offset(), T::from_f64(g.scale), g.group());
    let dp = round_up(d, NR);
    // dQ rows per head, padded so a tile's last micro-tile of MR rows stays inside.
    let dq_rows = g.tq + MR;
    let mut dq_pad = vec![T::ZERO; group * dq_rows * dp];
    let mut dk = vec![T::ZERO; g.tk * d];
    let mut dv = vec![T::ZERO; g.tk * d];
    let (mut k_t, mut v_t) = (vec![T::ZERO; d * BC], vec![T::ZERO; d * BC]);
    let mut k_rows = vec![T::ZERO; BC * dp];
    // Each query head's Q and dO in padded rows (zero past Tq), copied once: every key tile reads its query
    // tiles there in place.
    let padded = |x: (&[T], Rows), h: usize| {
        let mut rows = vec![T::ZERO; (g.tq + BR) * dp];
        copy_rows(x, b, h, 0, g.tq, g.tq, d, dp, &mut rows);
        rows
    };
    let q_rows: Vec<Vec<T>> = (0..group).map(|gi| padded(q, hk * group + gi)).collect();
    let do_rows: Vec<Vec<T>> = (0..group).map(|gi| padded(dout, hk * group + gi)).collect();
    let (mut p, mut ds) = (vec![T::ZERO; BR * BC], vec![T::ZERO; BR * BC]);
    let (mut dk_tile, mut dv_tile) = (vec![T::ZERO; BC * dp], vec![T::ZERO; BC * dp]);
    let rowsum: Vec<T> = (0..group)
        .flat_map(|gi| {
            let h = hk * group + gi;
            (0..g.tq).map(move |i| {
                dot(
                    &dout.0[dout.1.at(b, h, i)..][..d],
                    &o.0[o.1.at(b, h, i)..][..d],
                )
            })
        })
        .collect();
    for j0 in (0..g.tk).step_by(BC) {
        let nk = (j0 + BC).min(g.tk) - j0;
        transpose_keys(k, b, hk, j0, nk, d, &mut k_t, BC);
        transpose_keys(v, b, hk, j0, nk, d, &mut v_t, BC);
        copy_rows(k, b, hk, j0, nk, nk, d, dp, &mut k_rows);
        dk_tile.fill(T::ZERO);
        dv_tile.fill(T::ZERO);
        let first = j0.saturating_sub(off);
        for gi in 0..group {
            let h = hk * group + gi;
            let lse = &lse[(b * g.heads + h) * g.tq..][..g.tq];
            let rowsum = &rowsum[gi * g.tq..][..g.tq];
            for i0 in (first..g.tq).step_by(BR) {
                let rows = (i0 + BR).min(g.tq) - i0;
                let rows4 = round_up(rows, MR);
                // Keys seen by the tile's last row (at least one, since i0 + off >= j0).
                let cols = (i0 + rows + off - j0).min(nk);
                let cols4 = round_up(cols, MR);
                let (q_tile, do_tile) = (&q_rows[gi][i0 * dp..], &do_rows[gi][i0 * dp..]);
                let s_shape = (rows4, round_up(cols, NR), d);
                tile_product::<T, false, MR>(s_shape, q_tile, (dp, 1), &k_t, BC, &mut p, BC);
                tile_product::<T, false, MR>(s_shape, do_tile, (dp, 1), &v_t, BC, &mut ds, BC);
                for r in 0..rows4 {
                    let n = if r < rows {
                        (i0 + r + off + 1 - j0).min(cols)
                    } else {
                        0
                    };
                    let (pr, dsr) = (&mut p[r * BC..][..cols4], &mut ds[r * BC..][..cols4]);
                    pr[n..].fill(T::ZERO);
                    dsr[n..].fill(T::ZERO);
                    if n == 0 {
                        continue;
                    }
                    let (li, di) = (lse[i0 + r], rowsum[i0 + r]);
                    pr[..n]
                        .iter_mut()
                        .for_each(|x| *x = T::fast_exp(*x * scale - li));
                    // ds becomes dS = P ⊙ (dO Vᵀ − D) / √D.
                    for (x, &pj) in dsr[..n].iter_mut().zip(&pr[..n]) {
                        *x = pj * (*x - di) * scale;
                    }
                }
                // dV += Pᵀ dO, dK += dSᵀ Q, dQ += dS K.
                tile_product::<T, true, MR>(
                    (cols4, dp, rows),
                    &p,
                    (1, BC),
                    do_tile,
                    dp,
                    &mut dv_tile,
                    dp,
                );
                tile_product::<T, true, MR>(
                    (cols4, dp, rows),
                    &ds,
                    (1, BC),
                    q_tile,
                    dp,
                    &mut dk_tile,
                    dp,
                );
                tile_product::<T, true, MR>(
                    (rows4, dp, cols),
                    &ds,
                    (BC, 1),
                    &k_rows,
                    dp,
                    &mut dq_pad[(gi * dq_rows + i0) * dp..],
                    dp,
                );
            }
        }
        for jj in 0..nk {
            let j = j0 + jj;
            dk[j * d..][..d].copy_from_slice(&dk_tile[jj * dp..][..d]);
            dv[j * d..][..d].copy_from_slice(&dv_tile[jj * dp..][..d]);
        }
    }
    let mut dq = vec![T::ZERO; group * g.tq * d];
    for gi in 0..group {
        for i in 0..g.tq {
            dq[(gi * g.tq + i) * d..][..d].copy_from_slice(&dq_pad[(gi * dq_rows + i) * dp..][..d]);
        }
    }
    (dq, dk, dv)
}

/// Writes per-(b, h) blocks `[T, D]` into a `[B, T, H, D]` buffer.
fn interleave<T: Float + StorageElement>(
    blocks: &[Vec<T>],
    batch: usize,
    heads: usize,
    t: usize,
    d: usize,
) -> Vec<T> {
    let mut out = recycle::buffer::<T>(batch * t * heads * d);
    for (bh, block) in blocks.iter().enumerate() {
        let (b, h) = (bh / heads, bh % heads);
        for i in 0..t {
            out[((b * t + i) * heads + h) * d..][..d].copy_from_slice(&block[i * d..(i + 1) * d]);
        }
    }
    out
}

/// The output `[B, Tq, H, D]` and the row log-sum-exp `[B·H·Tq]` of `q`, `k`, `v` (slices read through their
/// `[B, H, T, D]` layouts, the last dim contiguous).
pub fn forward<T: Float + StorageElement>(
    q: (&[T], &Layout),
    k: (&[T], &Layout),
    v: (&[T], &Layout),
    geo: &Geometry,
) -> (Vec<T>, Vec<T>) {
    let (q, k, v) = (view(q), view(k), view(v));
    let wide = super::simd::level() == super::simd::Level::Avx512;
    let head = |bh: usize| {
        let (b, h) = (bh / geo.heads, bh % geo.heads);
        vectorized(
            #[inline(always)]
            || {
                if geo.tq <= FEW_ROWS {
                    forward_rows(q, k, v, geo, b, h)
                } else if wide {
                    forward_head::<T, MR_AVX512>(q, k, v, geo, b, h)
                } else {
                    forward_head::<T, MR_AVX2>(q, k, v, geo, b, h)
                }
            },
        )
    };
    let work = geo.batch * geo.heads * geo.tq * geo.tk * geo.d;
    let heads: Vec<(Vec<T>, Vec<T>)> = if work < SERIAL_WORK {
        (0..geo.batch * geo.heads).map(head).collect()
    } else {
        (0..geo.batch * geo.heads)
            .into_par_iter()
            .map(head)
            .collect()
    };
    let (outs, lses): (Vec<Vec<T>>, Vec<Vec<T>>) = heads.into_iter().unzip();
    (
        interleave(&outs, geo.batch, geo.heads, geo.tq, geo.d),
        lses.concat(),
    )
}

/// The gradients `(dq, dk, dv)`, each stored `[B, T, H, D]`, from the forward's operands, its output `o`, its
/// log-sum-exp and the output gradient `dout` (slices read through their `[B, H, T, D]` layouts).
#[allow(clippy::type_complexity)]
pub fn backward<T: Float + StorageElement>(
    (q, k, v): ((&[T], &Layout), (&[T], &Layout), (&[T], &Layout)),
    o: (&[T], &Layout),
    lse: &[T],
    dout: (&[T], &Layout),
    geo: &Geometry,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (q, k, v, o, dout) = (view(q), view(k), view(v), view(o), view(dout));
    let wide = super::simd::level() == super::simd::Level::Avx512;
    let parts: Vec<(Vec<T>, Vec<T>, Vec<T>)> = (0..geo.batch * geo.kv_heads)
        .into_par_iter()
        .map(|bk| {
            let (b, hk) = (bk / geo.kv_heads, bk % geo.kv_heads);
            vectorized(
                #[inline(always)]
                || {
                    if wide {
                        backward_group::<T, MR_AVX512>(q, k, v, o, dout, lse, geo, b, hk)
                    } else {
                        backward_group::<T, MR_AVX2>(q, k, v, o, dout, lse, geo, b, hk)
                    }
                },
            )
        })
        .collect();
    let group = geo.group();
    let mut dq_blocks = Vec::with_capacity(geo.batch * geo.heads);
    let (mut dk_blocks, mut dv_blocks) = (Vec::new(), Vec::new());
    for (dq, dk, dv) in parts {
        dq_blocks.extend(dq.chunks(geo.tq * geo.d).map(|c| c.to_vec()).take(group));
        dk_blocks.push(dk);
        dv_blocks.push(dv);
    }
    let (b, d) = (geo.batch, geo.d);
    (
        interleave(&dq_blocks, b, geo.heads, geo.tq, d),
        interleave(&dk_blocks, b, geo.kv_heads, geo.tk, d),
        interleave(&dv_blocks, b, geo.kv_heads, geo.tk, d),
    )
}
