//! Embedding gather. `weight: [V, C]`, ids (u32) of shape `[..]` → `[.., C]`.
//! Backward: scatter-add of the output gradient into `[V, C]` (repeated ids accumulate).

use super::{float_dispatch, with_compute_dtype};
use crate::error::{Error, Result};
use crate::tape::record;
use crate::tensor::Tensor;

/// Rows `ids` of the contiguous table `w: [V, C]`, shaped `shape`, on `w`'s device.
fn gather(w: &Tensor, ids: &[u32], shape: &[usize]) -> Result<Tensor> {
    #[cfg(feature = "cuda-backend")]
    if w.is_cuda() {
        return crate::backend::cuda::embedding::forward(w, ids, shape);
    }
    let dim = w.shape()[1];
    float_dispatch!(w.dtype(), T, {
        let table = w.contiguous_data::<T>();
        let mut out = Vec::with_capacity(ids.len() * dim);
        for &i in ids {
            out.extend_from_slice(&table[i as usize * dim..(i as usize + 1) * dim]);
        }
        Tensor::from_vec(out, shape)
    })
}

/// The weight gradient `[vocab, dim]`: the rows of contiguous `g` added at their ids, in position order, on
/// `g`'s device. The GPU version is deterministic too (no atomics; see `backend::cuda::embedding`).
fn scatter_add(g: &Tensor, ids: &[u32], vocab: usize, dim: usize) -> Result<Tensor> {
    #[cfg(feature = "cuda-backend")]
    if g.is_cuda() {
        return crate::backend::cuda::embedding::backward(g, ids, vocab, dim);
    }
    let mut dw = Tensor::zeros(&[vocab, dim], g.dtype());
    float_dispatch!(g.dtype(), T, {
        let gv = g.contiguous_data::<T>();
        let d = dw.data_mut::<T>()?;
        for (row, &i) in gv.chunks(dim).zip(ids) {
            for (acc, &v) in d[i as usize * dim..(i as usize + 1) * dim]
                .iter_mut()
                .zip(row)
            {
                *acc += v;
            }
        }
    });
    Ok(dw)
}

impl Tensor {
    /// Rows `ids` of this `[V, C]` table, shaped `[ids_shape.., C]`.
    pub fn embedding(&self, ids: &[u32], ids_shape: &[usize]) -> Result<Tensor> {
        if self.ndim() != 2 || ids_shape.iter().product::<usize>() != ids.len() {
            return Err(Error::shape(
                "embedding",
                format!(
                    "weight {:?} must be [V, C] and {} ids must fill shape {ids_shape:?}",
                    self.shape(),
                    ids.len()
                ),
            ));
        }
        let (vocab, dim) = (self.shape()[0], self.shape()[1]);
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::Index {
                op: "embedding",
                msg: format!("id {bad} is out of range for a vocabulary of {vocab}"),
            });
        }
        let ids = ids.to_vec();
        let mut shape = ids_shape.to_vec();
        shape.push(dim);
        with_compute_dtype("embedding", &[self], |xs| {
            let w = xs[0].contiguous()?;
            let out = gather(&w, &ids, &shape)?;
            record("embedding", &[&w], out, move |g, _| {
                let g = g.contiguous()?;
                Ok(vec![Some(scatter_add(&g, &ids, vocab, dim)?)])
            })
        })
    }
}
