//! Fused RMSNorm: `y = x / √(mean(x²) + eps) · w`.
//!
//! `x: [.., C]`, `w: [C]` → `[.., C]`. Forward keeps the per-row `rstd = 1/√(mean(x²) + eps)`.
//! Backward (derivation in docs/kernels.md): `dw = Σ_rows dy ⊙ x · rstd`;
//! `dx = rstd · (dy ⊙ w − x · rstd² · mean(dy ⊙ w ⊙ x))`.

use super::{float_dispatch, keep, with_native_dtype};
use crate::backend::cpu::elementwise::for_each_row;
use crate::backend::cpu::simd::vectorized;
use crate::backend::cpu::{dot, dot3, recycle};
use crate::backend::StorageElement;
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::tape::record_recomputable;
use crate::tensor::Tensor;
use rayon::prelude::*;

fn forward<T: Float + StorageElement>(
    x: &[T],
    w: &[T],
    shape: &[usize],
    eps: f64,
) -> (Vec<T>, Vec<T>) {
    let c = w.len();
    let rows = x.len() / c.max(1);
    let rstd: Vec<T> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let row = &x[r * c..(r + 1) * c];
            let ms = vectorized(|| dot(row, row)) / T::from_f64(c as f64);
            T::ONE / (ms + T::from_f64(eps)).sqrt()
        })
        .collect();
    let mut y = recycle::buffer::<T>(x.len());
    for_each_row(
        &mut y,
        shape,
        #[inline(always)]
        |r, out| {
            let row = &x[r * c..(r + 1) * c];
            for ((o, &v), &wv) in out.iter_mut().zip(row).zip(w) {
                *o = v * rstd[r] * wv;
            }
        },
    );
    (y, rstd)
}

fn backward<T: Float + StorageElement>(
    x: &[T],
    w: &[T],
    rstd: &[T],
    dy: &[T],
    shape: &[usize],
) -> (Vec<T>, Vec<T>) {
    let c = w.len();
    let mut dx = recycle::buffer::<T>(x.len());
    let inv_c = T::from_f64(1.0 / c as f64);
    for_each_row(
        &mut dx,
        shape,
        #[inline(always)]
        |r, out| {
            let (xr, gr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
            let dot = dot3(xr, gr, w);
            let k = rstd[r] * rstd[r] * dot * inv_c;
            for (((o, &a), &g), &wv) in out.iter_mut().zip(xr).zip(gr).zip(w) {
                *o = rstd[r] * (g * wv - a * k);
            }
        },
    );
    // Per-chunk partial sums over a fixed chunking, added in order: deterministic for any thread count.
    let rows = rstd.len();
    let partials: Vec<Vec<T>> = (0..rows.div_ceil(64))
        .into_par_iter()
        .map(|chunk| {
            let mut acc = vec![T::ZERO; c];
            vectorized(|| {
                for r in chunk * 64..(chunk * 64 + 64).min(rows) {
                    let (xr, gr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
                    for ((a, &xv), &g) in acc.iter_mut().zip(xr).zip(gr) {
                        *a += g * xv * rstd[r];
                    }
                }
            });
            acc
        })
        .collect();
    let mut dw = vec![T::ZERO; c];
    for p in partials {
        dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    (dx, dw)
}

impl Tensor {
    /// RMSNorm over the last axis with gain `weight: [C]`.
    pub fn rms_norm(&self, weight: &Tensor, eps: f64) -> Result<Tensor> {
        if self.ndim() == 0 || weight.shape() != [self.shape()[self.ndim() - 1]] {
            return Err(Error::shape(
                "rms_norm",
                format!(
                    "input {:?} and weight {:?} are not compatible",
                    self.shape(),
                    weight.shape()
                ),
            ));
        }
        with_native_dtype("rms_norm", &[self, weight], |xs| {
            let (x, w) = (xs[0].contiguous()?, xs[1].contiguous()?);
            let shape = x.shape().to_vec();
            let (y, rstd) = match () {
                #[cfg(feature = "cuda-backend")]
                _ if x.is_cuda() => crate::backend::cuda::fused::rms_norm_forward(&x, &w, eps)?,
                _ => float_dispatch!(x.dtype(), T, {
                    let (y, rstd) = forward(
                        x.contiguous_data::<T>(),
                        w.contiguous_data::<T>(),
                        &shape,
                        eps,
                    );
                    let n = rstd.len();
                    (Tensor::from_vec(y, &shape)?, Tensor::from_vec(rstd, &[n])?)
                }),
            };
            let saved = keep(&[&x, &w], [&x, &w, &rstd]);
            let forward = move |xs: &[Tensor]| xs[0].rms_norm(&xs[1], eps);
            record_recomputable("rms_norm", &[&x, &w], y, forward, move |g, _| {
                let [x, w, rstd] = saved.expect("saved when recorded");
                let (x, w, rstd) = (x.get()?, w.get()?, rstd.get()?);
                let g = g.contiguous()?;
                let (dx, dw) = match () {
                    #[cfg(feature = "cuda-backend")]
                    _ if x.is_cuda() => {
                        crate::backend::cuda::fused::rms_norm_backward(&x, &w, &rstd, &g)?
                    }
                    _ => float_dispatch!(x.dtype(), T, {
                        let (dx, dw) = backward(
                            x.contiguous_data::<T>(),
                            w.contiguous_data::<T>(),
                            rstd.contiguous_data::<T>(),
                            g.contiguous_data::<T>(),
                            x.shape(),
                        );
                        (
                            Tensor::from_vec(dx, x.shape())?,
                            Tensor::from_vec(dw, w.shape())?,
                        )
                    }),
                };
                Ok(vec![Some(dx), Some(dw)])
            })
        })
    }
}

/// The composed reference: `x · rsqrt(mean(x², -1) + eps) · w`.
pub fn rms_norm_reference(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.mul(x)?.mean(&[-1], true)?;
    x.mul(&ms.add_scalar(eps)?.rsqrt()?)?.mul(weight)
}
