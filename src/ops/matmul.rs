//! Matrix products through the packed GEMM.
//!
//! - `matmul`: `a: [.., M, K] · b: [.., K, N]` → `[broadcast(..), M, N]`, batch dims broadcast. When `b` has no
//!   batch dims and `a`'s batch and row dims merge, the whole product is one GEMM of `(batch · M)` rows.
//! - `linear`: `x: [.., C_in] · weightᵀ` with `weight: [C_out, C_in]` (the Hugging Face layout) →
//!   `[.., C_out]`; its weight gradient is written in `[C_out, C_in]` directly (`dW = dyᵀ · x`).
//!
//! Backward: `dA = dC · Bᵀ`, `dB = Aᵀ · dC`, each summed over the batch dims its operand was broadcast along.

use super::{keep, with_precision};
use crate::error::{Error, Result};
use crate::shape::broadcast_shapes;
use crate::tape::{record_recomputable, Rerun};
use crate::tensor::Tensor;

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

impl Tensor {
    /// Batched matrix product `self · rhs` with broadcast batch dims.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let out_shape = check("matmul", self, rhs)?;
        with_precision("matmul", &[self, rhs], |xs| {
            let (a, b) = (&xs[0], &xs[1]);
            let out = a
                .storage
                .matmul(&a.layout, &b.storage, &b.layout, &out_shape)?;
            let out = Tensor::from_storage(out, &out_shape);
            let saved = keep(&[a, b], [a, b]);
            let forward = |xs: &[Tensor]| xs[0].matmul(&xs[1]);
            record_recomputable(
                "matmul",
                Rerun::Costly,
                &[a, b],
                out,
                forward,
                move |g, needs| {
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
                },
            )
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
        with_precision("linear", &[self, weight], |xs| {
            let (x, w) = (&xs[0], &xs[1]);
            let c_in = w.shape()[1];
            let rows = x.numel() / c_in.max(1);
            let x2 = x.detach().reshape(&[rows, c_in])?;
            let wt = w.detach().transpose(0, 1)?;
            let mut shape = x.shape().to_vec();
            *shape.last_mut().unwrap() = w.shape()[0];
            let out_shape = [rows, w.shape()[0]];
            let out = x2
                .storage
                .matmul(&x2.layout, &wt.storage, &wt.layout, &out_shape)?;
            let out = Tensor::from_storage(out, &shape);
            // Each operand is kept only for the other's gradient: the input of a frozen weight is not.
            let saved_x = w.is_tracked().then(|| keep(&[x, w], [x])).flatten();
            let saved_w = x.is_tracked().then(|| keep(&[x, w], [w])).flatten();
            let x_shape = x.shape().to_vec();
            let forward = |xs: &[Tensor]| xs[0].linear(&xs[1]);
            record_recomputable(
                "linear",
                Rerun::Costly,
                &[x, w],
                out,
                forward,
                move |g, needs| {
                    let g2 = g.reshape(&[rows, g.numel() / rows.max(1)])?;
                    let gx = match (needs[0], saved_w) {
                        (true, Some([w])) => Some(g2.matmul(&w.get()?)?.reshape(&x_shape)?),
                        _ => None,
                    };
                    let gw = match (needs[1], saved_x) {
                        (true, Some([x])) => {
                            let x2 = x.get()?.reshape(&[rows, c_in])?;
                            Some(g2.transpose(0, 1)?.matmul(&x2)?)
                        }
                        _ => None,
                    };
                    Ok(vec![gx, gw])
                },
            )
        })
    }
}
