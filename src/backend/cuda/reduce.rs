//! Launchers of `kernels/reduce.cu`: sum and max over axes (the input view split into kept and reduced dims by
//! `ops::reduce`), and the max backward.

use super::copy::fill;
use super::launch::{blocks, buffer, float_suffix, grid_1d, i32_of, i64_of, view, THREADS};
use super::{config, Arg, DeviceBuffer};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;
use crate::tensor::Tensor;

/// Outputs per block in warp mode (one warp each).
const WARPS: u32 = THREADS / 32;

/// The reduction of `x` (read at `kept` ⊕ `reduced`, kept carrying the view's offset) into a contiguous tensor
/// of `shape` (the kept dims, with or without the kept 1s). With `max`, the maximum and, per output element, the
/// index (logical, within its group) of the first maximal element: a buffer of i32 on the device.
pub(crate) fn reduce(
    x: &Tensor,
    kept: &Layout,
    reduced: &Layout,
    shape: &[usize],
    max: bool,
) -> Result<(Tensor, Option<DeviceBuffer>)> {
    let op = if max { "max" } else { "sum" };
    let xb = buffer(op, x)?;
    let gpu = xb.gpu();
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
                Arg::Ptr(xb.ptr(0)),
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
    Ok((Tensor::from_device(out, shape), argmax))
}

/// The max backward: zeros of `input_shape` with `g[o]` at the maximum of each group `o`. `kept` and `reduced`
/// split the contiguous layout of `input_shape` as the forward split the input's.
pub(crate) fn max_backward(
    g: &Tensor,
    argmax: &DeviceBuffer,
    input_shape: &[usize],
    kept: &Layout,
    reduced: &Layout,
) -> Result<Tensor> {
    let gb = buffer("max backward", g)?;
    let t = float_suffix("max backward", g.dtype())?;
    let n_out = kept.numel();
    if g.numel() != n_out || argmax.len() != n_out {
        return Err(Error::shape(
            "max backward",
            format!(
                "gradient {:?} and {} indices do not match {n_out} outputs",
                g.shape(),
                argmax.len()
            ),
        ));
    }
    let numel: usize = input_shape.iter().product();
    let dx = fill(gb.gpu(), g.dtype(), numel, 0.0)?;
    if n_out > 0 {
        gb.gpu().launch(
            "reduce",
            &format!("max_bwd_{t}"),
            config(grid_1d(n_out), THREADS, 0),
            &[
                Arg::Ptr(gb.ptr(0)),
                Arg::Strided(view(&g.layout)?),
                Arg::Ptr(argmax.ptr(0)),
                Arg::Ptr(dx.ptr(0)),
                Arg::Strided(view(kept)?),
                Arg::Strided(view(reduced)?),
                Arg::I64(i64_of("max backward", n_out)?),
            ],
        )?;
    }
    Ok(Tensor::from_device(dx, input_shape))
}
