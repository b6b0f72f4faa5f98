//! Matrix products by device: `Storage::matmul`, `a: [.., M, K] · b: [.., K, N]` with batch dims broadcast.
//! The packed GEMM (`cpu::gemm`) here, cuBLAS on a GPU (`cuda::blas`).
//!
//! Shapes: operands are read through their layouts (transposes and broadcast batches cost nothing); the output
//! is a contiguous `out_shape = [batch.., M, N]`.

use super::cpu::gemm::{gemm, GemmFloat, MatRef};
use super::cpu::recycle;
use super::{float_dispatch, Storage, StorageElement};
use crate::error::Result;
use crate::shape::Layout;

/// Whether dims `0..=last` of `l` merge into one dim of stride `strides[last]`: every dim of size above 1 must
/// step over all the dims after it (its stride is `strides[last]` times their sizes). Size-1 dims have no say,
/// but their sizes still count, so a size-1 dim cannot hide a gap between the dims around it.
fn mergeable(l: &Layout, last: usize) -> bool {
    let mut span = l.strides[last];
    for d in (0..last).rev() {
        span *= l.shape[d + 1];
        if l.shape[d] != 1 && l.strides[d] != span {
            return false;
        }
    }
    true
}

/// The product of checked operands of compute dtype `T`. When `b` has no batch dims and `a`'s batch and row
/// dims merge, the whole product is one GEMM of `(batch · M)` rows.
fn product<T: GemmFloat + StorageElement>(
    (da, la): (&[T], &Layout),
    (db, lb): (&[T], &Layout),
    out_shape: &[usize],
) -> Vec<T> {
    let (na, nb) = (la.shape.len(), lb.shape.len());
    let (m, k, n) = (la.shape[na - 2], la.shape[na - 1], lb.shape[nb - 1]);
    let batch: usize = out_shape[..out_shape.len() - 2].iter().product();
    let mut out = recycle::buffer::<T>(batch * m * n);
    let view = |data, offset, l: &Layout| MatRef {
        data,
        offset,
        row_stride: l.strides[l.shape.len() - 2],
        col_stride: l.strides[l.shape.len() - 1],
    };
    if nb == 2 && mergeable(la, na - 2) {
        let rows = batch * m;
        gemm(
            rows,
            n,
            k,
            T::ONE,
            view(da, la.offset, la),
            view(db, lb.offset, lb),
            T::ZERO,
            &mut out,
            n,
        );
    } else {
        let batch_shape = &out_shape[..out_shape.len() - 2];
        let batch_layout = |l: &Layout| {
            let mut l = l.clone();
            l.shape.truncate(l.shape.len() - 2);
            l.strides.truncate(l.strides.len() - 2);
            l.broadcast_to(batch_shape)
        };
        let (ba, bb) = (batch_layout(la), batch_layout(lb));
        for ((oa, ob), c) in ba.offsets().zip(bb.offsets()).zip(out.chunks_mut(m * n)) {
            gemm(
                m,
                n,
                k,
                T::ONE,
                view(da, oa, la),
                view(db, ob, lb),
                T::ZERO,
                c,
                n,
            );
        }
    }
    out
}

impl Storage {
    /// `self · b` read through `la` and `lb` (`[.., M, K]` and `[.., K, N]`, checked by the op), contiguous
    /// `out_shape`, on their device.
    pub fn matmul(
        &self,
        la: &Layout,
        b: &Storage,
        lb: &Layout,
        out_shape: &[usize],
    ) -> Result<Storage> {
        if let (Storage::Cuda(a), Storage::Cuda(b)) = (self, b) {
            let out = super::cuda::blas::matmul((a, la), (b, lb), out_shape)?;
            return Ok(Storage::Cuda(out));
        }
        float_dispatch!(self.dtype(), T, {
            let out = product::<T>((self.host(), la), (b.host(), lb), out_shape);
            Ok(T::wrap(out))
        })
    }
}
