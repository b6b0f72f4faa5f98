//! Launchers of `kernels/reduce.cu`: sum and max over axes (the input view split into kept and reduced dims by
//! `ops::reduce`; dispatched from `backend::reduce`), and the max backward.

use super::copy::fill;
use super::launch::{blocks, float_suffix, grid_1d, i32_of, i64_of, view, THREADS};
use super::{config, Arg, DeviceBuffer};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;

/// Outputs per block in warp mode (one warp each).
const WARPS: u32 = THREADS / 32;

/// The reduction of `x` (read at `kept` ⊕ `reduced`, kept carrying the view's offset) into a contiguous buffer
/// of `kept.numel()` elements. With `max`, the maximum and, per output element, the
/// index (logical, within its group) of the first maximal element: a buffer of i32 on the device.
pub(crate) fn reduce(
    x: &DeviceBuffer,
    kept: &Layout,
    reduced: &Layout,
    max: bool,
) -> Result<(DeviceBuffer, Option<DeviceBuffer>)> {
    let op = if max { "max" } else { "sum" };
    let gpu = x.gpu();
    let t = float_suffix(op, x.dtype())?;
    let (n_out, group) = (kept.numel(), reduced.numel());
    if max {
        // Indices travel as i32.
        i32_of(op, "a group of", group)?;
    }
    let out = gpu.alloc(x.dtype(), n_out)?;
    // i32 indices; the buffer is typed f32 only for its element size.
    let argmax = if max {
        Some(gpu.alloc(DType::F32, n_out)?)
    } else {
        None
    };
    if n_out > 0 {
        // Few long groups: one block of 1024 per output; otherwise one warp per output.
        let (name, grid, threads) = if n_out < 512 && group >= 4096 {
            let grid = blocks(op, "outputs", n_out)?;
            (format!("reduce_block_{t}"), (grid, 1, 1), 1024)
        } else {
            let grid = blocks(op, "blocks of outputs", n_out.div_ceil(WARPS as usize))?;
            (format!("reduce_warp_{t}"), (grid, 1, 1), THREADS)
        };
        gpu.launch(
            "reduce",
            &name,
            config(grid, threads, 0),
            &[
                Arg::Ptr(x.ptr(0)),
                Arg::Strided(view(kept)?),
                Arg::Strided(view(reduced)?),
                Arg::Ptr(out.ptr(0)),
                Arg::Ptr(argmax.as_ref().map_or(0, |b| b.ptr(0))),
                Arg::I64(i64_of(op, n_out)?),
                Arg::I64(i64_of(op, group)?),
                Arg::I32(i32::from(max)),
            ],
        )?;
    }
    Ok((out, argmax))
}

/// The max backward: zeros of the input (`kept.numel() · reduced.numel()` elements) with `g[o]` (read through
/// `lg`) at the maximum of each group `o`. `kept` and `reduced` split the input's contiguous layout as the
/// forward split its view.
pub(crate) fn max_backward(
    g: &DeviceBuffer,
    lg: &Layout,
    argmax: &DeviceBuffer,
    kept: &Layout,
    reduced: &Layout,
) -> Result<DeviceBuffer> {
    let t = float_suffix("max backward", g.dtype())?;
    let n_out = kept.numel();
    if lg.numel() != n_out || argmax.len() != n_out {
        return Err(Error::shape(
            "max backward",
            format!(
                "gradient {:?} and {} indices do not match {n_out} outputs",
                lg.shape,
                argmax.len()
            ),
        ));
    }
    let numel = n_out * reduced.numel();
    let dx = fill(g.gpu(), g.dtype(), numel, 0.0)?;
    if n_out > 0 {
        g.gpu().launch(
            "reduce",
            &format!("max_bwd_{t}"),
            config(grid_1d(n_out), THREADS, 0),
            &[
                Arg::Ptr(g.ptr(0)),
                Arg::Strided(view(lg)?),
                Arg::Ptr(argmax.ptr(0)),
                Arg::Ptr(dx.ptr(0)),
                Arg::Strided(view(kept)?),
                Arg::Strided(view(reduced)?),
                Arg::I64(i64_of("max backward", n_out)?),
            ],
        )?;
    }
    Ok(dx)
}
