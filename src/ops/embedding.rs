//! Embedding gather. `weight: [V, C]`, ids (u32) of shape `[..]` → `[.., C]`.
//! Backward: scatter-add of the output gradient into `[V, C]` (repeated ids accumulate).

use super::with_precision;
use crate::error::{Error, Result};
use crate::tape::record;
use crate::tensor::Tensor;

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
        with_precision("embedding", &[self], |xs| {
            let w = xs[0].contiguous()?;
            let out = Tensor::from_storage(w.storage.gather_rows(&w.layout, &ids)?, &shape);
            record("embedding", &[&w], out, move |g, _| {
                let g = g.contiguous()?;
                let dw = g.storage.scatter_add_rows(&g.layout, &ids, vocab, dim)?;
                Ok(vec![Some(Tensor::from_storage(dw, &[vocab, dim]))])
            })
        })
    }
}
