//! Fused softmax + cross-entropy from logits with integer targets and an optional ignore index.
//!
//! `logits: [N, V]` (or `[.., V]`, flattened), `targets: [N]` → scalar `[]`: the mean of `lse(x) − x[target]`
//! over the kept positions (0 when none is kept). The kernel keeps only the row log-sum-exp; backward
//! recomputes the probabilities: `dx = (softmax(x) − onehot(target)) · dy / kept`, zero on ignored rows.

use super::{float_dispatch, keep, with_compute_dtype};
use crate::backend::cpu::elementwise::for_each_row;
use crate::backend::cpu::recycle;
use crate::backend::cpu::simd::vectorized;
use crate::dtype::{DType, Element, Float};
use crate::error::{Error, Result};
use crate::tape::record;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// `log Σ exp(row)`, with the max and the sum kept in eight lanes (so the loops vectorize) and `fast_exp`.
#[inline(always)]
fn row_lse<T: Float>(row: &[T]) -> T {
    const LANES: usize = 8;
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut maxes = [T::NEG_INFINITY; LANES];
    for c in chunks.clone() {
        for (m, &v) in maxes.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    let max = tail
        .iter()
        .chain(&maxes)
        .fold(T::NEG_INFINITY, |m, &v| m.max(v));
    let mut sums = [T::ZERO; LANES];
    for c in chunks {
        for (s, &v) in sums.iter_mut().zip(c) {
            *s += (v - max).fast_exp();
        }
    }
    let tail_sum = tail.iter().fold(T::ZERO, |s, &v| s + (v - max).fast_exp());
    max + (sums.iter().fold(T::ZERO, |a, &b| a + b) + tail_sum).ln()
}

fn check(logits: &Tensor, targets: &[u32], ignore: Option<u32>) -> Result<(usize, usize)> {
    if logits.ndim() == 0 {
        return Err(Error::shape(
            "cross_entropy",
            "logits must have a class axis",
        ));
    }
    let vocab = logits.shape()[logits.ndim() - 1];
    let rows = logits.numel() / vocab.max(1);
    if rows != targets.len() {
        return Err(Error::shape(
            "cross_entropy",
            format!(
                "logits {:?} hold {rows} rows but {} targets were given",
                logits.shape(),
                targets.len()
            ),
        ));
    }
    if let Some(&bad) = targets
        .iter()
        .find(|&&t| Some(t) != ignore && t as usize >= vocab)
    {
        return Err(Error::Index {
            op: "cross_entropy",
            msg: format!("target {bad} is out of range for {vocab} classes"),
        });
    }
    Ok((rows, vocab))
}

/// One cross-entropy evaluation: `rows` rows of `vocab` logits, their targets, and the normalization.
struct Problem<'a> {
    rows: usize,
    vocab: usize,
    targets: &'a [u32],
    ignore_index: Option<u32>,
    /// Rows whose target is not the ignore index.
    #[cfg_attr(not(feature = "cuda-backend"), allow(dead_code))]
    kept: usize,
    /// `1 / max(kept, 1)`.
    norm: f64,
}

