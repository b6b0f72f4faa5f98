//! The fused softmax + cross-entropy by device: `Storage::cross_entropy` (the mean loss, keeping only the row
//! log-sum-exp) and `Storage::cross_entropy_backward` (the probabilities recomputed from it). Row loops here,
//! `kernels/cross_entropy.cu` on a GPU.
//!
//! Shapes: contiguous logits `[rows, vocab]` (any shape whose last axis is the vocabulary), `targets: [rows]`;
//! the loss is one element, the log-sum-exp `[rows]`, the gradient `[rows, vocab]`.

use super::cpu::elementwise::for_each_row;
use super::cpu::recycle;
use super::cpu::simd::vectorized;
use super::{float_dispatch, Storage, StorageElement};
use crate::dtype::{Element, Float};
use crate::error::{Error, Result};
use crate::shape::Layout;
use rayon::prelude::*;

/// The targets of one evaluation (checked `< vocab` unless ignored, one per row, by the op).
pub struct Labels<'a> {
    pub targets: &'a [u32],
    pub ignore_index: Option<u32>,
    /// Rows whose target is not the ignore index.
    pub kept: usize,
}

impl Labels<'_> {
    /// `1 / max(kept, 1)`: the loss is the mean over kept rows, 0 when none is.
    pub(super) fn norm(&self) -> f64 {
        1.0 / self.kept.max(1) as f64
    }
}

/// `log Σ exp(row)`, with the max and the sum kept in eight lanes (so the loops vectorize) and `fast_exp`.
#[inline(always)]
pub(super) fn row_lse<T: Float>(row: &[T]) -> T {
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

/// `row ← (softmax(row) − onehot(target)) · s` in place, given the row's log-sum-exp.
#[inline(always)]
pub(super) fn to_gradient<T: Float>(row: &mut [T], lse: T, target: u32, s: T) {
    for v in row.iter_mut() {
        *v = (*v - lse).fast_exp() * s;
    }
    row[target as usize] -= s;
}

/// The rows and the vocabulary of contiguous logits `layout` with one target per row.
fn rows_of(op: &'static str, layout: &Layout, labels: &Labels) -> Result<(usize, usize)> {
    let vocab = layout.shape.last().copied().unwrap_or(1);
    let rows = labels.targets.len();
    if !layout.is_contiguous() || layout.numel() != rows * vocab {
        return Err(Error::shape(
            op,
            format!(
                "internal: logits {:?} are not {rows} contiguous rows",
                layout.shape
            ),
        ));
    }
    Ok((rows, vocab))
}

impl Storage {
    /// The loss (one element: the mean over kept rows of `lse − x[target]`) and the row log-sum-exp `[rows]`
    /// of the logits `self` (contiguous view `layout`), on `self`'s device.
    pub fn cross_entropy(&self, layout: &Layout, labels: &Labels) -> Result<(Storage, Storage)> {
        let (rows, vocab) = rows_of("cross_entropy", layout, labels)?;
        if let Storage::Cuda(x) = self {
            let (loss, lse) = super::cuda::cross_entropy::forward(x, layout, labels)?;
            return Ok((Storage::Cuda(loss), Storage::Cuda(lse)));
        }
        let Labels {
            targets,
            ignore_index,
            ..
        } = *labels;
        let (loss, lse) = float_dispatch!(self.dtype(), T, {
            let data = self.host_contiguous::<T>(layout);
            let lse: Vec<T> = data
                .par_chunks(vocab.max(1))
                .map(|row| vectorized(|| row_lse(row)))
                .collect();
            let total: f64 = (0..rows)
                .filter(|&r| Some(targets[r]) != ignore_index)
                .map(|r| (lse[r] - data[r * vocab + targets[r] as usize]).to_f64())
                .sum();
            (total * labels.norm(), T::wrap(lse))
        });
        Ok((Storage::filled(self.dtype(), 1, loss), lse))
    }

    /// `dx = (softmax(x) − onehot(target)) · g / kept`, zero on ignored rows, with `self` the logits
    /// (contiguous view `layout`), `lse` their row log-sum-exp and `g` the loss gradient (one element).
    pub fn cross_entropy_backward(
        &self,
        layout: &Layout,
        lse: (&Storage, &Layout),
        g: (&Storage, &Layout),
        labels: &Labels,
    ) -> Result<Storage> {
        let (rows, vocab) = rows_of("cross_entropy backward", layout, labels)?;
        if g.1.numel() != 1 || lse.1.numel() != rows || !lse.1.is_contiguous() {
            return Err(Error::shape(
                "cross_entropy backward",
                format!(
                    "internal: gradient {:?} / lse {:?} do not fit logits {:?}",
                    g.1.shape, lse.1.shape, layout.shape
                ),
            ));
        }
        if let (Storage::Cuda(x), Storage::Cuda(l), Storage::Cuda(gb)) = (self, lse.0, g.0) {
            let dx = super::cuda::cross_entropy::backward(
                (x, layout),
                (l, lse.1),
                (gb, g.1),
                labels,
                labels.norm(),
            )?;
            return Ok(Storage::Cuda(dx));
        }
        let Labels {
            targets,
            ignore_index,
            ..
        } = *labels;
        float_dispatch!(self.dtype(), T, {
            let data = self.host_contiguous::<T>(layout);
            let lse = lse.0.host_contiguous::<T>(lse.1);
            let scale = g.0.host::<T>()[g.1.offset].to_f64() * labels.norm();
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
                    out.copy_from_slice(&data[r * vocab..(r + 1) * vocab]);
                    to_gradient(out, lse[r], target, s);
                },
            );
            Ok(T::wrap(dx))
        })
    }
}
