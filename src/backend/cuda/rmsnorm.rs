//! Launchers of `kernels/rmsnorm.cu` (its header gives the parameter lists and launch configurations): the
//! fused RMSNorm forward, which keeps the row `rstd`, and the backward with its ordered weight-gradient
//! reduction. f32 and bf16, contiguous rows.

use super::launch::{dense, half_suffix, int, vector_row_threads};
use super::{config, Arg, DeviceBuffer};
use crate::dtype::DType;
use crate::error::Result;
use crate::shape::Layout;

/// RMSNorm of `x: [rows, cols]` with gain `w: [cols]` (contiguous views) → `(y, rstd: [rows] f32)`.
pub(crate) fn forward(
    x: (&DeviceBuffer, &Layout),
    w: (&DeviceBuffer, &Layout),
    eps: f64,
) -> Result<(DeviceBuffer, DeviceBuffer)> {
    const OP: &str = "rms_norm";
    let numel = x.1.numel();
    let cols = *x.1.shape.last().unwrap_or(&1);
    let rows = numel / cols.max(1);
    let (gpu, dtype) = (x.0.gpu(), x.0.dtype());
    let y = gpu.alloc(dtype, numel)?;
    let rstd = gpu.alloc(DType::F32, rows)?;
    let name = format!("rmsnorm_fwd_{}", half_suffix(OP, dtype)?);
    let smem = (cols * dtype.size_in_bytes()) as u32;
    let args = [
        dense(OP, x)?,
        dense(OP, w)?,
        Arg::Ptr(y.ptr(0)),
        Arg::Ptr(rstd.ptr(0)),
        int(OP, rows)?,
        int(OP, cols)?,
        Arg::F32(eps as f32),
    ];
    if rows > 0 {
        gpu.launch(
            "rmsnorm",
            &name,
            config((rows as u32, 1, 1), vector_row_threads(cols, dtype), smem),
            &args,
        )?;
    }
    Ok((y, rstd))
}

/// The RMSNorm backward: `(dx, dw)` from `x`, `w`, the kept `rstd` and `dy` (contiguous views).
pub(crate) fn backward(
    x: (&DeviceBuffer, &Layout),
    w: (&DeviceBuffer, &Layout),
    rstd: (&DeviceBuffer, &Layout),
    dy: (&DeviceBuffer, &Layout),
) -> Result<(DeviceBuffer, DeviceBuffer)> {
    const OP: &str = "rms_norm backward";
    let numel = x.1.numel();
    let cols = *x.1.shape.last().unwrap_or(&1);
    let rows = numel / cols.max(1);
    let (gpu, dtype) = (x.0.gpu(), x.0.dtype());
    let t = half_suffix(OP, dtype)?;
    let dx = gpu.alloc(dtype, numel)?;
    let dw = gpu.alloc(dtype, cols)?;
    // A few row ranges per multiprocessor; their partial weight gradients are summed in order afterwards.
    let blocks = rows.clamp(1, 512);
    let partial = gpu.alloc(DType::F32, blocks * cols)?;
    if rows > 0 {
        let smem = (cols * (2 * dtype.size_in_bytes() + 4)) as u32;
        gpu.launch(
            "rmsnorm",
            &format!("rmsnorm_bwd_{t}"),
            config((blocks as u32, 1, 1), vector_row_threads(cols, dtype), smem),
            &[
                dense(OP, x)?,
                dense(OP, w)?,
                dense(OP, rstd)?,
                dense(OP, dy)?,
                Arg::Ptr(dx.ptr(0)),
                Arg::Ptr(partial.ptr(0)),
                int(OP, rows)?,
                int(OP, cols)?,
            ],
        )?;
    }
    if cols == 0 {
        return Ok((dx, dw));
    }
    gpu.launch(
        "rmsnorm",
        &format!("rmsnorm_dw_reduce_{t}"),
        config((cols.div_ceil(256) as u32, 1, 1), 256, 0),
        &[
            Arg::Ptr(partial.ptr(0)),
            Arg::Ptr(dw.ptr(0)),
            int(OP, if rows > 0 { blocks } else { 0 })?,
            int(OP, cols)?,
        ],
    )?;
    Ok((dx, dw))
}