impl Problem<'_> {
    /// The loss (a scalar) and the row log-sum-exp `[rows]` of contiguous logits `x`, on `x`'s device.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let Problem {
            rows,
            vocab,
            targets,
            ignore_index,
            norm,
            ..
        } = *self;
        #[cfg(feature = "cuda-backend")]
        if x.is_cuda() {
            return crate::backend::cuda::cross_entropy::forward(
                x,
                rows,
                vocab,
                targets,
                ignore_index,
                self.kept,
            );
        }
        let dtype = x.dtype();
        let (loss, lse) = float_dispatch!(dtype, T, {
            let data = x.contiguous_data::<T>();
            let lse: Vec<T> = data
                .par_chunks(vocab.max(1))
                .map(|row| vectorized(|| row_lse(row)))
                .collect();
            let total: f64 = (0..rows)
                .filter(|&r| Some(targets[r]) != ignore_index)
                .map(|r| (lse[r] - data[r * vocab + targets[r] as usize]).to_f64())
                .sum();
            (total * norm, Tensor::from_vec(lse, &[rows])?)
        });
        Ok((Tensor::scalar(loss, dtype), lse))
    }

    /// `dx = (softmax(x) − onehot(target)) · g / kept`, zero on ignored rows, on `x`'s device.
    fn backward(&self, x: &Tensor, lse: &Tensor, g: &Tensor) -> Result<Tensor> {
        let Problem {
            rows,
            vocab,
            targets,
            ignore_index,
            norm,
            ..
        } = *self;
        #[cfg(feature = "cuda-backend")]
        if x.is_cuda() {
            return crate::backend::cuda::cross_entropy::backward(
                x,
                lse,
                rows,
                vocab,
                targets,
                ignore_index,
                g,
                norm,
            );
        }
        let scale = g.item()? * norm;
        float_dispatch!(x.dtype(), T, {
            let data = x.contiguous_data::<T>();
            let lse = lse.contiguous_data::<T>();
            let mut dx = recycle::buffer::<T>(data.len());
            let shape = [rows, vocab];
            let s = T::from_f64(scale);
            for_each_row(
                &mut dx,
                &shape,
                #[inline(always)]
                |r, out| {
                    let target = targets[r];
                    if Some(target) == ignore_index {
                        out.fill(T::ZERO);
                        return;
                    }
                    let row = &data[r * vocab..(r + 1) * vocab];
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o = (v - lse[r]).fast_exp() * s;
                    }
                    out[target as usize] -= s;
                },
            );
            Tensor::from_vec(dx, x.shape())
        })
    }
}

impl Tensor {
    /// Mean cross-entropy of these logits against `targets`, skipping positions equal to `ignore_index`.
    pub fn cross_entropy(&self, targets: &[u32], ignore_index: Option<u32>) -> Result<Tensor> {
        let (rows, vocab) = check(self, targets, ignore_index)?;
        let targets = targets.to_vec();
        let kept = targets.iter().filter(|&&t| Some(t) != ignore_index).count();
        let norm = 1.0 / kept.max(1) as f64;
        with_compute_dtype("cross_entropy", &[self], |xs| {
            let x = xs[0].contiguous()?;
            let problem = Problem {
                rows,
                vocab,
                targets: &targets,
                ignore_index,
                kept,
                norm,
            };
            let (out, lse) = problem.forward(&x)?;
            let saved = keep(&[&x], [&x, &lse]);
            record("cross_entropy", &[&x], out, move |g, _| {
                let [x, lse] = saved.expect("saved when recorded");
                let (x, lse) = (x.get()?, lse.get()?);
                let problem = Problem {
                    rows,
                    vocab,
                    targets: &targets,
                    ignore_index,
                    kept,
                    norm,
                };
                Ok(vec![Some(problem.backward(&x, &lse, g)?)])
            })
        })
    }
}

/// The composed reference: `−Σ log_softmax(x) ⊙ onehot(targets) / kept`.
pub fn cross_entropy_reference(
    logits: &Tensor,
    targets: &[u32],
    ignore_index: Option<u32>,
) -> Result<Tensor> {
    let (rows, vocab) = check(logits, targets, ignore_index)?;
    let mut mask = vec![0.0; rows * vocab];
    let mut kept = 0;
    for (r, &t) in targets.iter().enumerate() {
        if Some(t) != ignore_index {
            mask[r * vocab + t as usize] = 1.0;
            kept += 1;
        }
    }
    let dtype = if logits.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let mask = Tensor::from_f64_values(&mask, &[rows, vocab], dtype).to_dtype(logits.dtype())?;
    logits
        .reshape(&[rows, vocab])?
        .log_softmax()?
        .mul(&mask)?
        .sum_all()?
        .scale(-1.0 / kept.max(1) as f64)
}
