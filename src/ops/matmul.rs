//! Matrix products through the packed GEMM.
//!
//! - `matmul`: `a: [.., M, K] · b: [.., K, N]` → `[broadcast(..), M, N]`, batch dims broadcast. When `b` has no
//!   batch dims and `a`'s batch and row dims merge, the whole product is one GEMM of `(batch · M)` rows.
//! - `linear`: `x: [.., C_in] · weightᵀ` with `weight: [C_out, C_in]` (the Hugging Face layout) →
//!   `[.., C_out]`; its weight gradient is written in `[C_out, C_in]` directly (`dW = dyᵀ · x`).
//!
//! Backward: `dA = dC · Bᵀ`, `dB = Aᵀ · dC`, each summed over the batch dims its operand was broadcast along.

use super::{float_dispatch, keep, with_native_dtype};
use crate::backend::cpu::gemm::{gemm, GemmFloat, MatRef};
use crate::backend::cpu::recycle;
use crate::backend::StorageElement;
#[cfg(feature = "cuda-backend")]
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::broadcast_shapes;
use crate::tape::record_recomputable;
use crate::tensor::Tensor;

/// Whether dims `0..=last` of `t` merge into one dim of stride `strides[last]`: every dim of size above 1 must
/// step over all the dims after it (its stride is `strides[last]` times their sizes). Size-1 dims have no say,
/// but their sizes still count, so a size-1 dim cannot hide a gap between the dims around it.
fn mergeable(t: &Tensor, last: usize) -> bool {
    let mut span = t.strides()[last];
    for d in (0..last).rev() {
        span *= t.shape()[d + 1];
        if t.shape()[d] != 1 && t.strides()[d] != span {
            return false;
        }
    }
    true
}

fn check(op: &'static str, a: &Tensor, b: &Tensor) -> Result<Vec<usize>> {
    let incompatible = || {
        Error::shape(
            op,
            format!(
                "lhs {:?} and rhs {:?} are not compatible",
                a.shape(),
                b.shape()
            ),
        )
    };
    if a.ndim() < 2 || b.ndim() < 2 || a.shape()[a.ndim() - 1] != b.shape()[b.ndim() - 2] {
        return Err(incompatible());
    }
    let batch = broadcast_shapes(op, &a.shape()[..a.ndim() - 2], &b.shape()[..b.ndim() - 2])
        .map_err(|_| incompatible())?;
    let mut out = batch;
    out.push(a.shape()[a.ndim() - 2]);
    out.push(b.shape()[b.ndim() - 1]);
    Ok(out)
}

/// The forward product of already-checked operands of compute dtype `T`.
fn product<T: GemmFloat + StorageElement>(
    a: &Tensor,
    b: &Tensor,
    out_shape: &[usize],
) -> Result<Tensor> {
    let (na, nb) = (a.ndim(), b.ndim());
    let (m, k, n) = (a.shape()[na - 2], a.shape()[na - 1], b.shape()[nb - 1]);
    let batch: usize = out_shape[..out_shape.len() - 2].iter().product();
    let mut out = recycle::buffer::<T>(batch * m * n);
    let (da, db) = (a.data::<T>(), b.data::<T>());
    let view = |data, offset, t: &Tensor| MatRef {
        data,
        offset,
        row_stride: t.strides()[t.ndim() - 2],
        col_stride: t.strides()[t.ndim() - 1],
    };
    if nb == 2 && mergeable(a, na - 2) {
        let rows = batch * m;
        gemm(
            rows,
            n,
            k,
            T::ONE,
            view(da, a.layout.offset, a),
            view(db, b.layout.offset, b),
            T::ZERO,
            &mut out,
            n,
        );
    } else {
        let batch_shape = &out_shape[..out_shape.len() - 2];
        let batch_layout = |t: &Tensor| {
            let mut l = t.layout.clone();
            l.shape.truncate(t.ndim() - 2);
            l.strides.truncate(t.ndim() - 2);
            super::binary::broadcast_layout(&l, batch_shape)
        };
        let (la, lb) = (batch_layout(a), batch_layout(b));
        for ((oa, ob), c) in la.offsets().zip(lb.offsets()).zip(out.chunks_mut(m * n)) {
            gemm(
                m,
                n,
                k,
                T::ONE,
                view(da, oa, a),
                view(db, ob, b),
                T::ZERO,
                c,
                n,
            );
        }
    }
    Tensor::from_vec(out, out_shape)
}

