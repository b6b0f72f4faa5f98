//! Launchers of `kernels/adamw.cu`: the sum of squares behind the global gradient norm, and the fused update.

use super::launch::dense;
use super::{config, Arg, DeviceBuffer};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;

/// A device buffer read through its layout.
pub(crate) type View<'a> = (&'a DeviceBuffer, &'a Layout);

const OP: &str = "adamw";
/// Elements per partial sum of the gradient norm.
const CHUNK: usize = 1 << 16;

fn f32_only((buffer, layout): View) -> Result<()> {
    if buffer.dtype() == DType::F32 && layout.is_contiguous() {
        Ok(())
    } else {
        Err(Error::DType {
            op: OP,
            msg: format!(
                "GPU optimizer tensors must be contiguous f32, got {} {:?}",
                buffer.dtype(),
                layout.shape
            ),
        })
    }
}

/// `Σ x²` of a contiguous f32 view: fixed per-block partials, added in order in f64.
pub(crate) fn sum_of_squares(x: View) -> Result<f64> {
    f32_only(x)?;
    let n = x.1.numel();
    if n == 0 {
        return Ok(0.0);
    }
    let gpu = x.0.gpu().clone();
    let blocks = n.div_ceil(CHUNK);
    let partial = gpu.alloc(DType::F32, blocks)?;
    gpu.launch(
        "adamw",
        "sumsq_f32",
        config((blocks as u32, 1, 1), 256, 0),
        &[
            dense(OP, x)?,
            Arg::I64(n as i64),
            Arg::I64(CHUNK as i64),
            Arg::Ptr(partial.ptr(0)),
        ],
    )?;
    let bytes = partial.download()?;
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
    Ok(values.iter().map(|&v| v as f64).sum())
}

/// The AdamW constants of one step (see `kernels/adamw.cu`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Update {
    pub beta1: f32,
    pub beta2: f32,
    pub step_size: f32,
    pub inv_sqrt_bias2: f32,
    pub eps: f32,
    pub scale: f32,
    pub decay: f32,
}

/// Updates `p`, `m` and `v` in place from `g` (contiguous f32 views). The caller owns `p`, `m`, `v` uniquely.
pub(crate) fn update(p: View, g: View, m: View, v: View, u: Update) -> Result<()> {
    for t in [p, g, m, v] {
        f32_only(t)?;
    }
    let n = p.1.numel();
    if [g, m, v].iter().any(|t| t.1.numel() != n) {
        return Err(Error::shape(
            OP,
            format!(
                "parameter {:?} does not match its gradient or state",
                p.1.shape
            ),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let gpu = p.0.gpu().clone();
    let blocks = n.div_ceil(256 * 4).clamp(1, 65_535) as u32;
    gpu.launch(
        "adamw",
        "adamw_f32",
        config((blocks, 1, 1), 256, 0),
        &[
            dense(OP, p)?,
            dense(OP, g)?,
            dense(OP, m)?,
            dense(OP, v)?,
            Arg::I64(n as i64),
            Arg::F32(u.beta1),
            Arg::F32(u.beta2),
            Arg::F32(u.step_size),
            Arg::F32(u.inv_sqrt_bias2),
            Arg::F32(u.eps),
            Arg::F32(u.scale),
            Arg::F32(u.decay),
        ],
    )
}
