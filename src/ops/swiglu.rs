//! Fused SwiGLU gate: `silu(a) ⊙ b`.
//!
//! `a: [..]`, `b: [..]` (same shape) → `[..]`. Backward: `da = dy ⊙ b ⊙ σ(a)(1 + a(1 − σ(a)))`,
//! `db = dy ⊙ silu(a)`; both from one pass over `a`, `b` and `dy`.

use super::{float_dispatch, keep, with_native_dtype};
use crate::backend::cpu::elementwise::for_each_row;
use crate::backend::cpu::recycle;
use crate::backend::cpu::simd::vectorized;
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::tape::record_recomputable;
use crate::tensor::Tensor;
use rayon::prelude::*;

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (-x).fast_exp())
}

impl Tensor {
    /// `silu(self) ⊙ up` for a gate `self` and an up projection `up` of the same shape.
    pub fn swiglu(&self, up: &Tensor) -> Result<Tensor> {
        if self.shape() != up.shape() {
            return Err(Error::shape(
                "swiglu",
                format!("gate {:?} and up {:?} differ", self.shape(), up.shape()),
            ));
        }
        with_native_dtype("swiglu", &[self, up], |xs| {
            let (a, b) = (xs[0].contiguous()?, xs[1].contiguous()?);
            let shape = a.shape().to_vec();
            let row = *shape.last().unwrap_or(&1);
            let flat = [a.numel() / row.max(1), row];
            let y = match () {
                #[cfg(feature = "cuda-backend")]
                _ if a.is_cuda() => crate::backend::cuda::fused::swiglu_forward(&a, &b)?,
                _ => float_dispatch!(a.dtype(), T, {
                    let (av, bv) = (a.contiguous_data::<T>(), b.contiguous_data::<T>());
                    let mut y = recycle::buffer::<T>(av.len());
                    for_each_row(
                        &mut y,
                        &flat,
                        #[inline(always)]
                        |r, out| {
                            let (ar, br) =
                                (&av[r * row..(r + 1) * row], &bv[r * row..(r + 1) * row]);
                            for ((o, &x), &u) in out.iter_mut().zip(ar).zip(br) {
                                *o = x * sigmoid(x) * u;
                            }
                        },
                    );
                    Tensor::from_vec(y, &shape)?
                }),
            };
            let saved = keep(&[&a, &b], [&a, &b]);
            let forward = |xs: &[Tensor]| xs[0].swiglu(&xs[1]);
            record_recomputable("swiglu", &[&a, &b], y, forward, move |g, _| {
                let [a, b] = saved.expect("saved when recorded");
                let (a, b) = (a.get()?, b.get()?);
                let g = g.contiguous()?;
                let (da, db) = match () {
                    #[cfg(feature = "cuda-backend")]
                    _ if a.is_cuda() => crate::backend::cuda::fused::swiglu_backward(&a, &b, &g)?,
                    _ => float_dispatch!(a.dtype(), T, {
                        let (av, bv, gv) = (
                            a.contiguous_data::<T>(),
                            b.contiguous_data::<T>(),
                            g.contiguous_data::<T>(),
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
                                let (a, b, g) =
                                    (&av[base..][..n], &bv[base..][..n], &gv[base..][..n]);
                                vectorized(|| {
                                    for i in 0..n {
                                        let (x, u, d) = (a[i], b[i], g[i]);
                                        let s = sigmoid(x);
                                        da[i] = d * u * s * (T::ONE + x * (T::ONE - s));
                                        db[i] = d * x * s;
                                    }
                                })
                            });
                        (Tensor::from_vec(da, &shape)?, Tensor::from_vec(db, &shape)?)
                    }),
                };
                Ok(vec![Some(da), Some(db)])
            })
        })
    }
}

/// The composed reference: `silu(a) ⊙ b`.
pub fn swiglu_reference(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.silu()?.mul(b)
}
