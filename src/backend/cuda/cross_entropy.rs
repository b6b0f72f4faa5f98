//! Launchers of `kernels/cross_entropy.cu`: the fused softmax + cross-entropy forward (row log-sum-exp kept)
//! and backward. Targets are uploaded as u32 on each call (forward and backward); they are small.

use super::launch::{blocks, float_suffix, i32_of, i64_of, upload_u32};
use super::softmax::row_threads;
use super::{config, Arg, DeviceBuffer};
use crate::backend::Labels;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;

/// The ignore index as the kernels take it: (value, whether there is one).
fn ignore_args(ignore: Option<u32>) -> [Arg; 2] {
    [
        Arg::I32(ignore.unwrap_or(0) as i32),
        Arg::I32(i32::from(ignore.is_some())),
    ]
}

/// The loss (one element: the sum over kept rows of `lse − x[target]`, divided by `max(kept, 1)`) and the row
/// log-sum-exp `[rows]` of the logits `x` (contiguous view `layout`, one row per target; checked by
/// `backend::cross_entropy`).
pub(crate) fn forward(
    x: &DeviceBuffer,
    layout: &Layout,
    labels: &Labels,
) -> Result<(DeviceBuffer, DeviceBuffer)> {
    let (targets, ignore, kept) = (labels.targets, labels.ignore_index, labels.kept);
    let rows = targets.len();
    let vocab = layout.shape.last().copied().unwrap_or(1);
    let xb = x;
    let gpu = xb.gpu();
    let t = float_suffix("cross_entropy", x.dtype())?;
    let lse = gpu.alloc(x.dtype(), rows)?;
    let row_loss = gpu.alloc(DType::F64, rows)?;
    let loss = gpu.alloc(x.dtype(), 1)?;
    if rows > 0 {
        let targets_d = upload_u32(gpu, targets)?;
        let [ignore_value, has_ignore] = ignore_args(ignore);
        gpu.launch(
            "cross_entropy",
            &format!("ce_fwd_{t}"),
            config(
                (blocks("cross_entropy", "rows", rows)?, 1, 1),
                row_threads(vocab),
                0,
            ),
            &[
                Arg::Ptr(xb.ptr(layout.offset)),
                Arg::Ptr(targets_d.ptr(0)),
                Arg::Ptr(lse.ptr(0)),
                Arg::Ptr(row_loss.ptr(0)),
                Arg::I64(i64_of("cross_entropy", rows)?),
                Arg::I32(i32_of("cross_entropy", "a vocabulary of", vocab)?),
                ignore_value,
                has_ignore,
            ],
        )?;
    }
    gpu.launch(
        "cross_entropy",
        &format!("ce_sum_{t}"),
        config((1, 1, 1), 1024, 0),
        &[
            Arg::Ptr(row_loss.ptr(0)),
            Arg::Ptr(loss.ptr(0)),
            Arg::I64(i64_of("cross_entropy", rows)?),
            Arg::I64(i64_of("cross_entropy", kept)?),
        ],
    )?;
    Ok((loss, lse))
}

/// `dx = (softmax(x) − onehot(target)) · g · norm`, zero on ignored rows; `x` the logits (a contiguous view,
/// one row per target), `lse` their row log-sum-exp and `g` the loss gradient (one element), each with its
/// layout (shapes checked by `backend::cross_entropy`).
pub(crate) fn backward(
    (xb, lx): (&DeviceBuffer, &Layout),
    (lb, llse): (&DeviceBuffer, &Layout),
    (gb, lg): (&DeviceBuffer, &Layout),
    labels: &Labels,
    norm: f64,
) -> Result<DeviceBuffer> {
    let (targets, ignore) = (labels.targets, labels.ignore_index);
    let rows = targets.len();
    let vocab = lx.shape.last().copied().unwrap_or(1);
    if gb.dtype() != xb.dtype() || lb.dtype() != xb.dtype() {
        return Err(Error::DType {
            op: "cross_entropy backward",
            msg: format!(
                "internal: gradient {} and lse {} do not match logits {}",
                gb.dtype(),
                lb.dtype(),
                xb.dtype()
            ),
        });
    }
    let gpu = xb.gpu();
    let t = float_suffix("cross_entropy backward", xb.dtype())?;
    let dx = gpu.alloc(xb.dtype(), rows * vocab)?;
    if rows > 0 && vocab > 0 {
        let targets_d = upload_u32(gpu, targets)?;
        let [ignore_value, has_ignore] = ignore_args(ignore);
        gpu.launch(
            "cross_entropy",
            &format!("ce_bwd_{t}"),
            config(
                (blocks("cross_entropy backward", "rows", rows)?, 1, 1),
                row_threads(vocab),
                0,
            ),
            &[
                Arg::Ptr(xb.ptr(lx.offset)),
                Arg::Ptr(lb.ptr(llse.offset)),
                Arg::Ptr(targets_d.ptr(0)),
                Arg::Ptr(gb.ptr(lg.offset)),
                Arg::Ptr(dx.ptr(0)),
                Arg::I64(i64_of("cross_entropy backward", rows)?),
                Arg::I32(i32_of("cross_entropy backward", "a vocabulary of", vocab)?),
                ignore_value,
                has_ignore,
                Arg::F64(norm),
            ],
        )?;
    }
    Ok(dx)
}
