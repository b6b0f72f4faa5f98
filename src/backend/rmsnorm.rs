//! RMSNorm by device: `Storage::rms_norm` (keeping the row `rstd = 1/√(mean(x²) + eps)`) and
//! `Storage::rms_norm_backward` (derivation in docs/kernels.md). Row loops here, `kernels/rmsnorm.cu` on a GPU
//! (whose `rstd` is f32 whatever the input's dtype).
//!
//! Shapes: contiguous `x: [.., C]`, `w: [C]` → `y: [.., C]`, `rstd: [rows]`; backward `dx: [.., C]`, `dw: [C]`.

use super::cpu::elementwise::for_each_row;
use super::cpu::simd::vectorized;
use super::cpu::{dot, dot3, recycle};
use super::{float_dispatch, Storage, StorageElement, View};
use crate::dtype::Float;
use crate::error::Result;
use crate::shape::Layout;
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

impl Storage {
    /// `(y, rstd)` of RMSNorm over the last axis of `self` (contiguous view `layout`) with gain `w`.
    pub fn rms_norm(&self, layout: &Layout, w: View, eps: f64) -> Result<(Storage, Storage)> {
        if let (Storage::Cuda(x), Storage::Cuda(wb)) = (self, w.0) {
            let (y, rstd) = super::cuda::rmsnorm::forward((x, layout), (wb, w.1), eps)?;
            return Ok((Storage::Cuda(y), Storage::Cuda(rstd)));
        }
        float_dispatch!(self.dtype(), T, {
            let (y, rstd) = forward(
                self.host_contiguous::<T>(layout),
                w.0.host_contiguous::<T>(w.1),
                &layout.shape,
                eps,
            );
            Ok((T::wrap(y), T::wrap(rstd)))
        })
    }

    /// `(dx, dw)` of RMSNorm from `x = self` (contiguous view `layout`), `w`, the kept `rstd` and `dy`.
    pub fn rms_norm_backward(
        &self,
        layout: &Layout,
        w: View,
        rstd: View,
        dy: View,
    ) -> Result<(Storage, Storage)> {
        if let (Storage::Cuda(x), Storage::Cuda(wb), Storage::Cuda(r), Storage::Cuda(g)) =
            (self, w.0, rstd.0, dy.0)
        {
            let (dx, dw) =
                super::cuda::rmsnorm::backward((x, layout), (wb, w.1), (r, rstd.1), (g, dy.1))?;
            return Ok((Storage::Cuda(dx), Storage::Cuda(dw)));
        }
        float_dispatch!(self.dtype(), T, {
            let (dx, dw) = backward(
                self.host_contiguous::<T>(layout),
                w.0.host_contiguous::<T>(w.1),
                rstd.0.host_contiguous::<T>(rstd.1),
                dy.0.host_contiguous::<T>(dy.1),
                &layout.shape,
            );
            Ok((T::wrap(dx), T::wrap(dw)))
        })
    }
}
