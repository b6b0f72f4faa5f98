//! Products with a quantized weight by device: `Storage::quant_linear` (`x · Wᵀ`) and
//! `Storage::quant_linear_backward` (`dy · W`), `W: [N, K]` a `QuantMatrix` in host memory. The panel kernels of
//! `cpu::quant_matmul` on the host; a GPU operand is refused with an error naming the op and the device.
//!
//! Shapes: `x: [rows, K]` → `[rows, N]`; `dy: [rows, N]` → `[rows, K]`; inputs read through contiguous layouts.

use super::cpu::{quant_matmul, recycle};
use super::{float_dispatch, QuantMatrix, Storage, StorageElement};
use crate::error::{Error, Result};
use crate::shape::Layout;

impl Storage {
    /// `self · Wᵀ`: `self` is `[rows, K]` through the contiguous `layout`, the result `[rows, N]`.
    pub fn quant_linear(&self, layout: &Layout, w: &QuantMatrix) -> Result<Storage> {
        self.quant_product("linear (quantized weight)", layout, w, false)
    }

    /// `self · W`: `self` is `dy: [rows, N]` through the contiguous `layout`, the result `dx: [rows, K]`.
    pub fn quant_linear_backward(&self, layout: &Layout, w: &QuantMatrix) -> Result<Storage> {
        self.quant_product("linear backward (quantized weight)", layout, w, true)
    }

    fn quant_product(
        &self,
        op: &'static str,
        layout: &Layout,
        w: &QuantMatrix,
        backward: bool,
    ) -> Result<Storage> {
        if !self.is_host() {
            return Err(Error::Device {
                op,
                msg: format!(
                    "a {:?} weight multiplies host tensors only; the operand is on {}",
                    w,
                    self.device()
                ),
            });
        }
        let [n, k] = w.shape();
        let (inner, outer) = if backward { (n, k) } else { (k, n) };
        let rows = layout.numel() / inner.max(1);
        float_dispatch!(self.dtype(), T, {
            let x = self.host_contiguous::<T>(layout);
            let mut y = recycle::buffer::<T>(rows * outer);
            if backward {
                quant_matmul::backward(x, rows, w, &mut y);
            } else {
                quant_matmul::forward(x, rows, w, &mut y);
            }
            Ok(T::wrap(y))
        })
    }
}
