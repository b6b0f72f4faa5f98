//! Launcher of `kernels/binary.cu`: add, sub, mul, div over operands broadcast to one shape.

use super::config;
use super::launch::{float_suffix, grid_1d, i64_of, view, THREADS};
use super::{Arg, DeviceBuffer};
use crate::error::{Error, Result};
use crate::shape::Layout;

/// `a (op) b` over `la`'s shape, reading `a` through `la` and `b` through `lb` (layouts broadcast to one
/// shape), contiguous; `op` is the code of an entry of `TG_BINARY_OPS` in `kernels/binary.cu`.
pub(crate) fn forward(
    a: &DeviceBuffer,
    la: &Layout,
    b: &DeviceBuffer,
    lb: &Layout,
    op: i32,
) -> Result<DeviceBuffer> {
    if la.shape != lb.shape || a.dtype() != b.dtype() {
        return Err(Error::shape(
            "binary",
            format!(
                "operands {:?} {} and {:?} {} are not broadcast to one shape and dtype",
                la.shape,
                a.dtype(),
                lb.shape,
                b.dtype()
            ),
        ));
    }
    let t = float_suffix("binary", a.dtype())?;
    let n = la.numel();
    let out = a.gpu().alloc(a.dtype(), n)?;
    if n > 0 {
        a.gpu().launch(
            "binary",
            &format!("binary_{t}"),
            config(grid_1d(n), THREADS, 0),
            &[
                Arg::Ptr(a.ptr(0)),
                Arg::Strided(view(la)?),
                Arg::Ptr(b.ptr(0)),
                Arg::Strided(view(lb)?),
                Arg::Ptr(out.ptr(0)),
                Arg::I64(i64_of("binary", n)?),
                Arg::I32(op),
            ],
        )?;
    }
    Ok(out)
}
