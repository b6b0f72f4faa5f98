//! The pointwise kernels by device: `Storage::map` (a unary function), `Storage::map_backward` (`g · f'(x)`)
//! and `Storage::zip` (a broadcast binary). The op files say what to compute; this is where the storage's
//! device picks the kernel: a strided loop on the host (`cpu::elementwise`), or `kernels/unary.cu` and
//! `kernels/binary.cu` on a GPU.
//!
//! Shapes: inputs are read through their layouts (views are never copied first); outputs are contiguous, of the
//! layouts' shape.

use super::cpu::elementwise;
use super::{float_dispatch, op_code, Storage, StorageElement};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::shape::Layout;

/// A pointwise function as the kernels take it: its math, for the host loops, and its code in
/// `TG_UNARY_OPS` in `kernels/unary.cu` with one parameter.
pub trait Pointwise: Copy + Send + Sync {
    /// `f(x)`.
    fn apply<T: Float>(self, x: T) -> T;
    /// `f'(x)`.
    fn derivative<T: Float>(self, x: T) -> T;
    /// The kernel's op code (`const { op_code::unary("NAME") }`) and parameter.
    fn code(self) -> (i32, f64);
}

/// The four broadcast binaries of `kernels/binary.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

impl Arith {
    /// The kernel's op code, by name from `TG_BINARY_OPS` in `kernels/binary.cu`.
    pub fn code(self) -> i32 {
        match self {
            Arith::Add => const { op_code::binary("ADD") },
            Arith::Sub => const { op_code::binary("SUB") },
            Arith::Mul => const { op_code::binary("MUL") },
            Arith::Div => const { op_code::binary("DIV") },
        }
    }
}

/// An error naming `op` unless `a` and `b` live on one device.
fn same_device(op: &'static str, a: &Storage, b: &Storage) -> Result<()> {
    if a.device() == b.device() {
        return Ok(());
    }
    Err(Error::Device {
        op,
        msg: format!(
            "operands are on {} and {}; move one with to_device first",
            a.device(),
            b.device()
        ),
    })
}

impl Storage {
    /// `f(x)` over the elements of `self` read through `layout`, contiguous, on `self`'s device.
    pub fn map<F: Pointwise>(&self, layout: &Layout, f: F) -> Result<Storage> {
        if let Storage::Cuda(x) = self {
            let (code, param) = f.code();
            return Ok(Storage::Cuda(super::cuda::unary::forward(
                x, layout, code, param,
            )?));
        }
        float_dispatch!(self.dtype(), T, {
            let x = self.host::<T>();
            Ok(T::wrap(elementwise::unary(x, layout, |v: T| f.apply(v))))
        })
    }

    /// `g · f'(x)` with `self` the gradient `g` read through `lg` and `x` through `lx` (one shape), contiguous.
    pub fn map_backward<F: Pointwise>(
        &self,
        lg: &Layout,
        x: &Storage,
        lx: &Layout,
        f: F,
    ) -> Result<Storage> {
        same_device("unary backward", self, x)?;
        if let (Storage::Cuda(g), Storage::Cuda(x)) = (self, x) {
            let (code, param) = f.code();
            return Ok(Storage::Cuda(super::cuda::unary::backward(
                g, lg, x, lx, code, param,
            )?));
        }
        float_dispatch!(self.dtype(), T, {
            let (g, x) = (self.host::<T>(), x.host::<T>());
            let values = elementwise::binary(g, lg, x, lx, |g: T, x: T| g * f.derivative(x));
            Ok(T::wrap(values))
        })
    }

    /// `self (op) b` over `la`'s shape, reading `self` through `la` and `b` through `lb` (layouts already
    /// broadcast to one shape), contiguous, on their device.
    pub fn zip(&self, la: &Layout, b: &Storage, lb: &Layout, op: Arith) -> Result<Storage> {
        same_device("binary", self, b)?;
        if let (Storage::Cuda(a), Storage::Cuda(b)) = (self, b) {
            return Ok(Storage::Cuda(super::cuda::binary::forward(
                a,
                la,
                b,
                lb,
                op.code(),
            )?));
        }
        float_dispatch!(self.dtype(), T, {
            let (a, b) = (self.host::<T>(), b.host::<T>());
            let values = match op {
                Arith::Add => elementwise::binary(a, la, b, lb, |x, y| x + y),
                Arith::Sub => elementwise::binary(a, la, b, lb, |x, y| x - y),
                Arith::Mul => elementwise::binary(a, la, b, lb, |x, y| x * y),
                Arith::Div => elementwise::binary(a, la, b, lb, |x, y| x / y),
            };
            Ok(T::wrap(values))
        })
    }
}
