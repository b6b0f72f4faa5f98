//! The SwiGLU gate by device: `Storage::swiglu` (`silu(a) ⊙ b`) and `Storage::swiglu_backward` (both
//! gradients from one pass over `a`, `b` and `dy`). Loops here, `kernels/swiglu.cu` on a GPU.
//!
//! Shapes: contiguous `a`, `b`, `dy` of one shape `[.., C]`; outputs of that shape.

use super::cpu::elementwise::for_each_row;
use super::cpu::recycle;
use super::cpu::simd::vectorized;
use super::{float_dispatch, Storage, StorageElement, View};
use crate::dtype::Float;
use crate::error::Result;
use crate::shape::Layout;
use rayon::prelude::*;

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (-x).fast_exp())
}

impl Storage {
    /// `silu(self) ⊙ b`, `self` read through the contiguous `layout` and `b` of the same shape.
    pub fn swiglu(&self, layout: &Layout, b: View) -> Result<Storage> {
        if let (Storage::Cuda(a), Storage::Cuda(bb)) = (self, b.0) {
            return Ok(Storage::Cuda(super::cuda::swiglu::forward(
                (a, layout),
                (bb, b.1),
            )?));
        }
        let row = *layout.shape.last().unwrap_or(&1);
        let flat = [layout.numel() / row.max(1), row];
        float_dispatch!(self.dtype(), T, {
            let (av, bv) = (
                self.host_contiguous::<T>(layout),
                b.0.host_contiguous::<T>(b.1),
            );
            let mut y = recycle::buffer::<T>(av.len());
            for_each_row(
                &mut y,
                &flat,
                #[inline(always)]
                |r, out| {
                    let (ar, br) = (&av[r * row..(r + 1) * row], &bv[r * row..(r + 1) * row]);
                    for ((o, &x), &u) in out.iter_mut().zip(ar).zip(br) {
                        *o = x * sigmoid(x) * u;
                    }
                },
            );
            Ok(T::wrap(y))
        })
    }

    /// `(da, db)` of SwiGLU: `da = dy ⊙ b ⊙ σ(a)(1 + a(1 − σ(a)))`, `db = dy ⊙ silu(a)`, with `a = self`
    /// (contiguous view `layout`).
    pub fn swiglu_backward(
        &self,
        layout: &Layout,
        b: View,
        dy: View,
    ) -> Result<(Storage, Storage)> {
        if let (Storage::Cuda(a), Storage::Cuda(bb), Storage::Cuda(g)) = (self, b.0, dy.0) {
            let (da, db) = super::cuda::swiglu::backward((a, layout), (bb, b.1), (g, dy.1))?;
            return Ok((Storage::Cuda(da), Storage::Cuda(db)));
        }
        float_dispatch!(self.dtype(), T, {
            let (av, bv, gv) = (
                self.host_contiguous::<T>(layout),
                b.0.host_contiguous::<T>(b.1),
                dy.0.host_contiguous::<T>(dy.1),
            );
            let n = av.len();
            let (mut da, mut db) = (recycle::buffer::<T>(n), recycle::buffer::<T>(n));
            const CHUNK: usize = 8192;
            da.par_chunks_mut(CHUNK)
                .zip(db.par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(c, (da, db))| {
                    let base = c * CHUNK;
                    let n = da.len();
                    let (a, b, g) = (&av[base..][..n], &bv[base..][..n], &gv[base..][..n]);
                    vectorized(|| {
                        for i in 0..n {
                            let (x, u, d) = (a[i], b[i], g[i]);
                            let s = sigmoid(x);
                            da[i] = d * u * s * (T::ONE + x * (T::ONE - s));
                            db[i] = d * x * s;
                        }
                    })
                });
            Ok((T::wrap(da), T::wrap(db)))
        })
    }
}
