//! AdamW (Loshchilov & Hutter) with decoupled weight decay, as in the LLaMA paper: β1 0.9, β2 0.95,
//! weight decay 0.1, applied to matrices only — norm gains (1-D parameters) are not decayed, since shrinking a
//! gain toward zero only fights the normalization. Global-norm gradient clipping is folded into the same
//! single pass over parameter, gradient and both moments.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 disables).
    pub clip_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            clip_norm: 1.0,
        }
    }
}

/// Optimizer state: both moments of every parameter (f32) and the step count. For parameters on a GPU the
/// moments live there (uploaded on the first step); `to_host` brings them back into `m` and `v`.
#[derive(Clone, Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    /// The moments on the device, authoritative while not empty.
    on_device: Vec<(Tensor, Tensor)>,
}

/// What one update did.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The factor gradients were scaled by (1 when not clipped).
    pub clip_scale: f64,
    /// The gradient norm was not finite, so nothing was updated (state and step count unchanged).
    pub skipped: bool,
}

/// The global L2 norm of a set of f32 gradients.
pub fn global_norm(grads: &[&[f32]]) -> f64 {
    grads
        .iter()
        .flat_map(|g| {
            // Fixed chunks summed in order, so the norm is the same bits for any thread count.
            g.par_chunks(1 << 14)
                .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
                .collect::<Vec<f64>>()
        })
        .sum::<f64>()
        .sqrt()
}

impl AdamW {
    /// Fresh state for parameters of the given sizes.
    pub fn new(config: AdamWConfig, sizes: &[usize]) -> AdamW {
        AdamW {
            config,
            step: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            on_device: Vec::new(),
        }
    }

    /// Copies moments kept on a GPU back into `m` and `v` (before saving a checkpoint); they are uploaded
    /// again by the next step.
    pub fn to_host(&mut self) -> Result<()> {
        for (i, (m, v)) in std::mem::take(&mut self.on_device).into_iter().enumerate() {
            self.m[i] = m.to_vec::<f32>()?;
            self.v[i] = v.to_vec::<f32>()?;
        }
        Ok(())
    }

    /// One update of `params` (f32, whole buffers) with `grads` at learning rate `lr`. Parameters with one
    /// dimension are not decayed.
    pub fn step(
        &mut self,
        params: &mut [&mut Tensor],
        grads: &[Tensor],
        lr: f64,
    ) -> Result<StepInfo> {
        if params.len() != self.m.len() || grads.len() != params.len() {
            return Err(Error::invalid(
                "adamw",
                format!(
                    "{} parameters and {} gradients for a state of {}",
                    params.len(),
                    grads.len(),
                    self.m.len()
                ),
            ));
        }
        // Everything is checked before anything changes: a refused step leaves the state as it was.
        for (i, (param, g)) in params.iter().zip(grads).enumerate() {
            let n = param.numel();
            if param.dtype() != crate::DType::F32 || g.numel() != n || self.m[i].len() != n {
                return Err(Error::shape(
                    "adamw",
                    format!(
                        "parameter {i} {:?} {} does not match its gradient {:?} or state [{}]",
                        param.shape(),
                        param.dtype(),
                        g.shape(),
                        self.m[i].len()
                    ),
                ));
            }
        }
        let grads: Vec<Tensor> = grads
            .iter()
            .map(|g| g.contiguous())
            .collect::<Result<_>>()?;
        #[cfg(feature = "cuda-backend")]
        if params.first().is_some_and(|p| p.is_cuda()) {
            return self.step_on_device(params, &grads, lr);
        }
        let slices: Vec<&[f32]> = grads
            .iter()
            .map(|g| {
                if g.dtype() != crate::DType::F32 {
                    return Err(Error::DType {
                        op: "adamw",
                        msg: format!("gradient is {}, expected f32", g.dtype()),
                    });
                }
                Ok(g.contiguous_data::<f32>())
            })
            .collect::<Result<_>>()?;
        let grad_norm = global_norm(&slices);
        if !grad_norm.is_finite() {
            return Ok(StepInfo {
                grad_norm,
                clip_scale: 0.0,
                skipped: true,
            });
        }
        let k = self.begin_step(grad_norm, lr);
        for (i, (param, g)) in params.iter_mut().zip(slices).enumerate() {
            let decay = self.decay_for(param.ndim(), lr);
            let p = param.data_mut::<f32>()?;
            update_slices(
                &self.config,
                &k,
                decay,
                p,
                &mut self.m[i],
                &mut self.v[i],
                g,
            );
        }
        let clip_scale = k.clip_scale;
        Ok(StepInfo {
            grad_norm,
            clip_scale,
            skipped: false,
        })
    }
}

