//! The output head and the cross-entropy fused, by device: `Storage::linear_cross_entropy` computes the mean
//! loss of `x · Wᵀ` against the targets a chunk of rows at a time, and with it the gradients per unit of loss
//! gradient, so the logits `[rows, vocab]` and their gradient are never whole in memory.
//!
//! Shapes: `x: [rows, d]` and `w: [vocab, d]` contiguous, `targets: [rows]`; out: the loss (one element),
//! `dx: [rows, d]` and `dw: [vocab, d]` (each when asked for). Per chunk of `R` rows: `L = x_c · Wᵀ`
//! (`[R, vocab]`, a few MiB), the loss rows `lse(L) − L[target]`, then `L ← (softmax(L) − onehot) / kept` in
//! place (zero on ignored rows), `dx_c = L · W` and `dw += Lᵀ · x_c`. The same FLOPs as the head, the
//! cross-entropy and their backward unfused; the backward is then a scale by the incoming gradient.
//!
//! On the host the loop runs the packed GEMM straight into `dx` and `dw`; on a GPU the same chunk loop runs the
//! device's own kernels (`matmul`, `cross_entropy` and its backward, `zip`, `cat`), in the operands' dtype.

use super::cpu::gemm::{gemm, GemmFloat, MatRef};
use super::cross_entropy::{row_lse, to_gradient};
use super::{float_dispatch, Arith, Labels, Storage, StorageElement};
use crate::error::{Error, Result};
use crate::shape::Layout;
use rayon::prelude::*;

/// Logits per chunk: 1 Mi elements (4 MiB of f32), so a chunk stays in the shared cache between its products.
const CHUNK_ELEMENTS: usize = 1 << 20;

/// What [`Storage::linear_cross_entropy`] returns: the loss and the gradients asked for.
pub struct LinearCrossEntropy {
    pub loss: Storage,
    /// `d loss / d x` per unit of loss gradient, `[rows, d]`.
    pub dx: Option<Storage>,
    /// `d loss / d w` per unit of loss gradient, `[vocab, d]`.
    pub dw: Option<Storage>,
}

/// Rows per chunk for a vocabulary of `vocab` (about 4 MiB of f32 logits): a multiple of the GEMM's six-row
/// panels, at least six.
pub fn chunk_rows(vocab: usize) -> usize {
    (CHUNK_ELEMENTS / vocab.max(1)).max(6) / 6 * 6
}

impl Storage {
    /// The mean cross-entropy of `self · wᵀ` (`self` read through `lx`, `[rows, d]`; `w` through `lw`,
    /// `[vocab, d]`; both contiguous) against `labels`, `chunk` rows at a time, with `dx` and `dw` when
    /// `want = (dx, dw)` asks.
    pub fn linear_cross_entropy(
        &self,
        lx: &Layout,
        w: &Storage,
        lw: &Layout,
        labels: &Labels,
        chunk: usize,
        want: (bool, bool),
    ) -> Result<LinearCrossEntropy> {
        let (rows, d, vocab) = (lx.shape[0], lx.shape[1], lw.shape[0]);
        if lx.shape.len() != 2
            || lw.shape.len() != 2
            || lw.shape[1] != d
            || !lx.is_contiguous()
            || !lw.is_contiguous()
            || labels.targets.len() != rows
        {
            return Err(Error::shape(
                "linear_cross_entropy",
                format!(
                    "internal: x {:?} and weight {:?} are not contiguous [rows, d] and [vocab, d] for {} targets",
                    lx.shape,
                    lw.shape,
                    labels.targets.len()
                ),
            ));
        }
        if !self.is_host() || !w.is_host() {
            return composed(self, lx, w, lw, labels, chunk.max(1), want);
        }
        float_dispatch!(self.dtype(), T, {
            let x = &self.host::<T>()[lx.offset..][..rows * d];
            let w = &w.host::<T>()[lw.offset..][..vocab * d];
            let (loss, dx, dw) = fused::<T>(x, w, (rows, d, vocab), labels, chunk.max(1), want);
            Ok(LinearCrossEntropy {
                loss: Storage::filled(self.dtype(), 1, loss),
                dx: dx.map(T::wrap),
                dw: dw.map(T::wrap),
            })
        })
    }
}

