//! Fused softmax + cross-entropy from logits with integer targets and an optional ignore index.
//!
//! `logits: [N, V]` (or `[.., V]`, flattened), `targets: [N]` → scalar `[]`: the mean of `lse(x) − x[target]`
//! over the kept positions (0 when none is kept). The kernel keeps only the row log-sum-exp; backward
//! recomputes the probabilities: `dx = (softmax(x) − onehot(target)) · dy / kept`, zero on ignored rows.

use super::{keep, with_precision};
use crate::backend::Labels;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tape::record;
use crate::tensor::Tensor;

fn check(logits: &Tensor, targets: &[u32], ignore: Option<u32>) -> Result<(usize, usize)> {
    if logits.ndim() == 0 {
        return Err(Error::shape(
            "cross_entropy",
            "logits must have a class axis",
        ));
    }
    let vocab = logits.shape()[logits.ndim() - 1];
    let rows = logits.numel() / vocab.max(1);
    check_targets(
        "cross_entropy",
        &format!("logits {:?} hold", logits.shape()),
        rows,
        vocab,
        targets,
        ignore,
    )?;
    Ok((rows, vocab))
}

/// Checks that `targets` hold one class below `vocab` (or `ignore`) per row of the `rows` that `subject` (for
/// the message: "logits [3, 5] hold") holds.
pub(super) fn check_targets(
    op: &'static str,
    subject: &str,
    rows: usize,
    vocab: usize,
    targets: &[u32],
    ignore: Option<u32>,
) -> Result<()> {
    if rows != targets.len() {
        return Err(Error::shape(
            op,
            format!(
                "{subject} {rows} rows but {} targets were given",
                targets.len()
            ),
        ));
    }
    if let Some(&bad) = targets
        .iter()
        .find(|&&t| Some(t) != ignore && t as usize >= vocab)
    {
        return Err(Error::Index {
            op,
            msg: format!("target {bad} is out of range for {vocab} classes"),
        });
    }
    Ok(())
}

impl Tensor {
    /// Mean cross-entropy of these logits against `targets`, skipping positions equal to `ignore_index`.
    pub fn cross_entropy(&self, targets: &[u32], ignore_index: Option<u32>) -> Result<Tensor> {
        let (rows, _) = check(self, targets, ignore_index)?;
        let targets = targets.to_vec();
        let kept = targets.iter().filter(|&&t| Some(t) != ignore_index).count();
        with_precision("cross_entropy", &[self], |xs| {
            let x = xs[0].contiguous()?;
            let labels = Labels {
                targets: &targets,
                ignore_index,
                kept,
            };
            let (loss, lse) = x.storage.cross_entropy(&x.layout, &labels)?;
            let (out, lse) = (
                Tensor::from_storage(loss, &[]),
                Tensor::from_storage(lse, &[rows]),
            );
            let saved = keep(&[&x], [&x, &lse]);
            record("cross_entropy", &[&x], out, move |g, _| {
                let [x, lse] = saved.expect("saved when recorded");
                let (x, lse) = (x.get()?, lse.get()?);
                let labels = Labels {
                    targets: &targets,
                    ignore_index,
                    kept,
                };
                let dx = x.storage.cross_entropy_backward(
                    &x.layout,
                    (&lse.storage, &lse.layout),
                    (&g.storage, &g.layout),
                    &labels,
                )?;
                Ok(vec![Some(Tensor::from_storage(dx, x.shape()))])
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
