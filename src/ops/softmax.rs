//! softmax and log_softmax over the last axis, numerically stable (the row maximum is subtracted first).
//!
//! `x: [.., N]` → `[.., N]`. Backward: softmax `dx = y ⊙ (dy − Σ dy ⊙ y)`; log_softmax `dx = dy − eʸ · Σ dy`.

use super::{keep, with_precision};
use crate::error::{Error, Result};
use crate::tape::{record_recomputable, Rerun};
use crate::tensor::Tensor;

fn softmax_op(x: &Tensor, log: bool) -> Result<Tensor> {
    let op = if log { "log_softmax" } else { "softmax" };
    if x.ndim() == 0 || x.shape()[x.ndim() - 1] == 0 {
        return Err(Error::shape(
            op,
            format!("input {:?} has no last axis to normalize", x.shape()),
        ));
    }
    with_precision(op, &[x], |xs| {
        let x = xs[0].contiguous()?;
        let y = Tensor::from_storage(x.storage.softmax(&x.layout, log)?, x.shape());
        let saved = keep(&[&x], [&y]);
        let forward = move |xs: &[Tensor]| softmax_op(&xs[0], log);
        record_recomputable(op, Rerun::Cheap, &[&x], y, forward, move |g, _| {
            let [saved] = saved.expect("saved when recorded");
            let saved = saved.get()?;
            let sum_axis = [-1isize];
            let dx = if log {
                g.sub(&saved.exp()?.mul(&g.sum(&sum_axis, true)?)?)?
            } else {
                saved.mul(&g.sub(&g.mul(&saved)?.sum(&sum_axis, true)?)?)?
            };
            Ok(vec![Some(dx)])
        })
    })
}

impl Tensor {
    /// `eˣ / Σ eˣ` over the last axis.
    pub fn softmax(&self) -> Result<Tensor> {
        softmax_op(self, false)
    }

    /// `x − log Σ eˣ` over the last axis.
    pub fn log_softmax(&self) -> Result<Tensor> {
        softmax_op(self, true)
    }
}
