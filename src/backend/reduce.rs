//! Reductions by device: `Storage::reduce` (sum or max over the reduced dims of a view split into kept and
//! reduced dims) and `Storage::max_backward`. Host loops here, `kernels/reduce.cu` on a GPU.
//!
//! Shapes: the input is read at `kept ⊕ reduced` (kept carrying the view's offset); the output holds
//! `kept.numel()` elements in the kept dims' order.

use super::{float_dispatch, Storage, StorageElement};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::shape::Layout;
use rayon::prelude::*;

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Max,
}

/// Where the maximum of each group sits (logical indices within the group), where the reduction ran: on the
/// host, or as i32 on the GPU. Empty for a sum.
pub enum Argmax {
    Host(Vec<usize>),
    Device(super::cuda::DeviceBuffer),
}

/// For each output element: the reduction and the logical flat index (in the reduced group) of the maximum.
fn reduce_kernel<T: Float>(
    x: &[T],
    kept: &Layout,
    reduced: &Layout,
    how: Reduce,
) -> (Vec<T>, Vec<usize>) {
    let n_out = kept.numel();
    let group: Vec<usize> = reduced.offsets().collect();
    let kept_offsets: Vec<usize> = kept.offsets().collect();
    let one = |&base: &usize| -> (T, usize) {
        match how {
            Reduce::Sum => (group.iter().map(|&o| x[base + o]).sum(), 0),
            Reduce::Max => {
                // NaN counts as the largest value: a group holding one has the first NaN as its maximum
                // (as kernels/reduce.cu decides too).
                let is_nan = |v: T| v.partial_cmp(&v).is_none();
                let mut best = (T::NEG_INFINITY, 0);
                for (i, &o) in group.iter().enumerate() {
                    let v = x[base + o];
                    if i == 0 || (is_nan(v) && !is_nan(best.0)) || v > best.0 {
                        best = (v, i);
                    }
                }
                best
            }
        }
    };
    let pairs: Vec<(T, usize)> = if n_out * group.len() >= 1 << 15 {
        kept_offsets.par_iter().map(one).collect()
    } else {
        kept_offsets.iter().map(one).collect()
    };
    pairs.into_iter().unzip()
}

impl Storage {
    /// The reduction of `self` read at `kept ⊕ reduced`, contiguous over the kept dims, on `self`'s device;
    /// with `Reduce::Max`, also where each maximum sits (the first maximal element; NaN counts as largest).
    pub fn reduce(
        &self,
        kept: &Layout,
        reduced: &Layout,
        how: Reduce,
    ) -> Result<(Storage, Argmax)> {
        if let Storage::Cuda(x) = self {
            let max = how == Reduce::Max;
            let (out, argmax) = super::cuda::reduce::reduce(x, kept, reduced, max)?;
            let argmax = argmax.map_or(Argmax::Host(Vec::new()), Argmax::Device);
            return Ok((Storage::Cuda(out), argmax));
        }
        float_dispatch!(self.dtype(), T, {
            let (values, argmax) = reduce_kernel(self.host::<T>(), kept, reduced, how);
            Ok((T::wrap(values), Argmax::Host(argmax)))
        })
    }

    /// The max backward: zeros of the input (`kept ⊕ reduced`, splitting its contiguous layout as the forward
    /// split the input's view) with the gradient `self` (read through `lg`, one element per group) at each
    /// group's maximum.
    pub fn max_backward(
        &self,
        lg: &Layout,
        argmax: &Argmax,
        kept: &Layout,
        reduced: &Layout,
    ) -> Result<Storage> {
        let n_out = kept.numel();
        match argmax {
            Argmax::Device(a) => {
                let Storage::Cuda(g) = self else {
                    return Err(Error::Device {
                        op: "max backward",
                        msg: format!("the gradient is on {}, the maximum on a GPU", self.device()),
                    });
                };
                let dx = super::cuda::reduce::max_backward(g, lg, a, kept, reduced)?;
                Ok(Storage::Cuda(dx))
            }
            Argmax::Host(argmax) => {
                if lg.numel() != n_out || argmax.len() != n_out || !self.is_host() {
                    return Err(Error::shape(
                        "max backward",
                        format!(
                            "gradient {:?} on {} and {} indices do not match {n_out} outputs on the host",
                            lg.shape,
                            self.device(),
                            argmax.len()
                        ),
                    ));
                }
                let group: Vec<usize> = reduced.offsets().collect();
                float_dispatch!(self.dtype(), T, {
                    let g = super::cpu::elementwise::gather(self.host::<T>(), lg);
                    let mut dx = super::cpu::recycle::filled(n_out * group.len(), T::ZERO);
                    for ((base, &arg), gv) in kept.offsets().zip(argmax).zip(g) {
                        dx[base + group[arg]] = gv;
                    }
                    Ok(T::wrap(dx))
                })
            }
        }
    }
}
