//! The output head and the cross-entropy fused, by device: `Storage::linear_cross_entropy` computes the mean
//! loss of `x · Wᵀ` against the targets a chunk of rows at a time, and with it the gradients per unit of loss
//! gradient, so the logits `[rows, vocab]` and their gradient are never whole in memory.
//!
//! Shapes: `x: [rows, d]` and `w: [vocab, d]` contiguous, `targets: [rows]`; out: the loss (one element),
//! `dx: [rows, d]` and `dw: [vocab, d]` (each when asked for). Per chunk of `R` rows: `L = x_c · Wᵀ`
//! (`[R, vocab]`, a few MiB), the loss rows `lse(L) − L[target]`, then `L ← (softmax(L) − onehot) / kept` in
//! place (zero on ignored rows), `dx_c = L · W` and `dw += Lᵀ · x_c`. The same FLOPs as the head, the
//! cross-entropy and their backward unfused; the backward is then a scale by the incoming gradient.

use super::cpu::gemm::{gemm, GemmFloat, MatRef};
use super::cross_entropy::{row_lse, to_gradient};
use super::{float_dispatch, Labels, Storage, StorageElement};
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
            return Err(Error::Device {
                op: "linear_cross_entropy",
                msg: format!(
                    "the fused head runs on the cpu (operands on {} and {}); use linear and cross_entropy",
                    self.device(),
                    w.device()
                ),
            });
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
