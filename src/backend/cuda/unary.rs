//! Launchers of `kernels/unary.cu`: pointwise math forward and backward. The op is the kernel's int code (the
//! order of `ops::unary::Unary`) with one f64 parameter.

use super::config;
use super::launch::{buffer, float_suffix, grid_1d, i64_of, view, THREADS};
use super::Arg;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// `y = f(x)` over the elements of `x` (any view), contiguous.
pub(crate) fn forward(x: &Tensor, op: i32, param: f64) -> Result<Tensor> {
    let xb = buffer("unary", x)?;
    let t = float_suffix("unary", x.dtype())?;
    let n = x.numel();
    let out = xb.gpu().alloc(x.dtype(), n)?;
    if n > 0 {
        xb.gpu().launch(
            "unary",
            &format!("unary_fwd_{t}"),
            config(grid_1d(n), THREADS, 0),
            &[
                Arg::Ptr(xb.ptr(0)),
                Arg::Strided(view(&x.layout)?),
                Arg::Ptr(out.ptr(0)),
                Arg::I64(i64_of("unary", n)?),
                Arg::I32(op),
                Arg::F64(param),
            ],
        )?;
    }
    Ok(Tensor::from_device(out, x.shape()))
}

/// `dx = g · f'(x)`, `g` and `x` of one shape (any views), contiguous.
pub(crate) fn backward(g: &Tensor, x: &Tensor, op: i32, param: f64) -> Result<Tensor> {
    if g.shape() != x.shape() || g.dtype() != x.dtype() {
        return Err(Error::shape(
            "unary backward",
            format!(
                "gradient {:?} {} does not match input {:?} {}",
                g.shape(),
                g.dtype(),
                x.shape(),
                x.dtype()
            ),
        ));
    }
    let (gb, xb) = (buffer("unary backward", g)?, buffer("unary backward", x)?);
    let t = float_suffix("unary backward", x.dtype())?;
    let n = x.numel();
    let out = xb.gpu().alloc(x.dtype(), n)?;
    if n > 0 {
        xb.gpu().launch(
            "unary",
            &format!("unary_bwd_{t}"),
            config(grid_1d(n), THREADS, 0),
            &[
                Arg::Ptr(gb.ptr(0)),
                Arg::Strided(view(&g.layout)?),
                Arg::Ptr(xb.ptr(0)),
                Arg::Strided(view(&x.layout)?),
                Arg::Ptr(out.ptr(0)),
                Arg::I64(i64_of("unary backward", n)?),
                Arg::I32(op),
                Arg::F64(param),
            ],
        )?;
    }
    Ok(Tensor::from_device(out, x.shape()))
}
