//! cat and stack. `cat([.., n_i, ..], dim)` → `[.., Σ n_i, ..]`; `stack` adds a new dim first.
//! Backward: each input's gradient is the matching slice (a view) of the output's gradient.

use super::with_precision;
use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::shape::normalize_axis;
use crate::tape::record;
use crate::tensor::Tensor;

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
        with_precision("cat", &refs, |xs| {
            let mut shape = xs[0].shape().to_vec();
            shape[d] = xs.iter().map(|t| t.shape()[d]).sum();
            let mut starts = Vec::with_capacity(xs.len());
            let mut start = 0;
            for t in xs {
                starts.push((start, t.shape()[d]));
                start += t.shape()[d];
            }
            let parts: Vec<_> = xs.iter().map(|t| (&**t.storage, &t.layout)).collect();
            let out = Tensor::from_storage(Storage::cat(&parts, d, &shape)?, &shape);
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
