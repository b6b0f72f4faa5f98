//! Launchers of `kernels/unary.cu`: pointwise math forward and backward. The op is the kernel's int code (by
//! name from `kernels/common.cuh`, see `backend::op_code`) with one f64 parameter.

use super::config;
use super::launch::{float_suffix, grid_1d, i64_of, view, THREADS};
use super::{Arg, DeviceBuffer};
use crate::error::{Error, Result};
use crate::shape::Layout;

/// `y = f(x)` over the elements of `x` read through `layout`, contiguous.
pub(crate) fn forward(
    x: &DeviceBuffer,
    layout: &Layout,
    op: i32,
    param: f64,
) -> Result<DeviceBuffer> {
    let t = float_suffix("unary", x.dtype())?;
    let n = layout.numel();
    let out = x.gpu().alloc(x.dtype(), n)?;
    if n > 0 {
        x.gpu().launch(
            "unary",
            &format!("unary_fwd_{t}"),
            config(grid_1d(n), THREADS, 0),
            &[
                Arg::Ptr(x.ptr(0)),
                Arg::Strided(view(layout)?),
                Arg::Ptr(out.ptr(0)),
                Arg::I64(i64_of("unary", n)?),
                Arg::I32(op),
                Arg::F64(param),
            ],
        )?;
    }
    Ok(out)
}

/// `dx = g · f'(x)`, `g` read through `lg` and `x` through `lx` (one shape), contiguous.
pub(crate) fn backward(
    g: &DeviceBuffer,
    lg: &Layout,
    x: &DeviceBuffer,
    lx: &Layout,
    op: i32,
    param: f64,
) -> Result<DeviceBuffer> {
    if lg.shape != lx.shape || g.dtype() != x.dtype() {
        return Err(Error::shape(
            "unary backward",
            format!(
                "gradient {:?} {} does not match input {:?} {}",
                lg.shape,
                g.dtype(),
                lx.shape,
                x.dtype()
            ),
        ));
    }
    let t = float_suffix("unary backward", x.dtype())?;
    let n = lx.numel();
    let out = x.gpu().alloc(x.dtype(), n)?;
    if n > 0 {
        x.gpu().launch(
            "unary",
            &format!("unary_bwd_{t}"),
            config(grid_1d(n), THREADS, 0),
            &[
                Arg::Ptr(g.ptr(0)),
                Arg::Strided(view(lg)?),
                Arg::Ptr(x.ptr(0)),
                Arg::Strided(view(lx)?),
                Arg::Ptr(out.ptr(0)),
                Arg::I64(i64_of("unary backward", n)?),
                Arg::I32(op),
                Arg::F64(param),
            ],
        )?;
    }
    Ok(out)
}
