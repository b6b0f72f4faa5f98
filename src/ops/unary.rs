//! Pointwise math: neg, exp, log, sqrt, rsqrt, powf, silu, sigmoid, and scalar scale / add.
//!
//! `x: [..]` → `[..]`. Backward: `dx = dy · f'(x)`, with `f'` recomputed from the saved input.

use super::{float_dispatch, keep, with_compute_dtype};
use crate::backend::cpu::elementwise;
use crate::dtype::Float;
use crate::error::Result;
use crate::tape::record_recomputable;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug)]
enum Unary {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Powf(f64),
    Silu,
    Sigmoid,
    Scale(f64),
    AddScalar(f64),
}

#[inline]
fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

impl Unary {
    fn name(self) -> &'static str {
        match self {
            Unary::Neg => "neg",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Sqrt => "sqrt",
            Unary::Rsqrt => "rsqrt",
            Unary::Powf(_) => "powf",
            Unary::Silu => "silu",
            Unary::Sigmoid => "sigmoid",
            Unary::Scale(_) => "scale",
            Unary::AddScalar(_) => "add_scalar",
        }
    }

    #[inline]
    fn apply<T: Float>(self, x: T) -> T {
        match self {
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Rsqrt => T::ONE / x.sqrt(),
            Unary::Powf(e) => x.powf(T::from_f64(e)),
            Unary::Silu => x * sigmoid(x),
            Unary::Sigmoid => sigmoid(x),
            Unary::Scale(s) => x * T::from_f64(s),
            Unary::AddScalar(s) => x + T::from_f64(s),
        }
    }

    /// `f'(x)`.
    #[inline]
    fn derivative<T: Float>(self, x: T) -> T {
        let half = T::from_f64(0.5);
        match self {
            Unary::Neg => -T::ONE,
            Unary::Exp => x.exp(),
            Unary::Log => T::ONE / x,
            Unary::Sqrt => half / x.sqrt(),
            Unary::Rsqrt => -half / (x * x.sqrt()),
            Unary::Powf(e) => T::from_f64(e) * x.powf(T::from_f64(e - 1.0)),
            Unary::Silu => {
                let s = sigmoid(x);
                s * (T::ONE + x * (T::ONE - s))
            }
            Unary::Sigmoid => {
                let s = sigmoid(x);
                s * (T::ONE - s)
            }
            Unary::Scale(s) => T::from_f64(s),
            Unary::AddScalar(_) => T::ONE,
        }
    }

    /// The op as `kernels/unary.cu` takes it: its code (by name from `kernels/common.cuh`) and parameter.
    #[cfg(feature = "cuda-backend")]
    fn code(self) -> (i32, f64) {
        use crate::backend::cuda::op_code::unary;
        match self {
            Unary::Neg => (const { unary("NEG") }, 0.0),
            Unary::Exp => (const { unary("EXP") }, 0.0),
            Unary::Log => (const { unary("LOG") }, 0.0),
            Unary::Sqrt => (const { unary("SQRT") }, 0.0),
            Unary::Rsqrt => (const { unary("RSQRT") }, 0.0),
            Unary::Powf(e) => (const { unary("POWF") }, e),
            Unary::Silu => (const { unary("SILU") }, 0.0),
            Unary::Sigmoid => (const { unary("SIGMOID") }, 0.0),
            Unary::Scale(s) => (const { unary("SCALE") }, s),
            Unary::AddScalar(s) => (const { unary("ADD_SCALAR") }, s),
        }
    }

    /// `f(x)` over the elements of `x`, contiguous, on `x`'s device.
    fn forward_kernel(self, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda-backend")]
        if x.is_cuda() {
            let (code, param) = self.code();
            return crate::backend::cuda::unary::forward(x, code, param);
        }
        float_dispatch!(x.dtype(), T, {
            let values = elementwise::unary(x.data::<T>(), &x.layout, |v: T| self.apply(v));
            Tensor::from_vec(values, x.shape())
        })
    }

    /// `g · f'(x)`, contiguous, on `x`'s device.
    fn backward_kernel(self, g: &Tensor, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda-backend")]
        if x.is_cuda() {
            let (code, param) = self.code();
            return crate::backend::cuda::unary::backward(g, x, code, param);
        }
        float_dispatch!(x.dtype(), T, {
            let values = elementwise::binary(
                g.data::<T>(),
                &g.layout,
                x.data::<T>(),
                &x.layout,
                |g: T, x: T| g * self.derivative(x),
            );
            Tensor::from_vec(values, x.shape())
        })
    }

    /// Whether the derivative is a constant (nothing needs saving).
    fn constant_derivative(self) -> bool {
        matches!(self, Unary::Neg | Unary::Scale(_) | Unary::AddScalar(_))
    }
}

impl Tensor {
    /// `-x`.
    pub fn neg(&self) -> Result<Tensor> {
        unary(Unary::Neg, self)
    }
    /// `eˣ`.
    pub fn exp(&self) -> Result<Tensor> {
        unary(Unary::Exp, self)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        unary(Unary::Log, self)
    }
    /// Square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        unary(Unary::Sqrt, self)
    }
    /// `1 / √x`.
    pub fn rsqrt(&self) -> Result<Tensor> {
        unary(Unary::Rsqrt, self)
    }
    /// `xᵉ`.
    pub fn powf(&self, exponent: f64) -> Result<Tensor> {
        unary(Unary::Powf(exponent), self)
    }
    /// `x · σ(x)`.
    pub fn silu(&self) -> Result<Tensor> {
        unary(Unary::Silu, self)
    }
    /// `σ(x) = 1 / (1 + e⁻ˣ)`.
    pub fn sigmoid(&self) -> Result<Tensor> {
        unary(Unary::Sigmoid, self)
    }
    /// `x · s`.
    pub fn scale(&self, s: f64) -> Result<Tensor> {
        unary(Unary::Scale(s), self)
    }
    /// `x + s`.
    pub fn add_scalar(&self, s: f64) -> Result<Tensor> {
        unary(Unary::AddScalar(s), self)
    }
}

fn unary(op: Unary, x: &Tensor) -> Result<Tensor> {
    with_compute_dtype(op.name(), &[x], |xs| {
        let x = &xs[0];
        let out = op.forward_kernel(x)?;
        let saved = (!op.constant_derivative())
            .then(|| keep(&[x], [x]))
            .flatten();
        let forward = move |xs: &[Tensor]| unary(op, &xs[0]);
        record_recomputable(op.name(), &[x], out, forward, move |g, _| {
            let saved = match saved {
                Some([x]) => Some(x.get()?),
                None => None,
            };
            let dx = match saved {
                None if matches!(op, Unary::AddScalar(_)) => g.clone(),
                None => g.scale(op.derivative(0.0f64))?,
                Some(x) => op.backward_kernel(g, &x)?,
            };
            Ok(vec![Some(dx)])
        })
    })
}
