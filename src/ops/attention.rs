//! Fused causal scaled-dot-product attention with grouped-query heads, in the FlashAttention-2 shape.
//!
//! `q: [B, H, Tq, D]`, `k, v: [B, Hkv, Tk, D]` (`H` a multiple of `Hkv`, `Tk ≥ Tq`) → `[B, H, Tq, D]`.
//! Query `i` attends keys `j ≤ i + (Tk − Tq)` (so a KV cache of earlier positions works), scale `1/√D`.
//!
//! Forward keeps only O and the row log-sum-exp — nothing of size T² (masked scores of tiles wholly above
//! the diagonal are never computed). Backward (derivation in docs/kernels.md): `Dᵢ = rowsum(dOᵢ ⊙ Oᵢ)`; per
//! key tile, `P` is recomputed from Q, K and the log-sum-exp; `dV += Pᵀ dO`, `dS = P ⊙ (dO Vᵀ − D)`,
//! `dQ += dS K / √D`, `dK += dSᵀ Q / √D`. The kernels are the backend's (`backend::attention`: the tiled CPU
//! kernel, the flash kernels on a GPU, which compute in bf16); this file checks, records one tape node and
//! keeps the composed reference.
//!
//! Inputs are read through their strides (the last dim must be contiguous); outputs are stored `[B, T, H, D]`
//! and returned as `[B, H, T, D]` views, so the projections around attention reshape them for free.

use super::{keep, with_precision};
use crate::backend::{Geometry, Storage, View};
use crate::error::{Error, Result};
use crate::tape::record;
use crate::tensor::Tensor;

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

/// The storage of `t` with its layout.
fn view(t: &Tensor) -> View<'_> {
    (&t.storage, &t.layout)
}

/// A `[B, T, H, D]` storage as a `[B, H, T, D]` view.
fn as_heads_view(storage: Storage, b: usize, t: usize, h: usize, d: usize) -> Result<Tensor> {
    Tensor::from_storage(storage, &[b, t, h, d]).permute(&[0, 2, 1, 3])
}

impl Tensor {
    /// Causal attention of queries `self` over keys `k` and values `v` (see the module docs for shapes).
    pub fn attention(&self, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let geo = check(self, k, v)?;
        with_precision("attention", &[self, k, v], |xs| {
            let (q, k, v) = (
                rows_contiguous(&xs[0])?,
                rows_contiguous(&xs[1])?,
                rows_contiguous(&xs[2])?,
            );
            let (out, lse) = Storage::attention(view(&q), view(&k), view(&v), &geo)?;
            let out = as_heads_view(out, geo.batch, geo.tq, geo.heads, geo.d)?;
            let lse = Tensor::from_storage(lse, &[geo.batch * geo.heads * geo.tq]);
            let saved = keep(&[&q, &k, &v], [&q, &k, &v, &out, &lse]);
            record("attention", &[&q, &k, &v], out, move |dout, _| {
                let [q, k, v, o, lse] = saved.expect("saved when recorded");
                let (q, k, v, o, lse) = (q.get()?, k.get()?, v.get()?, o.get()?, lse.get()?);
                let dout = rows_contiguous(dout)?;
                let (dq, dk, dv) = Storage::attention_backward(
                    (view(&q), view(&k), view(&v)),
                    view(&o),
                    view(&lse),
                    view(&dout),
                    &geo,
                )?;
                let (b, d) = (geo.batch, geo.d);
                Ok(vec![
                    Some(as_heads_view(dq, b, geo.tq, geo.heads, d)?),
                    Some(as_heads_view(dk, b, geo.tk, geo.kv_heads, d)?),
                    Some(as_heads_view(dv, b, geo.tk, geo.kv_heads, d)?),
                ])
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
