//! Launchers of `kernels/cross_entropy.cu`: the fused softmax + cross-entropy forward (row log-sum-exp kept)
//! and backward. Targets are uploaded as u32 on each call (forward and backward); they are small.

use super::launch::{blocks, buffer, float_suffix, i32_of, i64_of, upload_u32};
use super::softmax::row_threads;
use super::{config, Arg};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn check(x: &Tensor, rows: usize, vocab: usize) -> Result<()> {
    if !x.is_contiguous() || x.numel() != rows * vocab {
        return Err(Error::shape(
            "cross_entropy",
            format!(
                "internal: logits {:?} are not {rows} contiguous rows of {vocab}",
                x.shape()
            ),
        ));
    }
    Ok(())
}

/// The ignore index as the kernels take it: (value, whether there is one).
fn ignore_args(ignore: Option<u32>) -> [Arg; 2] {
    [
        Arg::I32(ignore.unwrap_or(0) as i32),
        Arg::I32(i32::from(ignore.is_some())),
    ]
}

/// The loss (a scalar `[]`: the sum over kept rows of `lse − x[target]`, divided by `max(kept, 1)`) and the row
/// log-sum-exp `[rows]` of contiguous logits `x` holding `rows × vocab` elements.
pub(crate) fn forward(
    x: &Tensor,
    rows: usize,
    vocab: usize,
    targets: &[u32],
    ignore: Option<u32>,
    kept: usize,
) -> Result<(Tensor, Tensor)> {
    check(x, rows, vocab)?;
    let xb = buffer("cross_entropy", x)?;
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
                Arg::Ptr(xb.ptr(x.layout.offset)),
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
    Ok((
        Tensor::from_device(loss, &[]),
        Tensor::from_device(lse, &[rows]),
    ))
}

/// `dx = (softmax(x) − onehot(target)) · g · norm`, zero on ignored rows; `g` the loss gradient (one element),
/// `x` the contiguous logits and `lse` their row log-sum-exp.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    x: &Tensor,
    lse: &Tensor,
    rows: usize,
    vocab: usize,
    targets: &[u32],
    ignore: Option<u32>,
    g: &Tensor,
    norm: f64,
) -> Result<Tensor> {
    check(x, rows, vocab)?;
    let (xb, lb, gb) = (
        buffer("cross_entropy backward", x)?,
        buffer("cross_entropy backward", lse)?,
        buffer("cross_entropy backward", g)?,
    );
    if g.numel() != 1 || g.dtype() != x.dtype() || lse.numel() != rows || !lse.is_contiguous() {
        return Err(Error::shape(
            "cross_entropy backward",
            format!(
                "internal: gradient {:?} {} / lse {:?} do not fit logits {:?} {}",
                g.shape(),
                g.dtype(),
                lse.shape(),
                x.shape(),
                x.dtype()
            ),
        ));
    }
    let gpu = xb.gpu();
    let t = float_suffix("cross_entropy backward", x.dtype())?;
    let dx = gpu.alloc(x.dtype(), rows * vocab)?;
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
                Arg::Ptr(xb.ptr(x.layout.offset)),
                Arg::Ptr(lb.ptr(lse.layout.offset)),
                Arg::Ptr(targets_d.ptr(0)),
                Arg::Ptr(gb.ptr(g.layout.offset)),
                Arg::Ptr(dx.ptr(0)),
                Arg::I64(i64_of("cross_entropy backward", rows)?),
                Arg::I32(i32_of("cross_entropy backward", "a vocabulary of", vocab)?),
                ignore_value,
                has_ignore,
                Arg::F64(norm),
            ],
        )?;
    }
    Ok(Tensor::from_device(dx, x.shape()))
}
