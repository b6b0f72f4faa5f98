//! Fused RMSNorm: `y = x / √(mean(x²) + eps) · w`.
//!
//! `x: [.., C]`, `w: [C]` → `[.., C]`. Forward keeps the per-row `rstd = 1/√(mean(x²) + eps)`.
//! Backward (derivation in docs/kernels.md): `dw = Σ_rows dy ⊙ x · rstd`;
//! `dx = rstd · (dy ⊙ w − x · rstd² · mean(dy ⊙ w ⊙ x))`.

use super::{keep, with_precision};
use crate::error::{Error, Result};
use crate::tape::{record_recomputable, Rerun};
use crate::tensor::Tensor;

impl Tensor {
    /// RMSNorm over the last axis with gain `weight: [C]`.
    pub fn rms_norm(&self, weight: &Tensor, eps: f64) -> Result<Tensor> {
        if self.ndim() == 0 || weight.shape() != [self.shape()[self.ndim() - 1]] {
            return Err(Error::shape(
                "rms_norm",
                format!(
                    "input {:?} and weight {:?} are not compatible",
                    self.shape(),
                    weight.shape()
                ),
            ));
        }
        with_precision("rms_norm", &[self, weight], |xs| {
            let (x, w) = (xs[0].contiguous()?, xs[1].contiguous()?);
            let shape = x.shape().to_vec();
            let (y, rstd) = x
                .storage
                .rms_norm(&x.layout, (&w.storage, &w.layout), eps)?;
            let rows = rstd.len();
            let (y, rstd) = (
                Tensor::from_storage(y, &shape),
                Tensor::from_storage(rstd, &[rows]),
            );
            let saved = keep(&[&x, &w], [&x, &w, &rstd]);
            let forward = move |xs: &[Tensor]| xs[0].rms_norm(&xs[1], eps);
            record_recomputable(
                "rms_norm",
                Rerun::Cheap,
                &[&x, &w],
                y,
                forward,
                move |g, _| {
                    let [x, w, rstd] = saved.expect("saved when recorded");
                    let (x, w, rstd) = (x.get()?, w.get()?, rstd.get()?);
                    let g = g.contiguous()?;
                    let (dx, dw) = x.storage.rms_norm_backward(
                        &x.layout,
                        (&w.storage, &w.layout),
                        (&rstd.storage, &rstd.layout),
                        (&g.storage, &g.layout),
                    )?;
                    let (dx, dw) = (
                        Tensor::from_storage(dx, x.shape()),
                        Tensor::from_storage(dw, w.shape()),
                    );
                    Ok(vec![Some(dx), Some(dw)])
                },
            )
        })
    }
}

/// The composed reference: `x · rsqrt(mean(x², -1) + eps) · w`.
pub fn rms_norm_reference(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.mul(x)?.mean(&[-1], true)?;
    x.mul(&ms.add_scalar(eps)?.rsqrt()?)?.mul(weight)
}
