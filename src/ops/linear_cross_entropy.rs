//! The output head and the cross-entropy in one op, without the logits tensor.
//!
//! `x: [.., d]` (flattened to `[N, d]`), `weight: [V, d]`, `targets: [N]` → scalar `[]`: the mean over kept
//! positions of `lse(x·Wᵀ) − (x·Wᵀ)[target]`, as `x.linear(w).cross_entropy(..)` gives. The kernel runs a
//! chunk of rows at a time (`backend::linear_cross_entropy`); when the op records, it computes the gradients
//! per unit of loss gradient on the way (`dx: [N, d]`, `dW: [V, d]`, the ones the inputs need), so what it
//! keeps for backward is their size, not the `[N, V]` logits and their gradient. Backward scales them by the
//! incoming gradient.

use super::{keep, with_precision};
use crate::backend::Labels;
use crate::error::{Error, Result};
use crate::tape::{record, recording_tape};
use crate::tensor::Tensor;

impl Tensor {
    /// Mean cross-entropy of `self · weightᵀ` against `targets` (one per row of `self`, `ignore_index`
    /// skipped), never holding the logits whole.
    pub fn linear_cross_entropy(
        &self,
        weight: &Tensor,
        targets: &[u32],
        ignore_index: Option<u32>,
    ) -> Result<Tensor> {
        let chunk = crate::backend::chunk_rows(weight.shape().first().copied().unwrap_or(1));
        self.linear_cross_entropy_in_chunks(weight, targets, ignore_index, chunk)
    }

    /// As [`Tensor::linear_cross_entropy`], `chunk` rows at a time (the default holds about 4 MiB of logits).
    pub fn linear_cross_entropy_in_chunks(
        &self,
        weight: &Tensor,
        targets: &[u32],
        ignore_index: Option<u32>,
        chunk: usize,
    ) -> Result<Tensor> {
        let d = self.shape().last().copied().unwrap_or(0);
        if weight.ndim() != 2 || self.ndim() < 1 || weight.shape()[1] != d {
            return Err(Error::shape(
                "linear_cross_entropy",
                format!(
                    "input {:?} and weight {:?} are not compatible (weight is [vocab, in])",
                    self.shape(),
                    weight.shape()
                ),
            ));
        }
        let (rows, vocab) = (self.numel() / d.max(1), weight.shape()[0]);
        super::cross_entropy::check_targets(
            "linear_cross_entropy",
            &format!("input {:?} holds", self.shape()),
            rows,
            vocab,
            targets,
            ignore_index,
        )?;
        let targets = targets.to_vec();
        let kept = targets.iter().filter(|&&t| Some(t) != ignore_index).count();
        with_precision("linear_cross_entropy", &[self, weight], |xs| {
            let (x, w) = (&xs[0], &xs[1]);
            let recording = recording_tape(&[x, w]).is_some();
            let want = (recording && x.is_tracked(), recording && w.is_tracked());
            let x2 = x.detach().contiguous()?.reshape(&[rows, d])?;
            let w2 = w.detach().contiguous()?;
            let labels = Labels {
                targets: &targets,
                ignore_index,
                kept,
            };
            let fused = x2.storage.linear_cross_entropy(
                &x2.layout,
                &w2.storage,
                &w2.layout,
                &labels,
                chunk,
                want,
            )?;
            let out = Tensor::from_storage(fused.loss, &[]);
            let dx = fused
                .dx
                .map(|s| Tensor::from_storage(s, x.shape()))
                .and_then(|t| keep(&[x, w], [&t]));
            let dw = fused
                .dw
                .map(|s| Tensor::from_storage(s, &[vocab, d]))
                .and_then(|t| keep(&[x, w], [&t]));
            record("linear_cross_entropy", &[x, w], out, move |g, needs| {
                let scaled = |saved: &Option<[crate::tape::Saved; 1]>, need: bool| match saved {
                    Some([t]) if need => t.get()?.mul(g).map(Some),
                    _ => Ok(None),
                };
                Ok(vec![scaled(&dx, needs[0])?, scaled(&dw, needs[1])?])
            })
        })
    }
}

/// The composed reference: `x.linear(weight)` then `cross_entropy`.
pub fn linear_cross_entropy_reference(
    x: &Tensor,
    weight: &Tensor,
    targets: &[u32],
    ignore_index: Option<u32>,
) -> Result<Tensor> {
    let logits = x.linear(weight)?;
    let vocab = weight.shape()[0];
    logits
        .reshape(&[logits.numel() / vocab.max(1), vocab])?
        .cross_entropy(targets, ignore_index)
}
