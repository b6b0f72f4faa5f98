//! Embedding rows by device: `Storage::gather_rows` and its backward `Storage::scatter_add_rows` (repeated ids
//! accumulate in position order, on the GPU too: no atomics, so the weight gradient is deterministic). Host
//! loops here, `kernels/embedding.cu` on a GPU.
//!
//! Shapes: the table `[V, C]` and the gradient `[N, C]` are contiguous views; ids are checked `< V` by the op.

use super::cpu::recycle;
use super::{float_dispatch, Storage, StorageElement};
use crate::dtype::Float;
use crate::error::Result;
use crate::shape::Layout;

impl Storage {
    /// Rows `ids` of the `[V, C]` table `self` (contiguous view `layout`): `[ids.len(), C]`.
    pub fn gather_rows(&self, layout: &Layout, ids: &[u32]) -> Result<Storage> {
        if let Storage::Cuda(w) = self {
            return Ok(Storage::Cuda(super::cuda::embedding::forward(
                w, layout, ids,
            )?));
        }
        let dim = layout.shape[1];
        float_dispatch!(self.dtype(), T, {
            let table = self.host_contiguous::<T>(layout);
            let mut out = Vec::with_capacity(ids.len() * dim);
            for &i in ids {
                out.extend_from_slice(&table[i as usize * dim..(i as usize + 1) * dim]);
            }
            Ok(T::wrap(out))
        })
    }

    /// The weight gradient `[vocab, dim]`: the rows of the gradient `self` (contiguous view `layout`,
    /// `[ids.len(), dim]` in any shape) added at their ids, in position order.
    pub fn scatter_add_rows(
        &self,
        layout: &Layout,
        ids: &[u32],
        vocab: usize,
        dim: usize,
    ) -> Result<Storage> {
        if let Storage::Cuda(g) = self {
            return Ok(Storage::Cuda(super::cuda::embedding::backward(
                g, layout, ids, vocab, dim,
            )?));
        }
        float_dispatch!(self.dtype(), T, {
            let g = self.host_contiguous::<T>(layout);
            let mut dw = recycle::filled(vocab * dim, T::ZERO);
            for (row, &i) in g.chunks(dim).zip(ids) {
                for (acc, &v) in dw[i as usize * dim..(i as usize + 1) * dim]
                    .iter_mut()
                    .zip(row)
                {
                    *acc += v;
                }
            }
            Ok(T::wrap(dw))
        })
    }
}
