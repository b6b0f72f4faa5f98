//! Launcher of `kernels/softmax.cu`: softmax and log_softmax over the last axis, one block per row.

use super::launch::{blocks, float_suffix, i32_of, i64_of};
use super::{config, Arg, DeviceBuffer};
use crate::error::{Error, Result};
use crate::shape::Layout;

/// Threads per row: a multiple of 32 up to 1024, about one element per thread for short rows.
pub(crate) fn row_threads(n: usize) -> u32 {
    (n.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// softmax (or log_softmax) over the last axis of `x` read through the contiguous `layout`.
pub(crate) fn forward(x: &DeviceBuffer, layout: &Layout, log: bool) -> Result<DeviceBuffer> {
    let op = if log { "log_softmax" } else { "softmax" };
    if !layout.is_contiguous() {
        return Err(Error::shape(
            op,
            format!("internal: input {:?} is not contiguous", layout.shape),
        ));
    }
    let t = float_suffix(op, x.dtype())?;
    let n = *layout.shape.last().unwrap_or(&1);
    let rows = layout.numel() / n.max(1);
    let out = x.gpu().alloc(x.dtype(), layout.numel())?;
    if rows > 0 && n > 0 {
        let blocks = blocks(op, "rows", rows)?;
        x.gpu().launch(
            "softmax",
            &format!("softmax_{t}"),
            config((blocks, 1, 1), row_threads(n), 0),
            &[
                Arg::Ptr(x.ptr(layout.offset)),
                Arg::Ptr(out.ptr(0)),
                Arg::I64(i64_of(op, rows)?),
                Arg::I32(i32_of(op, "a row of", n)?),
                Arg::I32(i32::from(log)),
            ],
        )?;
    }
    Ok(out)
}
