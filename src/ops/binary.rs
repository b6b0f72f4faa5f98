//! add, sub, mul, div with numpy broadcasting.
//!
//! `a: [..]`, `b: [..]` → `[broadcast(a, b)]`. Backward: each gradient is summed over the dims its operand was
//! broadcast along (`sum_to_shape`).

use super::{keep, with_precision};
use crate::backend::Arith;
use crate::error::Result;
use crate::shape::broadcast_shapes;
use crate::tape::{record_recomputable, Rerun};
use crate::tensor::Tensor;

/// The op's name (for errors and the tape).
fn name(op: Arith) -> &'static str {
    match op {
        Arith::Add => "add",
        Arith::Sub => "sub",
        Arith::Mul => "mul",
        Arith::Div => "div",
    }
}

impl Tensor {
    /// `self + rhs`, broadcast.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(Arith::Add, self, rhs)
    }

    /// `self - rhs`, broadcast.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(Arith::Sub, self, rhs)
    }

    /// `self * rhs` elementwise, broadcast.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(Arith::Mul, self, rhs)
    }

    /// `self / rhs` elementwise, broadcast.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(Arith::Div, self, rhs)
    }
}

fn binary(op: Arith, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    with_precision(name(op), &[a, b], |xs| {
        let (a, b) = (&xs[0], &xs[1]);
        let shape = broadcast_shapes(name(op), a.shape(), b.shape())?;
        let la = a.layout.broadcast_to(&shape);
        let lb = b.layout.broadcast_to(&shape);
        let out = Tensor::from_storage(a.storage.zip(&la, &b.storage, &lb, op)?, &shape);
        let saved = matches!(op, Arith::Mul | Arith::Div)
            .then(|| keep(&[a, b], [a, b]))
            .flatten();
        let (shape_a, shape_b) = (a.shape().to_vec(), b.shape().to_vec());
        let forward = move |xs: &[Tensor]| binary(op, &xs[0], &xs[1]);
        record_recomputable(
            name(op),
            Rerun::Cheap,
            &[a, b],
            out,
            forward,
            move |g, needs| {
                let (ga, gb) = match op {
                    Arith::Add => (Some(g.clone()), Some(g.clone())),
                    Arith::Sub => (Some(g.clone()), needs[1].then(|| g.neg()).transpose()?),
                    Arith::Mul => {
                        let [a, b] = saved.expect("saved when recorded");
                        let (a, b) = (a.get()?, b.get()?);
                        (
                            needs[0].then(|| g.mul(&b)).transpose()?,
                            needs[1].then(|| g.mul(&a)).transpose()?,
                        )
                    }
                    Arith::Div => {
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
            },
        )
    })
}
