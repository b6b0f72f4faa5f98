//! softmax and log_softmax over the last axis by device: `Storage::softmax`. A row loop here (the row maximum
//! subtracted first), `kernels/softmax.cu` on a GPU (one block per row).
//!
//! Shapes: a contiguous `[.., N]` in, `[.., N]` out.

use super::cpu::elementwise::for_each_row;
use super::cpu::recycle;
use super::{float_dispatch, Storage, StorageElement};
use crate::dtype::Float;
use crate::error::Result;
use crate::shape::Layout;

fn rows<T: Float + StorageElement>(x: &[T], shape: &[usize], log: bool) -> Vec<T> {
    let n = *shape.last().unwrap();
    let mut out = recycle::buffer::<T>(x.len());
    for_each_row(
        &mut out,
        shape,
        #[inline(always)]
        |r, row| {
            let src = &x[r * n..r * n + n];
            let max = src.iter().fold(T::NEG_INFINITY, |m, &v| m.max(v));
            let sum: T = src.iter().map(|&v| (v - max).exp()).sum();
            if log {
                let lse = max + sum.ln();
                row.iter_mut().zip(src).for_each(|(o, &v)| *o = v - lse);
            } else {
                row.iter_mut()
                    .zip(src)
                    .for_each(|(o, &v)| *o = (v - max).exp() / sum);
            }
        },
    );
    out
}

impl Storage {
    /// softmax (or log_softmax) over the last axis of the contiguous view `layout`, on `self`'s device.
    pub fn softmax(&self, layout: &Layout, log: bool) -> Result<Storage> {
        if let Storage::Cuda(x) = self {
            return Ok(Storage::Cuda(super::cuda::softmax::forward(
                x, layout, log,
            )?));
        }
        float_dispatch!(self.dtype(), T, {
            let x = self.host_contiguous::<T>(layout);
            Ok(T::wrap(rows(x, &layout.shape, log)))
        })
    }
}