impl Tensor {
    /// Batched matrix product `self · rhs` with broadcast batch dims.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let out_shape = check("matmul", self, rhs)?;
        #[cfg(feature = "cuda-backend")]
        if super::autocast(self) && rhs.dtype() == DType::F32 {
            let bf = |t: &Tensor| t.to_dtype(DType::BF16);
            return bf(self)?.matmul(&bf(rhs)?)?.to_dtype(DType::F32);
        }
        with_native_dtype("matmul", &[self, rhs], |xs| {
            let (a, b) = (&xs[0], &xs[1]);
            let out = match () {
                #[cfg(feature = "cuda-backend")]
                _ if a.is_cuda() => crate::backend::cuda::blas::matmul(a, b, &out_shape)?,
                _ => float_dispatch!(a.dtype(), T, product::<T>(a, b, &out_shape)?),
            };
            let saved = keep(&[a, b], [a, b]);
            let forward = |xs: &[Tensor]| xs[0].matmul(&xs[1]);
            record_recomputable("matmul", &[a, b], out, forward, move |g, needs| {
                let [a, b] = saved.expect("saved when recorded");
                let (a, b) = (a.get()?, b.get()?);
                let ga = if needs[0] {
                    Some(g.matmul(&b.transpose(-1, -2)?)?.sum_to_shape(a.shape())?)
                } else {
                    None
                };
                let gb = if !needs[1] {
                    None
                } else if b.ndim() == 2 {
                    // Fold every batch dim into the depth: one GEMM of Aᵀ [K, batch·M] · dC [batch·M, N].
                    let k = a.shape()[a.ndim() - 1];
                    let a2 = a.reshape(&[a.numel() / k.max(1), k])?;
                    let g2 = g.reshape(&[g.numel() / b.shape()[1].max(1), b.shape()[1]])?;
                    Some(a2.transpose(0, 1)?.matmul(&g2)?)
                } else {
                    Some(a.transpose(-1, -2)?.matmul(g)?.sum_to_shape(b.shape())?)
                };
                Ok(vec![ga, gb])
            })
        })
    }

    /// `self · weightᵀ` with `self: [.., C_in]` and `weight: [C_out, C_in]` → `[.., C_out]`.
    pub fn linear(&self, weight: &Tensor) -> Result<Tensor> {
        if weight.ndim() != 2
            || self.ndim() < 1
            || self.shape()[self.ndim() - 1] != weight.shape()[1]
        {
            return Err(Error::shape(
                "linear",
                format!(
                    "input {:?} and weight {:?} are not compatible (weight is [out, in])",
                    self.shape(),
                    weight.shape()
                ),
            ));
        }
        #[cfg(feature = "cuda-backend")]
        if super::autocast(self) && weight.dtype() == DType::F32 {
            let bf = |t: &Tensor| t.to_dtype(DType::BF16);
            return bf(self)?.linear(&bf(weight)?)?.to_dtype(DType::F32);
        }
        with_native_dtype("linear", &[self, weight], |xs| {
            let (x, w) = (&xs[0], &xs[1]);
            let c_in = w.shape()[1];
            let rows = x.numel() / c_in.max(1);
            let x2 = x.detach().reshape(&[rows, c_in])?;
            let wt = w.detach().transpose(0, 1)?;
            let mut shape = x.shape().to_vec();
            *shape.last_mut().unwrap() = w.shape()[0];
            let out_shape = [rows, w.shape()[0]];
            let out = match () {
                #[cfg(feature = "cuda-backend")]
                _ if x.is_cuda() => crate::backend::cuda::blas::matmul(&x2, &wt, &out_shape)?,
                _ => float_dispatch!(x.dtype(), T, product::<T>(&x2, &wt, &out_shape)?),
            };
            let out = out.reshape(&shape)?;
            let saved = keep(&[x, w], [x, w]);
            let x_shape = x.shape().to_vec();
            let forward = |xs: &[Tensor]| xs[0].linear(&xs[1]);
            record_recomputable("linear", &[x, w], out, forward, move |g, needs| {
                let [x, w] = saved.expect("saved when recorded");
                let (x, w) = (x.get()?, w.get()?);
                let x2 = x.reshape(&[rows, c_in])?;
                let g2 = g.reshape(&[x2.shape()[0], w.shape()[0]])?;
                let gx = needs[0]
                    .then(|| g2.matmul(&w)?.reshape(&x_shape))
                    .transpose()?;
                let gw = needs[1]
                    .then(|| g2.transpose(0, 1)?.matmul(&x2))
                    .transpose()?;
                Ok(vec![gx, gw])
            })
        })
    }
}
