//! cat and stack. `cat([.., n_i, ..], dim)` → `[.., Σ n_i, ..]`; `stack` adds a new dim first.
//! Backward: each input's gradient is the matching slice (a view) of the output's gradient.

use super::{float_dispatch, with_compute_dtype};
use crate::backend::cpu::elementwise;
use crate::error::{Error, Result};
use crate::shape::normalize_axis;
use crate::tape::record;
use crate::tensor::Tensor;

/// `xs` (one compute dtype, agreeing outside `d`) concatenated along `d` into a fresh tensor of `shape`.
fn cat_kernel(xs: &[Tensor], d: usize, shape: &[usize]) -> Result<Tensor> {
    #[cfg(feature = "cuda-backend")]
    if xs[0].is_cuda() {
        return crate::backend::cuda::copy::cat(xs, d, shape);
    }
    let mut out = Tensor::zeros(shape, xs[0].dtype());
    let mut start = 0;
    float_dispatch!(out.dtype(), T, {
        let base = out.layout.clone();
        let dst = out.data_mut::<T>()?;
        for t in xs {
            let mut region = base.clone();
            region.shape[d] = t.shape()[d];
            region.offset += start * region.strides[d];
            let src = elementwise::gather(t.data::<T>(), &t.layout);
            for (o, v) in region.offsets().zip(src) {
                dst[o] = v;
            }
            start += t.shape()[d];
        }
    });
    Ok(out)
}

impl Tensor {
    /// Concatenation along `dim` of tensors whose other dims agree.
    pub fn cat(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::shape("cat", "no tensors given"))?;
        let d = normalize_axis("cat", dim, first.ndim())?;
        for t in tensors {
            let same = t.ndim() == first.ndim()
                && (0..t.ndim()).all(|i| i == d || t.shape()[i] == first.shape()[i]);
            if !same {
                return Err(Error::shape(
                    "cat",
                    format!(
                        "{:?} and {:?} differ outside dim {d}",
                        first.shape(),
                        t.shape()
                    ),
                ));
            }
        }
        let refs: Vec<&Tensor> = tensors.iter().collect();
        with_compute_dtype("cat", &refs, |xs| {
            let mut shape = xs[0].shape().to_vec();
            shape[d] = xs.iter().map(|t| t.shape()[d]).sum();
            let mut starts = Vec::with_capacity(xs.len());
            let mut start = 0;
            for t in xs {
                starts.push((start, t.shape()[d]));
                start += t.shape()[d];
            }
            let out = cat_kernel(xs, d, &shape)?;
            let inputs: Vec<&Tensor> = xs.iter().collect();
            record("cat", &inputs, out, move |g, needs| {
                starts
                    .iter()
                    .zip(needs)
                    .map(|(&(s, len), &need)| {
                        need.then(|| g.narrow(d as isize, s, len)).transpose()
                    })
                    .collect()
            })
        })
    }

    /// Stacking along a new dim `dim` of tensors of one shape.
    pub fn stack(tensors: &[Tensor], dim: usize) -> Result<Tensor> {
        let expanded = tensors
            .iter()
            .map(|t| t.unsqueeze(dim))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&expanded, dim as isize)
    }
}
