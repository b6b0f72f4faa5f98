//! Views and layout ops: reshape, permute, transpose, narrow, broadcast_to, squeeze, unsqueeze, contiguous.
//! All but `contiguous` (and `reshape` of a non-contiguous tensor) share storage and copy nothing.
//! Backward: the inverse layout change (narrow pads with zeros, broadcast sums).

use crate::error::{Error, Result};
use crate::shape::{contiguous_strides, normalize_axis, Layout};
use crate::tape::record;
use crate::tensor::Tensor;

fn copy_contiguous(x: &Tensor) -> Result<Tensor> {
    let storage = x.storage.cast(&x.layout, x.dtype())?;
    Ok(Tensor::from_storage(storage, x.shape()))
}

impl Tensor {
    /// A contiguous tensor with the same values (the same tensor when already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        record("contiguous", &[self], copy_contiguous(self)?, |g, _| {
            Ok(vec![Some(g.clone())])
        })
    }

    /// The same elements in row-major order with another shape of equal size. A view when the tensor is
    /// contiguous, a copy otherwise.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot reshape {:?} into {shape:?}", self.shape()),
            ));
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let source = self.contiguous()?;
        let out = source.with_layout(Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: source.layout.offset,
        });
        let original = self.shape().to_vec();
        record("reshape", &[&source], out, move |g, _| {
            Ok(vec![Some(g.reshape(&original)?)])
        })
    }

    /// The dims reordered: output dim `i` is input dim `dims[i]`.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let n = self.ndim();
        let mut seen = vec![false; n];
        if dims.len() != n
            || dims
                .iter()
                .any(|&d| d >= n || std::mem::replace(&mut seen[d], true))
        {
            return Err(Error::shape(
                "permute",
                format!(
                    "{dims:?} is not a permutation of the dims of {:?}",
                    self.shape()
                ),
            ));
        }
        let out = self.with_layout(Layout {
            shape: dims.iter().map(|&d| self.layout.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.layout.strides[d]).collect(),
            offset: self.layout.offset,
        });
        let mut inverse = vec![0; n];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        record("permute", &[self], out, move |g, _| {
            Ok(vec![Some(g.permute(&inverse)?)])
        })
    }

    /// Dims `a` and `b` swapped (negative dims count from the end).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let a = normalize_axis("transpose", a, self.ndim())?;
        let b = normalize_axis("transpose", b, self.ndim())?;
        let mut dims: Vec<usize> = (0..self.ndim()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// Elements `start..start + len` along `dim`, as a view.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = normalize_axis("narrow", dim, self.ndim())?;
        if start + len > self.shape()[d] {
            return Err(Error::Index {
                op: "narrow",
                msg: format!(
                    "range {start}..{} is out of bounds for dim {d} of {:?}",
                    start + len,
                    self.shape()
                ),
            });
        }
        let mut layout = self.layout.clone();
        layout.shape[d] = len;
        layout.offset += start * layout.strides[d];
        let out = self.with_layout(layout);
        let original = self.shape().to_vec();
        record("narrow", &[self], out, move |g, _| {
            Ok(vec![Some(pad_narrowed(g, &original, d, start)?)])
        })
    }

    /// A view broadcast to `shape` (numpy rules; expanded dims have stride 0).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        let target = crate::shape::broadcast_shapes("broadcast_to", self.shape(), shape)?;
        if target != shape {
            return Err(Error::shape(
                "broadcast_to",
                format!("{:?} cannot be broadcast to {shape:?}", self.shape()),
            ));
        }
        let out = self.with_layout(self.layout.broadcast_to(shape));
        let original = self.shape().to_vec();
        record("broadcast_to", &[self], out, move |g, _| {
            Ok(vec![Some(g.sum_to_shape(&original)?)])
        })
    }

    /// A view without dim `dim`, which must have size 1.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = normalize_axis("squeeze", dim, self.ndim())?;
        if self.shape()[d] != 1 {
            return Err(Error::shape(
                "squeeze",
                format!("dim {d} of {:?} is not of size 1", self.shape()),
            ));
        }
        let mut layout = self.layout.clone();
        layout.shape.remove(d);
        layout.strides.remove(d);
        let original = self.shape().to_vec();
        record("squeeze", &[self], self.with_layout(layout), move |g, _| {
            Ok(vec![Some(g.reshape(&original)?)])
        })
    }

    /// A view with a new dim of size 1 at `dim` (0..=ndim).
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.ndim() {
            return Err(Error::Index {
                op: "unsqueeze",
                msg: format!("dim {dim} is out of range for {:?}", self.shape()),
            });
        }
        let mut layout = self.layout.clone();
        let stride = layout
            .strides
            .get(dim)
            .map_or(1, |&s| s * layout.shape[dim]);
        layout.shape.insert(dim, 1);
        layout.strides.insert(dim, stride);
        let original = self.shape().to_vec();
        record(
            "unsqueeze",
            &[self],
            self.with_layout(layout),
            move |g, _| Ok(vec![Some(g.reshape(&original)?)]),
        )
    }
}

/// Zeros of `shape` with `g` written at `start..` along `dim` (the backward of narrow and cat).
pub(crate) fn pad_narrowed(
    g: &Tensor,
    shape: &[usize],
    dim: usize,
    start: usize,
) -> Result<Tensor> {
    let storage = g.storage.pad(&g.layout, shape, dim, start)?;
    Ok(Tensor::from_storage(storage, shape))
}
