//! Reductions over axes: sum, mean, max (with keepdim), and `sum_to_shape` (the backward of broadcasting).
//!
//! `x: [..]`, axes → the shape with those axes removed (or kept as 1). Backward: sum and mean broadcast the
//! gradient back (mean divides by the count); max sends it to the first maximal element of each group.

use super::{float_dispatch, with_compute_dtype};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::shape::{normalize_axis, Layout};
use crate::tape::record;
use crate::tensor::Tensor;
use rayon::prelude::*;

#[derive(Clone, Copy)]
enum Reduce {
    Sum,
    Max,
}

/// Splits a layout into the kept dims (output order) and the reduced dims.
fn split_layout(layout: &Layout, axes: &[usize]) -> (Layout, Layout) {
    let pick = |keep: bool| {
        let dims: Vec<usize> = (0..layout.shape.len())
            .filter(|d| axes.contains(d) != keep)
            .collect();
        Layout {
            shape: dims.iter().map(|&d| layout.shape[d]).collect(),
            strides: dims.iter().map(|&d| layout.strides[d]).collect(),
            offset: 0,
        }
    };
    let mut kept = pick(true);
    kept.offset = layout.offset;
    (kept, pick(false))
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

/// Where the maximum of each group sits: logical indices within the group, on the host or (i32) on the GPU.
struct Argmax {
    host: Vec<usize>,
    #[cfg(feature = "cuda-backend")]
    device: Option<crate::backend::cuda::DeviceBuffer>,
}

/// The reduction of `x` (split into `kept` and `reduced`) into a contiguous tensor of `shape`, on `x`'s device;
/// with `Reduce::Max`, also where each maximum sits.
fn reduce_on_device(
    x: &Tensor,
    kept: &Layout,
    reduced: &Layout,
    shape: &[usize],
    how: Reduce,
) -> Result<(Tensor, Argmax)> {
    #[cfg(feature = "cuda-backend")]
    if x.is_cuda() {
        let max = matches!(how, Reduce::Max);
        let (out, argmax) = crate::backend::cuda::reduce::reduce(x, kept, reduced, shape, max)?;
        let argmax = Argmax {
            host: Vec::new(),
            device: argmax,
        };
        return Ok((out, argmax));
    }
    float_dispatch!(x.dtype(), T, {
        let (values, argmax) = reduce_kernel(x.data::<T>(), kept, reduced, how);
        let argmax = Argmax {
            host: argmax,
            #[cfg(feature = "cuda-backend")]
            device: None,
        };
        Ok((Tensor::from_vec(values, shape)?, argmax))
    })
}

fn output_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    (0..shape.len())
        .filter_map(|d| match (axes.contains(&d), keepdim) {
            (false, _) => Some(shape[d]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

fn normalize_axes(op: &'static str, axes: &[isize], ndim: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = normalize_axis(op, a, ndim)?;
        if out.contains(&a) {
            return Err(Error::Index {
                op,
                msg: format!("axis {a} is given twice"),
            });
        }
        out.push(a);
    }
    Ok(out)
}

impl Tensor {
    /// Sum over `axes` (negative axes count from the end).
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = normalize_axes("sum", axes, self.ndim())?;
        with_compute_dtype("sum", &[self], |xs| {
            let x = &xs[0];
            let (kept, reduced) = split_layout(&x.layout, &axes);
            let shape = output_shape(x.shape(), &axes, keepdim);
            let (out, _) = reduce_on_device(x, &kept, &reduced, &shape, Reduce::Sum)?;
            let input_shape = x.shape().to_vec();
            let keep_shape = output_shape(&input_shape, &axes, true);
            record("sum", &[x], out, move |g, _| {
                Ok(vec![Some(
                    g.reshape(&keep_shape)?.broadcast_to(&input_shape)?,
                )])
            })
        })
    }

    /// Sum of every element, as a scalar of shape `[]`.
    pub fn sum_all(&self) -> Result<Tensor> {
        let axes: Vec<isize> = (0..self.ndim() as isize).collect();
        self.sum(&axes, false)
    }

    /// Mean over `axes`.
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let normalized = normalize_axes("mean", axes, self.ndim())?;
        let count: usize = normalized.iter().map(|&a| self.shape()[a]).product();
        self.sum(axes, keepdim)?.scale(1.0 / count.max(1) as f64)
    }

    /// Maximum over `axes`; the gradient goes to the first maximal element of each group.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = normalize_axes("max", axes, self.ndim())?;
        if axes.iter().any(|&a| self.shape()[a] == 0) {
            return Err(Error::shape(
                "max",
                format!(
                    "cannot take the max over an empty axis of {:?}",
                    self.shape()
                ),
            ));
        }
        with_compute_dtype("max", &[self], |xs| {
            let x = &xs[0];
            let (kept, reduced) = split_layout(&x.layout, &axes);
            let shape = output_shape(x.shape(), &axes, keepdim);
            let (out, argmax) = reduce_on_device(x, &kept, &reduced, &shape, Reduce::Max)?;
            let input_shape = x.shape().to_vec();
            let dtype = x.dtype();
            let axes = axes.clone();
            record("max", &[x], out, move |g, _| {
                #[cfg(feature = "cuda-backend")]
                if let Some(a) = &argmax.device {
                    let (kept, reduced) = split_layout(&Layout::contiguous(&input_shape), &axes);
                    let dx = crate::backend::cuda::reduce::max_backward(
                        g,
                        a,
                        &input_shape,
                        &kept,
                        &reduced,
                    )?;
                    return Ok(vec![Some(dx)]);
                }
                let argmax = &argmax.host;
                let mut dx = Tensor::zeros(&input_shape, dtype);
                // Where each group's maximum sits in dx: kept offset + the argmax-th offset of the group.
                let (kept, reduced) = split_layout(&dx.layout, &axes);
                let group: Vec<usize> = reduced.offsets().collect();
                let g = g.contiguous()?;
                float_dispatch!(dtype, T, {
                    let gv = g.contiguous_data::<T>().to_vec();
                    let d = dx.data_mut::<T>()?;
                    for ((base, &arg), gv) in kept.offsets().zip(argmax).zip(gv) {
                        d[base + group[arg]] = gv;
                    }
                });
                Ok(vec![Some(dx)])
            })
        })
    }

    /// Sums a (broadcast) gradient back to `shape`: over extra leading dims and dims where `shape` has 1.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let extra = self.ndim().checked_sub(shape.len()).ok_or_else(|| {
            Error::shape(
                "sum_to_shape",
                format!("{:?} cannot be summed to {shape:?}", self.shape()),
            )
        })?;
        let axes: Vec<isize> = (0..self.ndim())
            .filter(|&d| d < extra || (shape[d - extra] == 1 && self.shape()[d] != 1))
            .map(|d| d as isize)
            .collect();
        self.sum(&axes, true)?.reshape(shape)
    }
}