/// The host loop: see the module header.
fn fused<T: GemmFloat + StorageElement>(
    x: &[T],
    w: &[T],
    (rows, d, vocab): (usize, usize, usize),
    labels: &Labels,
    chunk: usize,
    (want_dx, want_dw): (bool, bool),
) -> (f64, Option<Vec<T>>, Option<Vec<T>>) {
    let norm = T::from_f64(labels.norm());
    let mut logits = vec![T::ZERO; chunk.min(rows) * vocab];
    let mut dx = want_dx.then(|| vec![T::ZERO; rows * d]);
    let mut dw = want_dw.then(|| vec![T::ZERO; vocab * d]);
    let mut losses = vec![0.0f64; rows];
    let x_at = |r0: usize| MatRef {
        data: x,
        offset: r0 * d,
        row_stride: d,
        col_stride: 1,
    };
    for r0 in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - r0);
        let l = &mut logits[..n * vocab];
        // L = x_c · Wᵀ: W read transposed.
        let wt = MatRef {
            data: w,
            offset: 0,
            row_stride: 1,
            col_stride: d,
        };
        gemm(n, vocab, d, T::ONE, x_at(r0), wt, T::ZERO, l, vocab);
        let grads = want_dx || want_dw;
        l.par_chunks_mut(vocab)
            .zip(&mut losses[r0..r0 + n])
            .enumerate()
            .for_each(|(i, (row, loss))| {
                super::cpu::simd::vectorized(|| {
                    let target = labels.targets[r0 + i];
                    if Some(target) == labels.ignore_index {
                        row.fill(T::ZERO);
                        return;
                    }
                    let lse = row_lse(row);
                    *loss = (lse - row[target as usize]).to_f64();
                    if grads {
                        to_gradient(row, lse, target, norm);
                    }
                })
            });
        let l = &logits[..n * vocab];
        if let Some(dx) = dx.as_deref_mut() {
            let lm = MatRef {
                data: l,
                offset: 0,
                row_stride: vocab,
                col_stride: 1,
            };
            let wm = MatRef {
                data: w,
                offset: 0,
                row_stride: d,
                col_stride: 1,
            };
            gemm(n, d, vocab, T::ONE, lm, wm, T::ZERO, &mut dx[r0 * d..], d);
        }
        if let Some(dw) = dw.as_deref_mut() {
            let lt = MatRef {
                data: l,
                offset: 0,
                row_stride: 1,
                col_stride: vocab,
            };
            let beta = if r0 == 0 { T::ZERO } else { T::ONE };
            gemm(vocab, d, n, T::ONE, lt, x_at(r0), beta, dw, d);
        }
    }
    let total: f64 = losses.iter().sum();
    (total * labels.norm(), dx, dw)
}

