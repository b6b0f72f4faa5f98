//! Rotary position embeddings in the Hugging Face rotate-half convention.
//!
//! `x: [B, T, H, D]` → `[B, T, H, D]`: each head vector is split into halves `[x1, x2]` and rotated by the
//! angle `pos · θ^(−2i/D)`: `[x1·cos − x2·sin, x2·cos + x1·sin]`, with `pos = start_pos + t`.
//! Backward is the inverse rotation (`sin → −sin`) of the gradient; nothing is saved.
//! `rope_interleaved_to_half` converts q/k projection weights from the interleaved-pairs convention of Meta and
//! GGUF checkpoints to this one.

use super::with_precision;
use crate::backend::RopeTables;
use crate::error::{Error, Result};
use crate::tape::{record_recomputable, Rerun};
use crate::tensor::Tensor;
use std::sync::Arc;

/// Precomputed cos/sin tables, `[max_len, D/2]` each, shared cheaply.
#[derive(Clone, Debug)]
pub struct Rope {
    head_dim: usize,
    max_len: usize,
    cos: Arc<Vec<f64>>,
    sin: Arc<Vec<f64>>,
}

impl Rope {
    /// Tables for head dimension `head_dim` (even) and positions `0..max_len`, with base `theta`.
    pub fn new(head_dim: usize, max_len: usize, theta: f64) -> Result<Rope> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) || theta <= 0.0 {
            return Err(Error::invalid(
                "rope",
                format!("head_dim {head_dim} must be even and positive and theta {theta} positive"),
            ));
        }
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_len * half);
        let mut sin = Vec::with_capacity(max_len * half);
        for pos in 0..max_len {
            for i in 0..half {
                let freq = theta.powf(-2.0 * i as f64 / head_dim as f64);
                let angle = pos as f64 * freq;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Rope {
            head_dim,
            max_len,
            cos: Arc::new(cos),
            sin: Arc::new(sin),
        })
    }

    /// The longest sequence the tables cover.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Every head vector of contiguous `x: [B, T, H, D]` rotated by `sign · angle`, on `x`'s device.
    fn rotate_tensor(&self, x: &Tensor, start_pos: usize, sign: f64) -> Result<Tensor> {
        let tables = RopeTables {
            cos: &self.cos,
            sin: &self.sin,
        };
        let out = x.storage.rope(&x.layout, tables, start_pos, sign)?;
        Ok(Tensor::from_storage(out, x.shape()))
    }

    fn check(&self, op: &'static str, x: &Tensor, start_pos: usize) -> Result<()> {
        if x.ndim() != 4 || x.shape()[3] != self.head_dim {
            return Err(Error::shape(
                op,
                format!("input {:?} is not [B, T, H, {}]", x.shape(), self.head_dim),
            ));
        }
        if start_pos + x.shape()[1] > self.max_len {
            return Err(Error::Index {
                op,
                msg: format!(
                    "positions up to {} exceed the table length {}",
                    start_pos + x.shape()[1],
                    self.max_len
                ),
            });
        }
        Ok(())
    }
}

impl Tensor {
    /// Applies rotary embeddings to `self: [B, T, H, D]`, positions starting at `start_pos`.
    pub fn rope(&self, rope: &Rope, start_pos: usize) -> Result<Tensor> {
        rope.check("rope", self, start_pos)?;
        with_precision("rope", &[self], |xs| {
            let x = xs[0].contiguous()?;
            let y = rope.rotate_tensor(&x, start_pos, 1.0)?;
            let (table, rope) = (rope.clone(), rope.clone());
            let forward = move |xs: &[Tensor]| xs[0].rope(&table, start_pos);
            record_recomputable("rope", Rerun::Cheap, &[&x], y, forward, move |g, _| {
                let g = g.contiguous()?;
                let dx = rope.rotate_tensor(&g, start_pos, -1.0)?;
                Ok(vec![Some(dx)])
            })
        })
    }
}

/// The composed rotate-half reference (for tests): `x1·cos − x2·sin` and `x2·cos + x1·sin` from primitive ops.
pub fn rope_reference(x: &Tensor, rope: &Rope, start_pos: usize) -> Result<Tensor> {
    rope.check("rope", x, start_pos)?;
    let (t_len, half) = (x.shape()[1], rope.head_dim / 2);
    let span = start_pos * half..(start_pos + t_len) * half;
    let table = |v: &[f64]| Tensor::from_f64_values(&v[span.clone()], &[t_len, 1, half], x.dtype());
    let (cos, sin) = (table(&rope.cos), table(&rope.sin));
    let x1 = x.narrow(3, 0, half)?;
    let x2 = x.narrow(3, half, half)?;
    let first = x1.mul(&cos)?.sub(&x2.mul(&sin)?)?;
    let second = x2.mul(&cos)?.add(&x1.mul(&sin)?)?;
    Tensor::cat(&[first, second], 3)
}

/// Reorders the rows of a q or k projection weight `[H · D, C]` from interleaved rotary pairs
/// (`(x0, x1), (x2, x3), …`: Meta and GGUF checkpoints) to the rotate-half convention used here.
pub fn rope_interleaved_to_half(weight: &Tensor, n_heads: usize) -> Result<Tensor> {
    let (rows, cols) = match weight.shape() {
        [r, c] => (*r, *c),
        s => {
            return Err(Error::shape(
                "rope_interleaved_to_half",
                format!("weight {s:?} is not 2-D"),
            ))
        }
    };
    if n_heads == 0 || rows % (2 * n_heads) != 0 {
        return Err(Error::shape(
            "rope_interleaved_to_half",
            format!("{rows} rows do not split into {n_heads} heads of even size"),
        ));
    }
    let half = rows / n_heads / 2;
    weight
        .reshape(&[n_heads, half, 2, cols])?
        .permute(&[0, 2, 1, 3])?
        .reshape(&[rows, cols])
}
