//! add, sub, mul, div with numpy broadcasting.
//!
//! `a: [..]`, `b: [..]` → `[broadcast(a, b)]`. Backward: each gradient is summed over the dims its operand was
//! broadcast along (`sum_to_shape`).

use super::{float_dispatch, keep, with_compute_dtype};
use crate::backend::cpu::elementwise;
use crate::error::Result;
use crate::shape::{broadcast_shapes, Layout};
use crate::tape::record_recomputable;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug)]
enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

/// The layout of `layout` broadcast to `shape` (new leading dims and expanded size-1 dims get stride 0).
pub(crate) fn broadcast_layout(layout: &Layout, shape: &[usize]) -> Layout {
    let extra = shape.len() - layout.shape.len();
    let mut strides = vec![0; shape.len()];
    for (d, s) in strides.iter_mut().enumerate().skip(extra) {
        let src = d - extra;
        *s = if layout.shape[src] == shape[d] {
            layout.strides[src]
        } else {
            0
        };
    }
    Layout {
        shape: shape.to_vec(),
        strides,
        offset: layout.offset,
    }
}

/// `a (op) b` of `shape`, reading the operands through `la`/`lb` (broadcast to `shape`), on their device.
fn binary_kernel(
    op: BinaryOp,
    a: &Tensor,
    la: &Layout,
    b: &Tensor,
    lb: &Layout,
    shape: &[usize],
) -> Result<Tensor> {
    #[cfg(feature = "cuda-backend")]
    if a.is_cuda() {
        use crate::backend::cuda::op_code::binary;
        // Codes by name from `kernels/common.cuh`.
        let code = match op {
            BinaryOp::Add => const { binary("ADD") },
            BinaryOp::Sub => const { binary("SUB") },
            BinaryOp::Mul => const { binary("MUL") },
            BinaryOp::Div => const { binary("DIV") },
        };
        return crate::backend::cuda::binary::forward(a, la, b, lb, shape, code);
    }
    float_dispatch!(a.dtype(), T, {
        let (da, db) = (a.data::<T>(), b.data::<T>());
        let values = match op {
            BinaryOp::Add => elementwise::binary(da, la, db, lb, |x, y| x + y),
            BinaryOp::Sub => elementwise::binary(da, la, db, lb, |x, y| x - y),
            BinaryOp::Mul => elementwise::binary(da, la, db, lb, |x, y| x * y),
            BinaryOp::Div => elementwise::binary(da, la, db, lb, |x, y| x / y),
        };
        Tensor::from_vec(values, shape)
    })
}

impl Tensor {
    /// `self + rhs`, broadcast.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(BinaryOp::Add, self, rhs)
    }

    /// `self - rhs`, broadcast.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(BinaryOp::Sub, self, rhs)
    }

    /// `self * rhs` elementwise, broadcast.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(BinaryOp::Mul, self, rhs)
    }

    /// `self / rhs` elementwise, broadcast.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(BinaryOp::Div, self, rhs)
    }
}

fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    with_compute_dtype(op.name(), &[a, b], |xs| {
        let (a, b) = (&xs[0], &xs[1]);
        let shape = broadcast_shapes(op.name(), a.shape(), b.shape())?;
        let la = broadcast_layout(&a.layout, &shape);
        let lb = broadcast_layout(&b.layout, &shape);
        let out = binary_kernel(op, a, &la, b, &lb, &shape)?;
        let saved = matches!(op, BinaryOp::Mul | BinaryOp::Div)
            .then(|| keep(&[a, b], [a, b]))
            .flatten();
        let (shape_a, shape_b) = (a.shape().to_vec(), b.shape().to_vec());
        let forward = move |xs: &[Tensor]| binary(op, &xs[0], &xs[1]);
        record_recomputable(op.name(), &[a, b], out, forward, move |g, needs| {
            let (ga, gb) = match op {
                BinaryOp::Add => (Some(g.clone()), Some(g.clone())),
                BinaryOp::Sub => (Some(g.clone()), needs[1].then(|| g.neg()).transpose()?),
                BinaryOp::Mul => {
                    let [a, b] = saved.expect("saved when recorded");
                    let (a, b) = (a.get()?, b.get()?);
                    (
                        needs[0].then(|| g.mul(&b)).transpose()?,
                        needs[1].then(|| g.mul(&a)).transpose()?,
                    )
                }
                BinaryOp::Div => {
                    let [a, b] = saved.expect("saved when recorded");
                    let (a, b) = (a.get()?, b.get()?);
                    let ga = g.div(&b)?;
                    let gb = if needs[1] {
                        Some(ga.mul(&a)?.div(&b)?.neg()?)
                    } else {
                        None
                    };
                    (Some(ga), gb)
                }
            };
            let ga = if needs[0] {
                ga.map(|g| g.sum_to_shape(&shape_a)).transpose()?
            } else {
                None
            };
            let gb = if needs[1] {
                gb.map(|g| g.sum_to_shape(&shape_b)).transpose()?
            } else {
                None
            };
            Ok(vec![ga, gb])
        })
    })
}