/// Bias corrections and the clipping factor of one step, shared by the host and device updates.
pub(crate) struct StepConstants {
    pub(crate) clip_scale: f64,
    step_size: f32,
    inv_sqrt_bias2: f32,
}

/// The update of one run of parameters `p` with gradients `g` and moments `m`, `v` (all the same length):
/// `p -= lr · (m̂ / (√v̂ + eps) + decay · p)` with `m̂ = m / bias1`, `v̂ = v / bias2`, the gradient scaled by the
/// clipping factor first. The host step and the sharded (ZeRO-1) step both use it, so they agree bit for bit.
pub(crate) fn update_slices(
    config: &AdamWConfig,
    k: &StepConstants,
    decay: f32,
    p: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
) {
    let (b1, b2) = (config.beta1 as f32, config.beta2 as f32);
    let (eps, scale) = (config.eps as f32, k.clip_scale as f32);
    let (step_size, inv_sqrt_bias2) = (k.step_size, k.inv_sqrt_bias2);
    const CHUNK: usize = 4096;
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| {
            for j in 0..p.len() {
                let gj = g[j] * scale;
                m[j] = b1 * m[j] + (1.0 - b1) * gj;
                v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
                let denom = v[j].sqrt() * inv_sqrt_bias2 + eps;
                p[j] -= step_size * m[j] / denom + decay * p[j];
            }
        });
}

impl AdamW {
    /// The weight decay of a parameter with `ndim` dimensions at learning rate `lr`: matrices only.
    pub(crate) fn decay_for(&self, ndim: usize, lr: f64) -> f32 {
        if ndim >= 2 {
            (lr * self.config.weight_decay) as f32
        } else {
            0.0
        }
    }

