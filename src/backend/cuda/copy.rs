//! Launchers of `kernels/copy.cu`: a strided copy with dtype conversion (for `backend::copy`: cast, cat, pad)
//! and a fill (`Tensor::zeros_on` / `full_on`, the zeros under a pad).

use super::launch::{grid_1d, i64_of, suffix, view, THREADS};
use super::{config, Arg, DeviceBuffer, Gpu};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;
use std::sync::Arc;

/// Writes the elements of `src` read through `src_layout` into `dst` at `dst_layout` (a view of `dst` with as
/// many elements), converted to `dst`'s dtype.
pub(crate) fn copy_into(
    src: &DeviceBuffer,
    src_layout: &Layout,
    dst: &DeviceBuffer,
    dst_layout: &Layout,
) -> Result<()> {
    let n = src_layout.numel();
    if n != dst_layout.numel() {
        return Err(Error::shape(
            "copy",
            format!(
                "source {:?} and destination {:?} differ in size",
                src_layout.shape, dst_layout.shape
            ),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    if !Arc::ptr_eq(src.gpu(), dst.gpu()) {
        return Err(Error::Device {
            op: "copy",
            msg: format!(
                "source on cuda:{} and destination on cuda:{}",
                src.gpu().ordinal,
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
            Arg::Ptr(src.ptr(0)),
            Arg::Strided(view(src_layout)?),
            Arg::Ptr(dst.ptr(0)),
            Arg::Strided(view(dst_layout)?),
            Arg::I64(i64_of("copy", n)?),
        ],
    )
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
