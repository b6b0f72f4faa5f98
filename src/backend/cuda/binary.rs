//! Launcher of `kernels/binary.cu`: add, sub, mul, div over operands broadcast to the output shape.

use super::config;
use super::launch::{buffer, float_suffix, grid_1d, i64_of, view, THREADS};
use super::Arg;
use crate::error::Result;
use crate::shape::Layout;
use crate::tensor::Tensor;

/// `a (op) b` of `shape`, reading `a` through `la` and `b` through `lb` (their layouts broadcast to `shape`);
/// `op` 0 add, 1 sub, 2 mul, 3 div.
pub(crate) fn forward(
    a: &Tensor,
    la: &Layout,
    b: &Tensor,
    lb: &Layout,
    shape: &[usize],
    op: i32,
) -> Result<Tensor> {
    let (ab, bb) = (buffer("binary", a)?, buffer("binary", b)?);
    let t = float_suffix("binary", a.dtype())?;
    let n: usize = shape.iter().product();
    let out = ab.gpu().alloc(a.dtype(), n)?;
    if n > 0 {
        ab.gpu().launch(
            "binary",
            &format!("binary_{t}"),
            config(grid_1d(n), THREADS, 0),
            &[
                Arg::Ptr(ab.ptr(0)),
                Arg::Strided(view(la)?),
                Arg::Ptr(bb.ptr(0)),
                Arg::Strided(view(lb)?),
                Arg::Ptr(out.ptr(0)),
                Arg::I64(i64_of("binary", n)?),
                Arg::I32(op),
            ],
        )?;
    }
    Ok(Tensor::from_device(out, shape))
}
