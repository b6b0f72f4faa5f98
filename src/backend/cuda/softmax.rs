//! Launcher of `kernels/softmax.cu`: softmax and log_softmax over the last axis, one block per row.

use super::launch::{blocks, buffer, float_suffix, i32_of, i64_of};
use super::{config, Arg};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Threads per row: a multiple of 32 up to 1024, about one element per thread for short rows.
pub(crate) fn row_threads(n: usize) -> u32 {
    (n.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// softmax (or log_softmax) of contiguous `x` over its last axis.
pub(crate) fn forward(x: &Tensor, log: bool) -> Result<Tensor> {
    let op = if log { "log_softmax" } else { "softmax" };
    let xb = buffer(op, x)?;
    if !x.is_contiguous() {
        return Err(Error::shape(
            op,
            format!("internal: input {:?} is not contiguous", x.shape()),
        ));
    }
    let t = float_suffix(op, x.dtype())?;
    let n = *x.shape().last().unwrap_or(&1);
    let rows = x.numel() / n.max(1);
    let out = xb.gpu().alloc(x.dtype(), x.numel())?;
    if rows > 0 && n > 0 {
        let blocks = blocks(op, "rows", rows)?;
        xb.gpu().launch(
            "softmax",
            &format!("softmax_{t}"),
            config((blocks, 1, 1), row_threads(n), 0),
            &[
                Arg::Ptr(xb.ptr(x.layout.offset)),
                Arg::Ptr(out.ptr(0)),
                Arg::I64(i64_of(op, rows)?),
                Arg::I32(i32_of(op, "a row of", n)?),
                Arg::I32(i32::from(log)),
            ],
        )?;
    }
    Ok(Tensor::from_device(out, x.shape()))
}
