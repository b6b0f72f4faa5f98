//! Pointwise math: neg, exp, log, sqrt, rsqrt, powf, silu, sigmoid, and scalar scale / add.
//!
//! `x: [..]` → `[..]`. Backward: `dx = dy · f'(x)`, with `f'` recomputed from the saved input.

use super::{keep, with_precision};
use crate::backend::{op_code::unary as code, Pointwise};
use crate::dtype::Float;
use crate::error::Result;
use crate::tape::{record_recomputable, Rerun};
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

    /// Whether the derivative is a constant (nothing needs saving).
    fn constant_derivative(self) -> bool {
        matches!(self, Unary::Neg | Unary::Scale(_) | Unary::AddScalar(_))
    }
}

impl Pointwise for Unary {
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

    /// Codes by name from `TG_UNARY_OPS` in `kernels/unary.cu`.
    fn code(self) -> (i32, f64) {
        match self {
            Unary::Neg => (const { code("NEG") }, 0.0),
            Unary::Exp => (const { code("EXP") }, 0.0),
            Unary::Log => (const { code("LOG") }, 0.0),
            Unary::Sqrt => (const { code("SQRT") }, 0.0),
            Unary::Rsqrt => (const { code("RSQRT") }, 0.0),
            Unary::Powf(e) => (const { code("POWF") }, e),
            Unary::Silu => (const { code("SILU") }, 0.0),
            Unary::Sigmoid => (const { code("SIGMOID") }, 0.0),
            Unary::Scale(s) => (const { code("SCALE") }, s),
            Unary::AddScalar(s) => (const { code("ADD_SCALAR") }, s),
        }
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
    with_precision(op.name(), &[x], |xs| {
        let x = &xs[0];
        let out = Tensor::from_storage(x.storage.map(&x.layout, op)?, x.shape());
        let saved = (!op.constant_derivative())
            .then(|| keep(&[x], [x]))
            .flatten();
        let forward = move |xs: &[Tensor]| unary(op, &xs[0]);
        record_recomputable(op.name(), Rerun::Cheap, &[x], out, forward, move |g, _| {
            let saved = match saved {
                Some([x]) => Some(x.get()?),
                None => None,
            };
            let dx = match saved {
                None if matches!(op, Unary::AddScalar(_)) => g.clone(),
                None => g.scale(op.derivative(0.0f64))?,
                Some(x) => Tensor::from_storage(
                    g.storage
                        .map_backward(&g.layout, &x.storage, &x.layout, op)?,
                    x.shape(),
                ),
            };
            Ok(vec![Some(dx)])
        })
    })
}
