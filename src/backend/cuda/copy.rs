//! Launchers of `kernels/copy.cu`: strided copies with dtype conversion (`to_dtype`, `contiguous`, `cat`, the
//! zero padding of narrow/cat gradients) and fills (`Tensor::zeros_on` / `full_on`).

use super::launch::{buffer, grid_1d, i64_of, suffix, view, THREADS};
use super::{config, Arg, DeviceBuffer, Gpu};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Writes the elements of `src` (any view, any dtype) into `dst` at `dst_layout` (a view of `dst` with as many
/// elements), converted to `dst`'s dtype.
pub(crate) fn copy_into(src: &Tensor, dst: &DeviceBuffer, dst_layout: &Layout) -> Result<()> {
    let n = src.numel();
    if n != dst_layout.numel() {
        return Err(Error::shape(
            "copy",
            format!(
                "source {:?} and destination {:?} differ in size",
                src.shape(),
                dst_layout.shape
            ),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let sb = buffer("copy", src)?;
    if !Arc::ptr_eq(sb.gpu(), dst.gpu()) {
        return Err(Error::Device {
            op: "copy",
            msg: format!(
                "source on cuda:{} and destination on cuda:{}",
                sb.gpu().ordinal,
                dst.gpu().ordinal
            ),
        });
    }
    let name = format!("copy_{}_{}", suffix(src.dtype()), suffix(dst.dtype()));
    dst.gpu().launch(
        "copy",
        &name,
        config(grid_1d(n), THREADS, 0),
        &[
            Arg::Ptr(sb.ptr(0)),
            Arg::Strided(view(&src.layout)?),
            Arg::Ptr(dst.ptr(0)),
            Arg::Strided(view(dst_layout)?),
            Arg::I64(i64_of("copy", n)?),
        ],
    )
}

/// A contiguous copy of `x` in `dtype` (the same dtype: `contiguous`).
pub(crate) fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    let out = buffer("to_dtype", x)?.gpu().alloc(dtype, x.numel())?;
    copy_into(x, &out, &Layout::contiguous(x.shape()))?;
    Ok(Tensor::from_device(out, x.shape()))
}

/// A buffer of `len` elements of `dtype`, each `value` rounded to the dtype.
pub(crate) fn fill(gpu: &Arc<Gpu>, dtype: DType, len: usize, value: f64) -> Result<DeviceBuffer> {
    let out = gpu.alloc(dtype, len)?;
    if len > 0 {
        gpu.launch(
            "copy",
            &format!("fill_{}", suffix(dtype)),
            config(grid_1d(len), THREADS, 0),
            &[
                Arg::Ptr(out.ptr(0)),
                Arg::I64(i64_of("fill", len)?),
                Arg::F64(value),
            ],
        )?;
    }
    Ok(out)
}

/// The region of the contiguous `layout` that holds `len` entries from `start` along `dim`.
fn region(layout: &Layout, dim: usize, start: usize, len: usize) -> Layout {
    let mut r = layout.clone();
    r.shape[dim] = len;
    r.offset += start * r.strides[dim];
    r
}

/// `xs` (one dtype, agreeing outside `dim`) concatenated along `dim` into a fresh tensor of `shape`.
pub(crate) fn cat(xs: &[Tensor], dim: usize, shape: &[usize]) -> Result<Tensor> {
    let first = xs
        .first()
        .ok_or_else(|| Error::shape("cat", "no tensors given"))?;
    let numel: usize = shape.iter().product();
    let out = buffer("cat", first)?.gpu().alloc(first.dtype(), numel)?;
    let base = Layout::contiguous(shape);
    let mut start = 0;
    for t in xs {
        let len = t.shape()[dim];
        copy_into(t, &out, &region(&base, dim, start, len))?;
        start += len;
    }
    Ok(Tensor::from_device(out, shape))
}

/// Zeros of `shape` (in `g`'s dtype) with `g` written at `start..` along `dim`: the backward of narrow and cat.
pub(crate) fn pad(g: &Tensor, shape: &[usize], dim: usize, start: usize) -> Result<Tensor> {
    let numel: usize = shape.iter().product();
    let out = fill(buffer("narrow", g)?.gpu(), g.dtype(), numel, 0.0)?;
    copy_into(
        g,
        &out,
        &region(&Layout::contiguous(shape), dim, start, g.shape()[dim]),
    )?;
    Ok(Tensor::from_device(out, shape))
}
