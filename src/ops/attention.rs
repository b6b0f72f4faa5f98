//! Fused causal scaled-dot-product attention with grouped-query heads, in the FlashAttention-2 shape.
//!
//! `q: [B, H, Tq, D]`, `k, v: [B, Hkv, Tk, D]` (`H` a multiple of `Hkv`, `Tk ≥ Tq`) → `[B, H, Tq, D]`.
//! Query `i` attends keys `j ≤ i + (Tk − Tq)` (so a KV cache of earlier positions works), scale `1/√D`.
//!
//! Forward: per (batch, head), query tiles of `BR` rows meet key tiles of `BC` keys; an online softmax keeps
//! the running maximum, denominator and output accumulator per row. Tiles wholly above the diagonal are never
//! visited; in a tile crossing the diagonal the masked scores are computed with the rest and set to zero
//! probability. Only O and the row log-sum-exp are kept — nothing of size T².
//!
//! Every tile product (`S = Q Kᵀ`, `O += P V`, and in the backward `dP = dO Vᵀ`, `dV += Pᵀ dO`, `dK += dSᵀ Q`,
//! `dQ += dS K`) runs through `tile_product`: `MR × NR` register blocks (4 × 16), each reduction step one
//! broadcast per row times one row of the right operand, held in L1 as a copied tile (keys transposed for the
//! score products, rows padded to a multiple of 16 for the products over the head dim).
//!
//! Backward (derivation in docs/kernels.md): `Dᵢ = rowsum(dOᵢ ⊙ Oᵢ)`; per key tile, `P` is recomputed from
//! Q, K and the log-sum-exp; `dV += Pᵀ dO`, `dS = P ⊙ (dO Vᵀ − D)`, `dQ += dS K / √D`, `dK += dSᵀ Q / √D`.
//! One task per (batch, key/value head) owns dK, dV and the dQ rows of its query heads: no atomics, and the
//! result is deterministic.
//!
//! Each head's kernel runs through `simd::vectorized`: compiled for AVX2 + FMA when the CPU has them.
//!
//! Inputs are read through their strides (the last dim must be contiguous); outputs are stored `[B, T, H, D]`
//! and returned as `[B, H, T, D]` views, so the projections around attention reshape them for free.

use super::{float_dispatch, keep, with_compute_dtype};
use crate::backend::cpu::simd::vectorized;
use crate::backend::cpu::{dot, recycle};
use crate::backend::StorageElement;
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::tape::record;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Query rows per tile.
pub const BR: usize = 32;
/// Keys per tile.
pub const BC: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    tq: usize,
    tk: usize,
    d: usize,
    scale: f64,
}

