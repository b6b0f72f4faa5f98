//! Products with a quantized weight by device: `Storage::quant_linear` (`x · Wᵀ`) and
//! `Storage::quant_linear_backward` (`dy · W`), `W: [N, K]` a `QuantMatrix`. On the host, the panel kernels of
//! `cpu::quant_matmul`; on a GPU, W's blocks (uploaded once, `QuantMatrix::on_gpu`) are expanded by
//! `kernels/dequant.cu` to the operand's dtype (f32, or bf16 under bf16 precision) into a buffer of the
//! device's pool, which cuBLAS multiplies and which returns to the pool (and serves the next layer's weight)
//! as soon as the product is queued.
//!
//! Shapes: `x: [rows, K]` → `[rows, N]`; `dy: [rows, N]` → `[rows, K]`; inputs read through contiguous layouts.

use super::cpu::{quant_matmul, recycle};
use super::{float_dispatch, QuantMatrix, Storage, StorageElement};
use crate::dtype::DType;
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
        let [n, k] = w.shape();
        let (inner, outer) = if backward { (n, k) } else { (k, n) };
        let rows = layout.numel() / inner.max(1);
        if let Storage::Cuda(x) = self {
            if !matches!(x.dtype(), DType::F32 | DType::BF16) {
                return Err(Error::DType {
                    op,
                    msg: format!(
                        "a {w:?} weight multiplies f32 or bf16 on the GPU, not {}",
                        x.dtype()
                    ),
                });
            }
            let blocks = w.on_gpu(x.gpu(), x.ordinal())?;
            let dense = super::cuda::dequant::dequantize(&blocks, w.ggml_type(), n * k, x.dtype())?;
            let operand = Layout {
                shape: vec![rows, inner],
                strides: vec![inner, 1],
                offset: layout.offset,
            };
            // W is [N, K] row-major: read as Wᵀ ([K, N], strides [1, K]) forward, as itself backward.
            let weight = if backward {
                Layout::contiguous(&[n, k])
            } else {
                Layout {
                    shape: vec![k, n],
                    strides: vec![1, k],
                    offset: 0,
                }
            };
            let y = super::cuda::blas::matmul((x, &operand), (&dense, &weight), &[rows, outer])?;
            return Ok(Storage::Cuda(y));
        }
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
