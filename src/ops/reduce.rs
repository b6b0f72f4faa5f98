//! Reductions over axes: sum, mean, max (with keepdim), and `sum_to_shape` (the backward of broadcasting).
//!
//! `x: [..]`, axes → the shape with those axes removed (or kept as 1). Backward: sum and mean broadcast the
//! gradient back (mean divides by the count); max sends it to the first maximal element of each group.

use super::with_precision;
use crate::backend::Reduce;
use crate::error::{Error, Result};
use crate::shape::{normalize_axis, Layout};
use crate::tape::record;
use crate::tensor::Tensor;

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
        with_precision("sum", &[self], |xs| {
            let x = &xs[0];
            let (kept, reduced) = split_layout(&x.layout, &axes);
            let shape = output_shape(x.shape(), &axes, keepdim);
            let (out, _) = x.storage.reduce(&kept, &reduced, Reduce::Sum)?;
            let out = Tensor::from_storage(out, &shape);
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
        with_precision("max", &[self], |xs| {
            let x = &xs[0];
            let (kept, reduced) = split_layout(&x.layout, &axes);
            let shape = output_shape(x.shape(), &axes, keepdim);
            let (out, argmax) = x.storage.reduce(&kept, &reduced, Reduce::Max)?;
            let out = Tensor::from_storage(out, &shape);
            let input_shape = x.shape().to_vec();
            let axes = axes.clone();
            record("max", &[x], out, move |g, _| {
                let (kept, reduced) = split_layout(&Layout::contiguous(&input_shape), &axes);
                let dx = g
                    .storage
                    .max_backward(&g.layout, &argmax, &kept, &reduced)?;
                let dx = Tensor::from_storage(dx, &input_shape);
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