/// Any device: the chunk loop through the device's kernels. Each chunk's loss is its rows' sum over all
/// kept rows (`labels.kept` stays the whole count), so the chunks' losses add up to the mean.
fn composed(
    x: &Storage,
    lx: &Layout,
    w: &Storage,
    lw: &Layout,
    labels: &Labels,
    chunk: usize,
    (want_dx, want_dw): (bool, bool),
) -> Result<LinearCrossEntropy> {
    let (rows, d, vocab) = (lx.shape[0], lx.shape[1], lw.shape[0]);
    let wt = Layout {
        shape: vec![d, vocab],
        strides: vec![1, d],
        offset: lw.offset,
    };
    let one = super::filled(1, 1.0, x.dtype(), x.device())?;
    let scalar = Layout::contiguous(&[]);
    let (mut loss, mut dx_parts, mut dw): (Option<Storage>, Vec<Storage>, Option<Storage>) =
        (None, Vec::new(), None);
    for r0 in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - r0);
        let lc = Layout {
            shape: vec![n, d],
            strides: vec![d, 1],
            offset: lx.offset + r0 * d,
        };
        let ll = Layout::contiguous(&[n, vocab]);
        let logits = x.matmul(&lc, w, &wt, &[n, vocab])?;
        let sub = Labels {
            targets: &labels.targets[r0..r0 + n],
            ignore_index: labels.ignore_index,
            kept: labels.kept,
        };
        let (part, lse) = logits.cross_entropy(&ll, &sub)?;
        loss = Some(match loss {
            None => part,
            Some(sum) => sum.zip(&scalar, &part, &scalar, Arith::Add)?,
        });
        if !(want_dx || want_dw) {
            continue;
        }
        let lse_layout = Layout::contiguous(&[n]);
        let g = logits.cross_entropy_backward(&ll, (&lse, &lse_layout), (&one, &scalar), &sub)?;
        drop(logits);
        if want_dx {
            dx_parts.push(g.matmul(&ll, w, lw, &[n, d])?);
        }
        if want_dw {
            let gt = Layout {
                shape: vec![vocab, n],
                strides: vec![1, vocab],
                offset: 0,
            };
            let part = g.matmul(&gt, x, &lc, &[vocab, d])?;
            let full = Layout::contiguous(&[vocab, d]);
            dw = Some(match dw {
                None => part,
                Some(sum) => sum.zip(&full, &part, &full, Arith::Add)?,
            });
        }
    }
    let dx = if want_dx && rows == 0 {
        Some(super::filled(0, 0.0, x.dtype(), x.device())?)
    } else if want_dx {
        let layouts: Vec<Layout> = dx_parts
            .iter()
            .map(|p| Layout::contiguous(&[p.len() / d.max(1), d]))
            .collect();
        let parts: Vec<(&Storage, &Layout)> = dx_parts.iter().zip(&layouts).collect();
        Some(Storage::cat(&parts, 0, &[rows, d])?)
    } else {
        None
    };
    if want_dw && dw.is_none() {
        dw = Some(super::filled(vocab * d, 0.0, x.dtype(), x.device())?);
    }
    let loss = match loss {
        Some(loss) => loss,
        None => super::filled(1, 0.0, x.dtype(), x.device())?,
    };
    Ok(LinearCrossEntropy { loss, dx, dw })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn the_device_loop_agrees_with_the_host_loop() {
        let (rows, d, vocab) = (23, 8, 37);
        let mut rng = Rng::new(7);
        let x: Vec<f64> = (0..rows * d).map(|_| rng.normal()).collect();
        let w: Vec<f64> = (0..vocab * d).map(|_| rng.normal() * 0.3).collect();
        let targets: Vec<u32> = (0..rows).map(|r| (r * 5 % vocab) as u32).collect();
        let labels = Labels {
            targets: &targets,
            ignore_index: Some(10),
            kept: targets.iter().filter(|&&t| t != 10).count(),
        };
        let (xs, ws) = (f64::wrap(x), f64::wrap(w));
        let (lx, lw) = (
            Layout::contiguous(&[rows, d]),
            Layout::contiguous(&[vocab, d]),
        );
        let host = xs
            .linear_cross_entropy(&lx, &ws, &lw, &labels, 7, (true, true))
            .unwrap();
        for chunk in [1, 7, 100] {
            let loop_ = composed(&xs, &lx, &ws, &lw, &labels, chunk, (true, true)).unwrap();
            let all = |s: &Storage| s.host::<f64>().to_vec();
            let close = |a: Vec<f64>, b: Vec<f64>| {
                assert_eq!(a.len(), b.len());
                for (a, b) in a.iter().zip(&b) {
                    assert!(
                        (a - b).abs() < 1e-12 * (1.0 + b.abs()),
                        "chunk {chunk}: {a} vs {b}"
                    );
                }
            };
            close(all(&loop_.loss), all(&host.loss));
            close(
                all(loop_.dx.as_ref().unwrap()),
                all(host.dx.as_ref().unwrap()),
            );
            close(
                all(loop_.dw.as_ref().unwrap()),
                all(host.dw.as_ref().unwrap()),
            );
        }
    }
}
