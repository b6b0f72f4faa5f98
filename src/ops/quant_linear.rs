//! `linear` over a frozen quantized weight: `x: [.., K] · Wᵀ` with `W: [N, K]` a `QuantMatrix` →
//! `[.., N]`, computed straight from W's blocks (`backend::quant_linear`).
//!
//! Backward: `dx = dy · W`, from the blocks again. W is frozen (it has no gradient and is not on the tape), so
//! nothing is saved for backward but the weight itself, which the node shares.

use super::with_precision;
use crate::backend::QuantMatrix;
use crate::error::{Error, Result};
use crate::tape::{record_recomputable, Rerun};
use crate::tensor::Tensor;

impl Tensor {
    /// `self · weightᵀ` with `self: [.., K]` and a quantized `weight: [N, K]` → `[.., N]`; gradients reach
    /// `self` only.
    pub fn linear_quantized(&self, weight: &QuantMatrix) -> Result<Tensor> {
        let [n, k] = weight.shape();
        if self.ndim() < 1 || self.shape()[self.ndim() - 1] != k {
            return Err(Error::shape(
                "linear_quantized",
                format!(
                    "input {:?} and weight {weight:?} are not compatible (weight is [out, in])",
                    self.shape()
                ),
            ));
        }
        with_precision("linear_quantized", &[self], |xs| {
            let x = xs[0].contiguous()?;
            let mut shape = x.shape().to_vec();
            *shape.last_mut().expect("checked above") = n;
            let y = x.storage.quant_linear(&x.layout, weight)?;
            let y = Tensor::from_storage(y, &shape);
            let x_shape = x.shape().to_vec();
            let w = weight.clone();
            let forward = {
                let w = weight.clone();
                move |xs: &[Tensor]| xs[0].linear_quantized(&w)
            };
            record_recomputable(
                "linear_quantized",
                Rerun::Costly,
                &[&x],
                y,
                forward,
                move |g, _| {
                    let g = g.contiguous()?;
                    let dx = g.storage.quant_linear_backward(&g.layout, &w)?;
                    Ok(vec![Some(Tensor::from_storage(dx, &x_shape))])
                },
            )
        })
    }
}

/// The composed reference: the weight dequantized to a full `[N, K]` tensor of `x`'s dtype, then `linear`.
pub fn linear_quantized_reference(x: &Tensor, weight: &QuantMatrix) -> Result<Tensor> {
    let w = Tensor::from_vec(weight.dequantize(), &weight.shape())?
        .to_dtype(x.dtype())?
        .to_device(x.device())?;
    x.linear(&w)
}
