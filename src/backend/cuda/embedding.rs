//! Launchers of `kernels/embedding.cu`: the gather and its deterministic scatter-add backward.
//!
//! The backward uses no atomics: the host (which has the ids) groups the positions of each distinct id, and one
//! thread per (id, column) sums that id's gradient rows in ascending position order, from zero: the CPU's order,
//! so the weight gradient is deterministic and bit-identical to the CPU's.

use super::copy::fill;
use super::launch::{blocks, float_suffix, grid_1d, i32_of, i64_of, upload_u32, THREADS};
use super::{config, Arg, DeviceBuffer};
use crate::error::{Error, Result};
use crate::shape::Layout;

/// Rows `ids` of the `[V, C]` table `w` read through the contiguous `layout` (ids checked < V by the caller):
/// `[ids.len(), C]`.
pub(crate) fn forward(w: &DeviceBuffer, layout: &Layout, ids: &[u32]) -> Result<DeviceBuffer> {
    if !layout.is_contiguous() || layout.shape.len() != 2 {
        return Err(Error::shape(
            "embedding",
            format!(
                "internal: weight {:?} is not a contiguous [V, C]",
                layout.shape
            ),
        ));
    }
    let t = float_suffix("embedding", w.dtype())?;
    let dim = layout.shape[1];
    let n = ids.len() * dim;
    let wb = w;
    let out = wb.gpu().alloc(w.dtype(), n)?;
    if n > 0 {
        let ids_dev = upload_u32(wb.gpu(), ids)?;
        wb.gpu().launch(
            "embedding",
            &format!("embedding_fwd_{t}"),
            config(grid_1d(n), THREADS, 0),
            &[
                Arg::Ptr(wb.ptr(layout.offset)),
                Arg::Ptr(ids_dev.ptr(0)),
                Arg::Ptr(out.ptr(0)),
                Arg::I64(i64_of("embedding", ids.len())?),
                Arg::I32(i32_of("embedding", "a row of", dim)?),
            ],
        )?;
    }
    Ok(out)
}

/// The weight gradient `[vocab, dim]`: row `v` is the sum of the rows of `g` (read through the contiguous
/// `layout`, `[ids.len(), dim]` in any shape) at the positions where `ids` holds `v`.
pub(crate) fn backward(
    g: &DeviceBuffer,
    layout: &Layout,
    ids: &[u32],
    vocab: usize,
    dim: usize,
) -> Result<DeviceBuffer> {
    let gb = g;
    let t = float_suffix("embedding backward", g.dtype())?;
    if !layout.is_contiguous() || layout.numel() != ids.len() * dim {
        return Err(Error::shape(
            "embedding backward",
            format!(
                "internal: gradient {:?} is not {} contiguous rows of {dim}",
                layout.shape,
                ids.len()
            ),
        ));
    }
    let dw = fill(gb.gpu(), g.dtype(), vocab * dim, 0.0)?;
    if !ids.is_empty() && dim > 0 {
        // Positions grouped by id (a stable sort: ascending positions within each id).
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_by_key(|&p| ids[p as usize]);
        let mut uniq: Vec<u32> = Vec::new();
        let mut starts: Vec<u32> = Vec::new();
        for (k, &p) in order.iter().enumerate() {
            let id = ids[p as usize];
            if uniq.last() != Some(&id) {
                uniq.push(id);
                starts.push(k as u32);
            }
        }
        starts.push(order.len() as u32);
        u32::try_from(ids.len()).map_err(|_| {
            Error::shape(
                "embedding backward",
                format!("{} ids exceed u32", ids.len()),
            )
        })?;
        let gpu = gb.gpu();
        let (uniq_d, starts_d, order_d) = (
            upload_u32(gpu, &uniq)?,
            upload_u32(gpu, &starts)?,
            upload_u32(gpu, &order)?,
        );
        let col_blocks = u32::try_from(dim.div_ceil(THREADS as usize))
            .ok()
            .filter(|&b| b <= 65535)
            .ok_or_else(|| {
                Error::shape(
                    "embedding backward",
                    format!("rows of {dim} exceed the kernel's grid"),
                )
            })?;
        gpu.launch(
            "embedding",
            &format!("embedding_bwd_{t}"),
            config(
                (
                    blocks("embedding backward", "distinct ids", uniq.len())?,
                    col_blocks,
                    1,
                ),
                THREADS,
                0,
            ),
            &[
                Arg::Ptr(gb.ptr(layout.offset)),
                Arg::Ptr(uniq_d.ptr(0)),
                Arg::Ptr(starts_d.ptr(0)),
                Arg::Ptr(order_d.ptr(0)),
                Arg::Ptr(dw.ptr(0)),
                Arg::I32(i32_of("embedding backward", "distinct ids", uniq.len())?),
                Arg::I32(i32_of("embedding backward", "a row of", dim)?),
            ],
        )?;
    }
    Ok(dw)
}