impl Geometry {
    fn offset(&self) -> usize {
        self.tk - self.tq
    }
    fn group(&self) -> usize {
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
    fn of(t: &Tensor) -> Rows {
        let s = t.strides();
        Rows {
            offset: t.layout.offset,
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

/// The storage slice of `t` with its row addressing.
fn view<T: StorageElement>(t: &Tensor) -> (&[T], Rows) {
    (t.data::<T>(), Rows::of(t))
}

fn check(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Geometry> {
    let bad = || {
        Error::shape(
            "attention",
            format!(
                "q {:?}, k {:?}, v {:?} are not [B, H, Tq, D], [B, Hkv, Tk, D] x2 with Hkv dividing H and Tk >= Tq",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        )
    };
    if q.ndim() != 4 || k.ndim() != 4 || k.shape() != v.shape() {
        return Err(bad());
    }
    let (qs, ks) = (q.shape(), k.shape());
    if qs[0] != ks[0]
        || qs[3] != ks[3]
        || ks[1] == 0
        || qs[1] % ks[1] != 0
        || ks[2] < qs[2]
        || qs[3] == 0
    {
        return Err(bad());
    }
    Ok(Geometry {
        batch: qs[0],
        heads: qs[1],
        kv_heads: ks[1],
        tq: qs[2],
        tk: ks[2],
        d: qs[3],
        scale: 1.0 / (qs[3] as f64).sqrt(),
    })
}

/// A view whose last dim is contiguous (copied only when it is not).
fn rows_contiguous(t: &Tensor) -> Result<Tensor> {
    if t.strides()[3] == 1 || t.shape()[3] == 1 {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

/// Copies keys `j0..j0 + n` of `(b, hk)` transposed into `tile[dd · BC + jj]`, so products with a query row
/// run along the keys (vectorized) instead of as one horizontal dot product per key.
#[inline(always)]
fn transpose_tile<T: Float>(
    src: (&[T], Rows),
    b: usize,
    hk: usize,
    j0: usize,
    n: usize,
    d: usize,
    tile: &mut [T],
) {
    for jj in 0..n {
        let row = &src.0[src.1.at(b, hk, j0 + jj)..][..d];
        for (dd, &x) in row.iter().enumerate() {
            tile[dd * BC + jj] = x;
        }
    }
}

/// Rows of a micro-tile of the tile products.
const MR: usize = 4;
/// Columns of a micro-tile: two AVX2 vectors of f32.
const NR: usize = 16;

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
fn tile_product<T: Float, const ACC: bool>(
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

/// Per (b, h): the output rows `[Tq, D]` and the row log-sum-exp `[Tq]`.
#[inline(always)]
fn forward_head<T: Float>(
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
    let mut k_tile = vec![T::ZERO; d * BC];
    let mut v_tile = vec![T::ZERO; BC * dp];
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
            transpose_tile(k, b, hk, j0, nk, d, &mut k_tile);
            copy_rows(v, b, hk, j0, nk, nk, d, dp, &mut v_tile);
            tile_product::<T, false>(
                (rows4, round_up(nk, NR), d),
                &q_tile,
                (dp, 1),
                &k_tile,
                BC,
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
            tile_product::<T, true>((rows4, dp, nk), &s, (BC, 1), &v_tile, dp, &mut acc, dp);
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
fn backward_group<T: Float>(
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
    let (mut q_tile, mut do_tile) = (vec![T::ZERO; BR * dp], vec![T::ZERO; BR * dp]);
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
        transpose_tile(k, b, hk, j0, nk, d, &mut k_t);
        transpose_tile(v, b, hk, j0, nk, d, &mut v_t);
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
                copy_rows(q, b, h, i0, rows, rows4, d, dp, &mut q_tile);
                copy_rows(dout, b, h, i0, rows, rows4, d, dp, &mut do_tile);
                let s_shape = (rows4, round_up(cols, NR), d);
                tile_product::<T, false>(s_shape, &q_tile, (dp, 1), &k_t, BC, &mut p, BC);
                tile_product::<T, false>(s_shape, &do_tile, (dp, 1), &v_t, BC, &mut ds, BC);
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
                tile_product::<T, true>(
                    (cols4, dp, rows),
                    &p,
                    (1, BC),
                    &do_tile,
                    dp,
                    &mut dv_tile,
                    dp,
                );
                tile_product::<T, true>(
                    (cols4, dp, rows),
                    &ds,
                    (1, BC),
                    &q_tile,
                    dp,
                    &mut dk_tile,
                    dp,
                );
                tile_product::<T, true>(
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

/// A `[B, T, H, D]` buffer as a `[B, H, T, D]` view.
fn as_heads_view<T: StorageElement>(
    data: Vec<T>,
    b: usize,
    t: usize,
    h: usize,
    d: usize,
) -> Result<Tensor> {
    Tensor::from_vec(data, &[b, t, h, d])?
        .detach()
        .permute(&[0, 2, 1, 3])
}

impl Tensor {
    /// Causal attention of queries `self` over keys `k` and values `v` (see the module docs for shapes).
    pub fn attention(&self, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let geo = check(self, k, v)?;
        #[cfg(feature = "cuda-backend")]
        if self.is_cuda() {
            return gpu::attention(self, k, v, &geo);
        }
        with_compute_dtype("attention", &[self, k, v], |xs| {
            let (q, k, v) = (
                rows_contiguous(&xs[0])?,
                rows_contiguous(&xs[1])?,
                rows_contiguous(&xs[2])?,
            );
            let (out, lse) = float_dispatch!(q.dtype(), T, {
                let (qd, kd, vd) = (
                    (q.data::<T>(), Rows::of(&q)),
                    (k.data::<T>(), Rows::of(&k)),
                    (v.data::<T>(), Rows::of(&v)),
                );
                let heads: Vec<(Vec<T>, Vec<T>)> = (0..geo.batch * geo.heads)
                    .into_par_iter()
                    .map(|bh| {
                        let (b, h) = (bh / geo.heads, bh % geo.heads);
                        vectorized(
                            #[inline(always)]
                            || forward_head(qd, kd, vd, &geo, b, h),
                        )
                    })
                    .collect();
                let (outs, lses): (Vec<Vec<T>>, Vec<Vec<T>>) = heads.into_iter().unzip();
                let out = interleave(&outs, geo.batch, geo.heads, geo.tq, geo.d);
                let lse: Vec<T> = lses.concat();
                let n = lse.len();
                (
                    as_heads_view(out, geo.batch, geo.tq, geo.heads, geo.d)?,
                    Tensor::from_vec(lse, &[n])?,
                )
            });
            let saved = keep(&[&q, &k, &v], [&q, &k, &v, &out, &lse]);
            record("attention", &[&q, &k, &v], out, move |dout, _| {
                let [q, k, v, o, lse] = saved.expect("saved when recorded");
                let (q, k, v, o, lse) = (q.get()?, k.get()?, v.get()?, o.get()?, lse.get()?);
                let dout = rows_contiguous(dout)?;
                let grads = float_dispatch!(q.dtype(), T, {
                    let lse = lse.contiguous_data::<T>();
                    let parts: Vec<(Vec<T>, Vec<T>, Vec<T>)> = (0..geo.batch * geo.kv_heads)
                        .into_par_iter()
                        .map(|bk| {
                            let (b, hk) = (bk / geo.kv_heads, bk % geo.kv_heads);
                            vectorized(
                                #[inline(always)]
                                || {
                                    backward_group(
                                        view::<T>(&q),
                                        view::<T>(&k),
                                        view::<T>(&v),
                                        view::<T>(&o),
                                        view::<T>(&dout),
                                        lse,
                                        &geo,
                                        b,
                                        hk,
                                    )
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
                    vec![
                        Some(as_heads_view(
                            interleave(&dq_blocks, b, geo.heads, geo.tq, d),
                            b,
                            geo.tq,
                            geo.heads,
                            d,
                        )?),
                        Some(as_heads_view(
                            interleave(&dk_blocks, b, geo.kv_heads, geo.tk, d),
                            b,
                            geo.tk,
                            geo.kv_heads,
                            d,
                        )?),
                        Some(as_heads_view(
                            interleave(&dv_blocks, b, geo.kv_heads, geo.tk, d),
                            b,
                            geo.tk,
                            geo.kv_heads,
                            d,
                        )?),
                    ]
                });
                Ok(grads)
            })
        })
    }
}

/// The composed reference: `softmax(Q Kᵀ / √D + mask) V`, with key/value heads repeated for each query group.
pub fn attention_reference(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let geo = check(q, k, v)?;
    let (b, h, hkv, tq, tk, d) = (geo.batch, geo.heads, geo.kv_heads, geo.tq, geo.tk, geo.d);
    let expand = |t: &Tensor| -> Result<Tensor> {
        t.unsqueeze(2)?
            .broadcast_to(&[b, hkv, h / hkv, tk, d])?
            .reshape(&[b, h, tk, d])
    };
    let mut mask = vec![0.0; tq * tk];
    for i in 0..tq {
        for j in (i + geo.offset() + 1)..tk {
            mask[i * tk + j] = f64::NEG_INFINITY;
        }
    }
    let mask = Tensor::from_f64_values(&mask, &[tq, tk], q.dtype());
    q.matmul(&expand(k)?.transpose(-1, -2)?)?
        .scale(geo.scale)?
        .add(&mask)?
        .softmax()?
        .matmul(&expand(v)?)
}

/// The GPU path: the flash-attention kernels (bf16; other dtypes are computed in bf16 and cast back).
#[cfg(feature = "cuda-backend")]
mod gpu {
    use super::{keep, record, Geometry, Result, Tensor};
    use crate::backend::cuda::fused::{attention_backward, attention_forward, AttentionShape};
    use crate::dtype::DType;

    pub(super) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, geo: &Geometry) -> Result<Tensor> {
        crate::ops::device_of("attention", &[q, k, v])?;
        let dtype = q.dtype();
        if [k.dtype(), v.dtype()].iter().any(|&d| d != dtype) {
            return Err(crate::Error::DType {
                op: "attention",
                msg: format!("q, k, v are {dtype}, {}, {}", k.dtype(), v.dtype()),
            });
        }
        if !crate::backend::cuda::fused::has_kernel(geo.d) {
            // No kernel for this head dim: the CPU kernel, with the moves recorded so gradients come back.
            let (device, cpu) = (q.device(), crate::backend::Device::Cpu);
            let host = |t: &Tensor| t.to_device(cpu);
            return host(q)?.attention(&host(k)?, &host(v)?)?.to_device(device);
        }
        if dtype != DType::BF16 {
            let bf = |t: &Tensor| t.to_dtype(DType::BF16);
            return attention(&bf(q)?, &bf(k)?, &bf(v)?, geo)?.to_dtype(dtype);
        }
        let shape = AttentionShape {
            batch: geo.batch,
            heads: geo.heads,
            kv_heads: geo.kv_heads,
            tq: geo.tq,
            tk: geo.tk,
            d: geo.d,
            scale: geo.scale as f32,
        };
        let (out, lse) = attention_forward(q, k, v, shape)?;
        let saved = keep(&[q, k, v], [q, k, v, &out, &lse]);
        record("attention", &[q, k, v], out, move |dout, _| {
            let [q, k, v, o, lse] = saved.expect("saved when recorded");
            let (dq, dk, dv) = attention_backward(
                &q.get()?,
                &k.get()?,
                &v.get()?,
                &o.get()?,
                &lse.get()?,
                &dout.to_dtype(DType::BF16)?,
                shape,
            )?;
            Ok(vec![Some(dq), Some(dk), Some(dv)])
        })
    }
}
