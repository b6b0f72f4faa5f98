//! Copies by device: `Storage::cast` (a contiguous copy, converted to a dtype; the same dtype is `contiguous`),
//! `Storage::cat` (parts written side by side along a dim) and `Storage::pad` (a part written into zeros: the
//! backward of narrow and cat). Host loops here, `kernels/copy.cu` on a GPU. Every dtype, as stored.
//!
//! Shapes: inputs are read through their layouts; outputs are contiguous.

use super::cpu::{elementwise, recycle};
use super::{Storage, StorageElement};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::Layout;
use half::{bf16, f16};

/// Runs `$body` with `$T` bound to the Rust type of any storage dtype.
macro_rules! element_dispatch {
    ($dtype:expr, $T:ident, $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            DType::BF16 => {
                type $T = bf16;
                $body
            }
            DType::F16 => {
                type $T = f16;
                $body
            }
        }
    };
}

/// The region of the contiguous `layout` that holds `len` entries from `start` along `dim`.
fn region(layout: &Layout, dim: usize, start: usize, len: usize) -> Layout {
    let mut r = layout.clone();
    r.shape[dim] = len;
    r.offset += start * r.strides[dim];
    r
}

/// Writes the elements of `src` (read through `ls`) at `dst_layout` of the host buffer `dst`.
fn write_host<T: StorageElement>(src: &Storage, ls: &Layout, dst: &mut [T], dst_layout: &Layout) {
    let values = elementwise::gather(src.host::<T>(), ls);
    for (o, v) in dst_layout.offsets().zip(values) {
        dst[o] = v;
    }
}

impl Storage {
    /// The elements of `self` read through `layout`, contiguous, converted to `dtype` (through f64: exact for
    /// every pair of stored dtypes), on `self`'s device.
    pub fn cast(&self, layout: &Layout, dtype: DType) -> Result<Storage> {
        if let Storage::Cuda(x) = self {
            let out = x.gpu().alloc(dtype, layout.numel())?;
            super::cuda::copy::copy_into(x, layout, &out, &Layout::contiguous(&layout.shape))?;
            return Ok(Storage::Cuda(out));
        }
        element_dispatch!(self.dtype(), S, {
            let values = elementwise::gather(self.host::<S>(), layout);
            if dtype == self.dtype() {
                return Ok(S::wrap(values));
            }
            element_dispatch!(dtype, D, {
                let converted = values.into_iter().map(|v| D::from_f64(v.to_f64()));
                Ok(D::wrap(converted.collect()))
            })
        })
    }

    /// `parts` (one dtype and device, each read through its layout, agreeing outside `dim`) side by side along
    /// `dim` in a fresh buffer of `shape`.
    pub fn cat(parts: &[(&Storage, &Layout)], dim: usize, shape: &[usize]) -> Result<Storage> {
        let (first, _) = parts
            .first()
            .ok_or_else(|| Error::shape("cat", "no tensors given"))?;
        let base = Layout::contiguous(shape);
        let numel = base.numel();
        if let Storage::Cuda(f) = first {
            let out = f.gpu().alloc(f.dtype(), numel)?;
            let mut start = 0;
            for (part, layout) in parts {
                let len = layout.shape[dim];
                let Storage::Cuda(src) = part else {
                    return Err(mixed("cat", first, part));
                };
                super::cuda::copy::copy_into(src, layout, &out, &region(&base, dim, start, len))?;
                start += len;
            }
            return Ok(Storage::Cuda(out));
        }
        element_dispatch!(first.dtype(), T, {
            let mut out = recycle::filled(numel, T::from_f64(0.0));
            let mut start = 0;
            for (part, layout) in parts {
                if part.device() != first.device() || part.dtype() != first.dtype() {
                    return Err(mixed("cat", first, part));
                }
                let len = layout.shape[dim];
                write_host::<T>(part, layout, &mut out, &region(&base, dim, start, len));
                start += len;
            }
            Ok(T::wrap(out))
        })
    }

    /// Zeros of `shape` (in `self`'s dtype) with `self` (read through `layout`) written at `start..` along
    /// `dim`: the backward of narrow and cat.
    pub fn pad(
        &self,
        layout: &Layout,
        shape: &[usize],
        dim: usize,
        start: usize,
    ) -> Result<Storage> {
        let base = Layout::contiguous(shape);
        let at = region(&base, dim, start, layout.shape[dim]);
        if let Storage::Cuda(g) = self {
            let out = super::cuda::copy::fill(g.gpu(), g.dtype(), base.numel(), 0.0)?;
            super::cuda::copy::copy_into(g, layout, &out, &at)?;
            return Ok(Storage::Cuda(out));
        }
        element_dispatch!(self.dtype(), T, {
            let mut out = recycle::filled(base.numel(), T::from_f64(0.0));
            write_host::<T>(self, layout, &mut out, &at);
            Ok(T::wrap(out))
        })
    }
}

/// The error for parts of one op on different devices or dtypes.
fn mixed(op: &'static str, a: &Storage, b: &Storage) -> Error {
    Error::Device {
        op,
        msg: format!(
            "parts are {} on {} and {} on {}; cast or move one first",
            a.dtype(),
            a.device(),
            b.dtype(),
            b.device()
        ),
    }
}
