//! What every op launcher shares: kernel name suffixes, strided views collapsed for the kernels, 1-D grids,
//! and u32 index uploads.

use super::{Arg, DeviceBuffer, Gpu, Strided};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;
use std::sync::Arc;

/// Threads per block of the elementwise (grid-stride) kernels.
pub(crate) const THREADS: u32 = 256;

/// The kernel name suffix of a storage dtype.
pub(crate) fn suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
    }
}

/// The suffix of a compute dtype (f32, f64): the arithmetic kernels have no half variants, since
/// `ops::with_precision` upcasts half inputs before any of them runs.
pub(crate) fn float_suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 | DType::F64 => Ok(suffix(dtype)),
        other => Err(Error::DType {
            op,
            msg: format!(
                "the GPU kernel takes f32 or f64, not {other} (half types are upcast first)"
            ),
        }),
    }
}

/// The kernel view of `layout`: size-1 dims dropped and dims that step through memory as one merged, so most
/// views reach the kernel with one or two dims (and views of more than `MAX_DIMS` dims often fit). Each view is
/// collapsed on its own: a kernel decomposes a logical index by the view's own shape, which this keeps intact.
pub(crate) fn view(layout: &Layout) -> Result<Strided> {
    if layout.shape.contains(&0) {
        return Strided::of(layout);
    }
    // (size, stride) pairs, innermost first.
    let mut dims: Vec<(usize, usize)> = Vec::with_capacity(layout.shape.len());
    for (&n, &s) in layout.shape.iter().zip(&layout.strides).rev() {
        if n == 1 {
            continue;
        }
        match dims.last_mut() {
            Some((m, t)) if *t * *m == s => *m *= n,
            _ => dims.push((n, s)),
        }
    }
    dims.reverse();
    Strided::of(&Layout {
        shape: dims.iter().map(|d| d.0).collect(),
        strides: dims.iter().map(|d| d.1).collect(),
        offset: layout.offset,
    })
}

/// Blocks of `THREADS` for a grid-stride loop over `n` elements (capped; the loop covers the rest).
pub(crate) fn grid_1d(n: usize) -> (u32, u32, u32) {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 1 << 16);
    (blocks as u32, 1, 1)
}

/// `n` as a kernel's `long long`.
pub(crate) fn i64_of(op: &'static str, n: usize) -> Result<i64> {
    i64::try_from(n)
        .map_err(|_| Error::shape(op, format!("{n} elements exceed the kernels' i64 range")))
}

/// `n` as a kernel's `int`, or an error naming what it counts.
pub(crate) fn i32_of(op: &'static str, what: &str, n: usize) -> Result<i32> {
    i32::try_from(n)
        .map_err(|_| Error::shape(op, format!("{what} {n} exceeds the kernel's i32 range")))
}

/// A device copy of `values` (u32 indices). The buffer is typed f32 only for its element size (4 bytes);
/// kernels read it as `unsigned`.
pub(crate) fn upload_u32(gpu: &Arc<Gpu>, values: &[u32]) -> Result<DeviceBuffer> {
    if values.is_empty() {
        return gpu.alloc(DType::F32, 0);
    }
    gpu.upload(DType::F32, bytemuck::cast_slice(values))
}

/// `n` blocks as a grid's x dimension (at most 2³¹ − 1), or an error naming what they are for.
pub(crate) fn blocks(op: &'static str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| Error::shape(op, format!("{n} {what} exceed the kernel's grid")))
}

/// The kernel-name suffix of the dtypes the fused and optimizer kernels take: f32 and bf16.
pub(crate) fn half_suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        other => Err(Error::DType {
            op,
            msg: format!("{other} is not supported on the GPU here (f32 or bf16)"),
        }),
    }
}

/// The address of the first element of `buffer` read through the contiguous `layout`, or an error naming `op`
/// (the kernels taking a bare pointer read rows in order).
pub(crate) fn dense(op: &'static str, (buffer, layout): (&DeviceBuffer, &Layout)) -> Result<Arg> {
    if !layout.is_contiguous() {
        return Err(Error::shape(
            op,
            format!("internal: {:?} is not contiguous", layout.shape),
        ));
    }
    Ok(Arg::Ptr(buffer.ptr(layout.offset)))
}

/// `v` as a kernel's `int`, or an error naming `op`.
pub(crate) fn int(op: &'static str, v: usize) -> Result<Arg> {
    i32::try_from(v).map(Arg::I32).map_err(|_| Error::Device {
        op,
        msg: format!("size {v} exceeds the kernels' 32-bit indexing"),
    })
}

/// Threads per row for the row kernels reading 16-byte vectors: enough vectors per thread, a multiple of 32,
/// at most 1024.
pub(crate) fn vector_row_threads(cols: usize, dtype: DType) -> u32 {
    let per_vector = 16 / dtype.size_in_bytes();
    (cols.div_ceil(per_vector).div_ceil(32) * 32).clamp(32, 1024) as u32
}
