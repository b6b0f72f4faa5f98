//! Launchers of `kernels/swiglu.cu` (its header gives the parameter lists and launch configurations): the
//! fused SwiGLU gate forward and its one-pass backward. f32 and bf16, 16-byte vectors.

use super::launch::{dense, half_suffix};
use super::{config, Arg, DeviceBuffer};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;

/// An error naming `op` unless every layout has the first one's shape.
fn same_shape(op: &'static str, layouts: &[&Layout]) -> Result<()> {
    match layouts.iter().find(|l| l.shape != layouts[0].shape) {
        None => Ok(()),
        Some(other) => Err(Error::shape(
            op,
            format!(
                "operands {:?} and {:?} differ",
                layouts[0].shape, other.shape
            ),
        )),
    }
}

fn elementwise_grid(n: usize, dtype: DType) -> u32 {
    let per_vector = 16 / dtype.size_in_bytes();
    n.div_ceil(256 * per_vector).clamp(1, 65_535) as u32
}

/// `silu(a) ⊙ b` for `a`, `b` of one shape (contiguous views).
pub(crate) fn forward(
    a: (&DeviceBuffer, &Layout),
    b: (&DeviceBuffer, &Layout),
) -> Result<DeviceBuffer> {
    const OP: &str = "swiglu";
    same_shape(OP, &[a.1, b.1])?;
    let (gpu, dtype, n) = (a.0.gpu(), a.0.dtype(), a.1.numel());
    let y = gpu.alloc(dtype, n)?;
    gpu.launch(
        "swiglu",
        &format!("swiglu_fwd_{}", half_suffix(OP, dtype)?),
        config((elementwise_grid(n, dtype), 1, 1), 256, 0),
        &[
            dense(OP, a)?,
            dense(OP, b)?,
            Arg::Ptr(y.ptr(0)),
            Arg::I64(n as i64),
        ],
    )?;
    Ok(y)
}

/// `(da, db)` of SwiGLU from `a`, `b` and `dy` (contiguous views of one shape).
pub(crate) fn backward(
    a: (&DeviceBuffer, &Layout),
    b: (&DeviceBuffer, &Layout),
    dy: (&DeviceBuffer, &Layout),
) -> Result<(DeviceBuffer, DeviceBuffer)> {
    const OP: &str = "swiglu backward";
    same_shape(OP, &[a.1, b.1, dy.1])?;
    let (gpu, dtype, n) = (a.0.gpu(), a.0.dtype(), a.1.numel());
    let (da, db) = (gpu.alloc(dtype, n)?, gpu.alloc(dtype, n)?);
    gpu.launch(
        "swiglu",
        &format!("swiglu_bwd_{}", half_suffix(OP, dtype)?),
        config((elementwise_grid(n, dtype), 1, 1), 256, 0),
        &[
            dense(OP, a)?,
            dense(OP, b)?,
            dense(OP, dy)?,
            Arg::Ptr(da.ptr(0)),
            Arg::Ptr(db.ptr(0)),
            Arg::I64(n as i64),
        ],
    )?;
    Ok((da, db))
}
