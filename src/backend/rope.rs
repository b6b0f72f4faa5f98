//! Rotary embeddings by device: `Storage::rope` rotates every head vector by its position's angle (the
//! rotate-half convention; `ops::rope` holds the tables and the tape). A row loop here, `kernels/rope.cu` on a
//! GPU (with the tables uploaded once per device).
//!
//! Shapes: a contiguous `[B, T, H, D]` in and out; the tables are `[max_len, D/2]`.

use super::cpu::elementwise::for_each_row;
use super::cpu::recycle;
use super::{float_dispatch, Storage, StorageElement};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::shape::Layout;
use std::sync::Arc;

/// The cos and sin tables, `[max_len, D/2]` each, of angle `pos · θ^(−2i/D)`.
#[derive(Clone, Copy)]
pub struct RopeTables<'a> {
    pub cos: &'a Arc<Vec<f64>>,
    pub sin: &'a Arc<Vec<f64>>,
}

/// Rotates every head vector of contiguous `x: [B, T, H, D]` by `sign · angle`.
fn rotate<T: Float + StorageElement>(
    x: &[T],
    shape: &[usize],
    tables: RopeTables,
    start_pos: usize,
    sign: f64,
) -> Vec<T> {
    let (t_len, heads, d) = (shape[1], shape[2], shape[3]);
    let half = d / 2;
    let mut out = recycle::buffer::<T>(x.len());
    let flat = [x.len() / (heads * d), heads * d];
    for_each_row(
        &mut out,
        &flat,
        #[inline(always)]
        |r, row| {
            let pos = start_pos + r % t_len;
            let cos = &tables.cos[pos * half..(pos + 1) * half];
            let sin = &tables.sin[pos * half..(pos + 1) * half];
            let src = &x[r * heads * d..(r + 1) * heads * d];
            for (o, s) in row.chunks_mut(d).zip(src.chunks(d)) {
                for i in 0..half {
                    let (c, sn) = (T::from_f64(cos[i]), T::from_f64(sign * sin[i]));
                    let (x1, x2) = (s[i], s[i + half]);
                    o[i] = x1 * c - x2 * sn;
                    o[i + half] = x2 * c + x1 * sn;
                }
            }
        },
    );
    out
}

impl Storage {
    /// Every head vector of `self: [B, T, H, D]` (contiguous view `layout`) rotated by `sign · angle` of
    /// position `start_pos + t`, on `self`'s device.
    pub fn rope(
        &self,
        layout: &Layout,
        tables: RopeTables,
        start_pos: usize,
        sign: f64,
    ) -> Result<Storage> {
        let shape = &layout.shape;
        let half = shape.get(3).map_or(0, |d| d / 2);
        let t_len = shape.get(1).copied().unwrap_or(0);
        if shape.len() != 4 || (start_pos + t_len) * half > tables.cos.len().min(tables.sin.len()) {
            return Err(Error::Index {
                op: "rope",
                msg: format!(
                    "input {shape:?} from position {start_pos} is not covered by tables of {} entries",
                    tables.cos.len()
                ),
            });
        }
        if let Storage::Cuda(x) = self {
            let out =
                super::cuda::rope::rotate(x, layout, tables.cos, tables.sin, start_pos, sign)?;
            return Ok(Storage::Cuda(out));
        }
        float_dispatch!(self.dtype(), T, {
            let x = self.host_contiguous::<T>(layout);
            Ok(T::wrap(rotate(x, shape, tables, start_pos, sign)))
        })
    }
}
