//! softmax and log_softmax over the last axis, numerically stable (the row maximum is subtracted first).
//!
//! `x: [.., N]` → `[.., N]`. Backward: softmax `dx = y ⊙ (dy − Σ dy ⊙ y)`; log_softmax `dx = dy − eʸ · Σ dy`.

use super::{float_dispatch, keep, with_compute_dtype};
use crate::backend::cpu::elementwise::for_each_row;
use crate::backend::cpu::recycle;
use crate::backend::StorageElement;
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::tape::record_recomputable;
use crate::tensor::Tensor;

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

/// softmax (or log_softmax) of contiguous `x` over its last axis, on `x`'s device.
fn softmax_kernel(x: &Tensor, log: bool) -> Result<Tensor> {
    #[cfg(feature = "cuda-backend")]
    if x.is_cuda() {
        return crate::backend::cuda::softmax::forward(x, log);
    }
    float_dispatch!(x.dtype(), T, {
        Tensor::from_vec(rows(x.contiguous_data::<T>(), x.shape(), log), x.shape())
    })
}

fn softmax_op(x: &Tensor, log: bool) -> Result<Tensor> {
    let op = if log { "log_softmax" } else { "softmax" };
    if x.ndim() == 0 || x.shape()[x.ndim() - 1] == 0 {
        return Err(Error::shape(
            op,
            format!("input {:?} has no last axis to normalize", x.shape()),
        ));
    }
    with_compute_dtype(op, &[x], |xs| {
        let x = xs[0].contiguous()?;
        let y = softmax_kernel(&x, log)?;
        let saved = keep(&[&x], [&y]);
        let forward = move |xs: &[Tensor]| softmax_op(&xs[0], log);
        record_recomputable(op, &[&x], y, forward, move |g, _| {
            let [saved] = saved.expect("saved when recorded");
            let saved = saved.get()?;
            let sum_axis = [-1isize];
            let dx = if log {
                g.sub(&saved.exp()?.mul(&g.sum(&sum_axis, true)?)?)?
            } else {
                saved.mul(&g.sub(&g.mul(&saved)?.sum(&sum_axis, true)?)?)?
            };
            Ok(vec![Some(dx)])
        })
    })
}

impl Tensor {
    /// `eˣ / Σ eˣ` over the last axis.
    pub fn softmax(&self) -> Result<Tensor> {
        softmax_op(self, false)
    }

    /// `x − log Σ eˣ` over the last axis.
    pub fn log_softmax(&self) -> Result<Tensor> {
        softmax_op(self, true)
    }
}
