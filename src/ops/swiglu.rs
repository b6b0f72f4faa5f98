//! Fused SwiGLU gate: `silu(a) ⊙ b`.
//!
//! `a: [..]`, `b: [..]` (same shape) → `[..]`. Backward: `da = dy ⊙ b ⊙ σ(a)(1 + a(1 − σ(a)))`,
//! `db = dy ⊙ silu(a)`; both from one pass over `a`, `b` and `dy`.

use super::{keep, with_precision};
use crate::error::{Error, Result};
use crate::tape::{record_recomputable, Rerun};
use crate::tensor::Tensor;

impl Tensor {
    /// `silu(self) ⊙ up` for a gate `self` and an up projection `up` of the same shape.
    pub fn swiglu(&self, up: &Tensor) -> Result<Tensor> {
        if self.shape() != up.shape() {
            return Err(Error::shape(
                "swiglu",
                format!("gate {:?} and up {:?} differ", self.shape(), up.shape()),
            ));
        }
        with_precision("swiglu", &[self, up], |xs| {
            let (a, b) = (xs[0].contiguous()?, xs[1].contiguous()?);
            let shape = a.shape().to_vec();
            let y = a.storage.swiglu(&a.layout, (&b.storage, &b.layout))?;
            let y = Tensor::from_storage(y, &shape);
            let saved = keep(&[&a, &b], [&a, &b]);
            let forward = |xs: &[Tensor]| xs[0].swiglu(&xs[1]);
            record_recomputable(
                "swiglu",
                Rerun::Cheap,
                &[&a, &b],
                y,
                forward,
                move |g, _| {
                    let [a, b] = saved.expect("saved when recorded");
                    let (a, b) = (a.get()?, b.get()?);
                    let g = g.contiguous()?;
                    let (da, db) = a.storage.swiglu_backward(
                        &a.layout,
                        (&b.storage, &b.layout),
                        (&g.storage, &g.layout),
                    )?;
                    let (da, db) = (
                        Tensor::from_storage(da, &shape),
                        Tensor::from_storage(db, &shape),
                    );
                    Ok(vec![Some(da), Some(db)])
                },
            )
        })
    }
}

/// The composed reference: `silu(a) ⊙ b`.
pub fn swiglu_reference(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.silu()?.mul(b)
}