    /// Advances the step count and returns this step's constants for a finite `grad_norm`.
    pub(crate) fn begin_step(&mut self, grad_norm: f64, lr: f64) -> StepConstants {
        let clip = self.config.clip_norm;
        let clip_scale = if clip > 0.0 && grad_norm > clip {
            clip / grad_norm
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let bias1 = 1.0 - self.config.beta1.powi(t);
        let bias2 = 1.0 - self.config.beta2.powi(t);
        StepConstants {
            clip_scale,
            step_size: (lr / bias1) as f32,
            inv_sqrt_bias2: (1.0 / bias2.sqrt()) as f32,
        }
    }

    /// The update of parameters on a GPU: the same arithmetic, one kernel per parameter.
    #[cfg(feature = "cuda-backend")]
    fn step_on_device(
        &mut self,
        params: &mut [&mut Tensor],
        grads: &[Tensor],
        lr: f64,
    ) -> Result<StepInfo> {
        use crate::backend::cuda::adamw::{sum_of_squares, update, Update};
        let device = params[0].device();
        crate::ops::device_of(
            "adamw",
            &params.iter().map(|p| &**p).chain(grads).collect::<Vec<_>>(),
        )?;
        let mut sum = 0.0;
        for g in grads {
            sum += sum_of_squares(g.device_view("adamw")?)?;
        }
        let grad_norm = sum.sqrt();
        if !grad_norm.is_finite() {
            return Ok(StepInfo {
                grad_norm,
                clip_scale: 0.0,
                skipped: true,
            });
        }
        if self.on_device.is_empty() {
            for (i, p) in params.iter().enumerate() {
                let up = |s: &[f32]| Tensor::from_slice(s, p.shape())?.to_device(device);
                self.on_device.push((up(&self.m[i])?, up(&self.v[i])?));
            }
        }
        let k = self.begin_step(grad_norm, lr);
        let c = &self.config;
        for ((param, g), (m, v)) in params.iter_mut().zip(grads).zip(&self.on_device) {
            param.make_unique_on_device()?;
            let decay = self.decay_for(param.ndim(), lr);
            let u = Update {
                beta1: c.beta1 as f32,
                beta2: c.beta2 as f32,
                step_size: k.step_size,
                inv_sqrt_bias2: k.inv_sqrt_bias2,
                eps: c.eps as f32,
                scale: k.clip_scale as f32,
                decay,
            };
            let view = |t| Tensor::device_view(t, "adamw");
            update(view(param)?, view(g)?, view(m)?, view(v)?, u)?;
        }
        Ok(StepInfo {
            grad_norm,
            clip_scale: k.clip_scale,
            skipped: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_scalar_reference_and_skips_decay_on_norms() {
        let cfg = AdamWConfig {
            clip_norm: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(cfg.clone(), &[2, 2]);
        let mut w = Tensor::from_vec(vec![1.0f32, -2.0], &[1, 2]).unwrap();
        let mut gain = Tensor::from_vec(vec![1.0f32, -2.0], &[2]).unwrap();
        let g = Tensor::from_vec(vec![0.5f32, 0.25], &[1, 2]).unwrap();
        let g1 = g.reshape(&[2]).unwrap();
        opt.step(&mut [&mut w, &mut gain], &[g, g1], 0.1).unwrap();
        // After one step m̂ = g and v̂ = g², so the update is lr · sign(g) (up to eps) plus decay.
        let w = w.to_vec::<f32>().unwrap();
        let gain = gain.to_vec::<f32>().unwrap();
        assert!((w[0] - (1.0 - 0.1 - 0.1 * 0.1 * 1.0)).abs() < 1e-6, "{w:?}");
        assert!(
            (w[1] - (-2.0 - 0.1 + 0.1 * 0.1 * 2.0)).abs() < 1e-6,
            "{w:?}"
        );
        assert!(
            (gain[0] - 0.9).abs() < 1e-6 && (gain[1] + 2.1).abs() < 1e-6,
            "{gain:?}"
        );
    }

    #[test]
    fn a_non_finite_gradient_skips_the_update() {
        let mut opt = AdamW::new(AdamWConfig::default(), &[2]);
        let mut w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
        let g = Tensor::from_vec(vec![f32::NAN, 1.0], &[2]).unwrap();
        let info = opt.step(&mut [&mut w], &[g], 0.1).unwrap();
        assert!(info.skipped && !info.grad_norm.is_finite());
        assert_eq!(w.to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
        assert_eq!((opt.step, opt.m[0][1], opt.v[0][1]), (0, 0.0, 0.0));
    }

    #[test]
    fn mismatched_parameters_gradients_and_state_are_refused() {
        let mut opt = AdamW::new(AdamWConfig::default(), &[2, 3]);
        let mut a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
        let mut b = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
        let g2 = Tensor::from_vec(vec![0.5f32, 0.5], &[2]).unwrap();
        let g3 = Tensor::from_vec(vec![0.5f32; 3], &[3]).unwrap();
        // One gradient short, with the parameters matching the state.
        let err = opt
            .step(&mut [&mut a, &mut b], std::slice::from_ref(&g2), 0.1)
            .unwrap_err();
        assert!(
            err.to_string().contains("2 parameters and 1 gradients"),
            "{err}"
        );
        // A gradient of the wrong length for its parameter and state.
        let err = opt
            .step(&mut [&mut a, &mut b], &[g2.clone(), g2.clone()], 0.1)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("parameter 1 [3] f32 does not match its gradient [2] or state [3]"),
            "{err}"
        );
        // Refused before anything changed: the first parameter and the step count too.
        assert_eq!((a.to_vec::<f32>().unwrap(), opt.step), (vec![1.0, 2.0], 0));
        // A parameter and gradient that agree with each other but not with the state.
        let mut c = Tensor::from_vec(vec![1.0f32; 3], &[3]).unwrap();
        let err = opt
            .step(&mut [&mut c, &mut b], &[g3.clone(), g3], 0.1)
            .unwrap_err();
        assert!(err.to_string().contains("state [2]"), "{err}");
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn clipping_scales_the_global_norm_to_the_limit() {
        let mut opt = AdamW::new(AdamWConfig::default(), &[2]);
        let mut w = Tensor::from_vec(vec![0.0f32, 0.0], &[2]).unwrap();
        let g = Tensor::from_vec(vec![3.0f32, 4.0], &[2]).unwrap();
        let info = opt.step(&mut [&mut w], &[g], 0.1).unwrap();
        assert!((info.grad_norm - 5.0).abs() < 1e-9);
        assert!((info.clip_scale - 0.2).abs() < 1e-9);
        // The first moment holds (1 − β1) · the clipped gradient.
        assert!((opt.m[0][0] - 0.1 * 0.6).abs() < 1e-7 && (opt.m[0][1] - 0.1 * 0.8).abs() < 1e-7);
    }
}
