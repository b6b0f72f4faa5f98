//! Launchers of the fused kernels (`kernels/attention.cu`, `rmsnorm.cu`, `swiglu.cu`; their headers give the
//! parameter lists and launch configurations used here). Each takes and returns device tensors; the ops in
//! `ops/` record them on the tape.

use super::{config, Arg, DeviceBuffer, Gpu};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::Arc;

/// The device buffer of `t` and its GPU, or an error naming `op`.
pub(crate) fn buffer<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a DeviceBuffer> {
    t.cuda_buffer().ok_or_else(|| Error::Device {
        op,
        msg: format!("a tensor on {} reached a GPU kernel", t.device()),
    })
}

/// The device address of `t`'s first element.
pub(crate) fn ptr(op: &'static str, t: &Tensor) -> Result<Arg> {
    Ok(Arg::Ptr(buffer(op, t)?.ptr(t.layout.offset)))
}

/// The kernel-name suffix of a storage dtype these kernels support.
pub(crate) fn suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        other => Err(Error::DType {
            op,
            msg: format!("{other} is not supported on the GPU here (f32 or bf16)"),
        }),
    }
}

fn gpu_of(op: &'static str, t: &Tensor) -> Result<Arc<Gpu>> {
    Ok(buffer(op, t)?.gpu().clone())
}

fn int(op: &'static str, v: usize) -> Result<Arg> {
    i32::try_from(v).map(Arg::I32).map_err(|_| Error::Device {
        op,
        msg: format!("size {v} exceeds the kernels' 32-bit indexing"),
    })
}

/// Threads per row for the row kernels: enough 16-byte vectors per thread, a multiple of 32, at most 1024.
fn row_threads(cols: usize, dtype: DType) -> u32 {
    let per_vector = 16 / dtype.size_in_bytes();
    (cols.div_ceil(per_vector).div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// RMSNorm of contiguous `x: [rows, cols]` with gain `w: [cols]` → `(y, rstd: [rows] f32)`.
pub(crate) fn rms_norm_forward(x: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rms_norm";
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let cols = *x.shape().last().unwrap_or(&1);
    let rows = x.numel() / cols.max(1);
    let (gpu, dtype) = (gpu_of(OP, &x)?, x.dtype());
    let y = gpu.alloc(dtype, x.numel())?;
    let rstd = gpu.alloc(DType::F32, rows)?;
    let name = format!("rmsnorm_fwd_{}", suffix(OP, dtype)?);
    let smem = (cols * dtype.size_in_bytes()) as u32;
    let args = [
        ptr(OP, &x)?,
        ptr(OP, &w)?,
        Arg::Ptr(y.ptr(0)),
        Arg::Ptr(rstd.ptr(0)),
        int(OP, rows)?,
        int(OP, cols)?,
        Arg::F32(eps as f32),
    ];
    if rows > 0 {
        gpu.launch(
            "rmsnorm",
            &name,
            config((rows as u32, 1, 1), row_threads(cols, dtype), smem),
            &args,
        )?;
    }
    Ok((
        Tensor::from_device(y, x.shape()),
        Tensor::from_device(rstd, &[rows]),
    ))
}

/// The RMSNorm backward: `(dx, dw)` from `x`, `w`, the kept `rstd` and `dy`.
pub(crate) fn rms_norm_backward(
    x: &Tensor,
    w: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rms_norm backward";
    let (x, w, rstd, dy) = (
        x.contiguous()?,
        w.contiguous()?,
        rstd.contiguous()?,
        dy.contiguous()?,
    );
    let cols = *x.shape().last().unwrap_or(&1);
    let rows = x.numel() / cols.max(1);
    let (gpu, dtype) = (gpu_of(OP, &x)?, x.dtype());
    let t = suffix(OP, dtype)?;
    let dx = gpu.alloc(dtype, x.numel())?;
    let dw = gpu.alloc(dtype, cols)?;
    // A few row ranges per multiprocessor; their partial weight gradients are summed in order afterwards.
    let blocks = rows.clamp(1, 512);
    let partial = gpu.alloc(DType::F32, blocks * cols)?;
    if rows > 0 {
        let smem = (cols * (2 * dtype.size_in_bytes() + 4)) as u32;
        gpu.launch(
            "rmsnorm",
            &format!("rmsnorm_bwd_{t}"),
            config((blocks as u32, 1, 1), row_threads(cols, dtype), smem),
            &[
                ptr(OP, &x)?,
                ptr(OP, &w)?,
                ptr(OP, &rstd)?,
                ptr(OP, &dy)?,
                Arg::Ptr(dx.ptr(0)),
                Arg::Ptr(partial.ptr(0)),
                int(OP, rows)?,
                int(OP, cols)?,
            ],
        )?;
    }
    if cols == 0 {
        return Ok((
            Tensor::from_device(dx, x.shape()),
            Tensor::from_device(dw, &[cols]),
        ));
    }
    gpu.launch(
        "rmsnorm",
        &format!("rmsnorm_dw_reduce_{t}"),
        config((cols.div_ceil(256) as u32, 1, 1), 256, 0),
        &[
            Arg::Ptr(partial.ptr(0)),
            Arg::Ptr(dw.ptr(0)),
            int(OP, if rows > 0 { blocks } else { 0 })?,
            int(OP, cols)?,
        ],
    )?;
    Ok((
        Tensor::from_device(dx, x.shape()),
        Tensor::from_device(dw, &[cols]),
    ))
}

fn elementwise_grid(n: usize, dtype: DType) -> u32 {
    let per_vector = 16 / dtype.size_in_bytes();
    n.div_ceil(256 * per_vector).clamp(1, 65_535) as u32
}

/// `silu(a) ⊙ b` for contiguous `a`, `b` of one shape.
pub(crate) fn swiglu_forward(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "swiglu";
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    let (gpu, dtype, n) = (gpu_of(OP, &a)?, a.dtype(), a.numel());
    let y = gpu.alloc(dtype, n)?;
    gpu.launch(
        "swiglu",
        &format!("swiglu_fwd_{}", suffix(OP, dtype)?),
        config((elementwise_grid(n, dtype), 1, 1), 256, 0),
        &[
            ptr(OP, &a)?,
            ptr(OP, &b)?,
            Arg::Ptr(y.ptr(0)),
            Arg::I64(n as i64),
        ],
    )?;
    Ok(Tensor::from_device(y, a.shape()))
}

/// `(da, db)` of SwiGLU from `a`, `b` and `dy`.
pub(crate) fn swiglu_backward(a: &Tensor, b: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "swiglu backward";
    let (a, b, dy) = (a.contiguous()?, b.contiguous()?, dy.contiguous()?);
    let (gpu, dtype, n) = (gpu_of(OP, &a)?, a.dtype(), a.numel());
    let (da, db) = (gpu.alloc(dtype, n)?, gpu.alloc(dtype, n)?);
    gpu.launch(
        "swiglu",
        &format!("swiglu_bwd_{}", suffix(OP, dtype)?),
        config((elementwise_grid(n, dtype), 1, 1), 256, 0),
        &[
            ptr(OP, &a)?,
            ptr(OP, &b)?,
            ptr(OP, &dy)?,
            Arg::Ptr(da.ptr(0)),
            Arg::Ptr(db.ptr(0)),
            Arg::I64(n as i64),
        ],
    )?;
    Ok((
        Tensor::from_device(da, a.shape()),
        Tensor::from_device(db, a.shape()),
    ))
}

/// Shapes of one attention call: `q [B, H, Tq, D]`, `k`, `v [B, Hkv, Tk, D]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub tq: usize,
    pub tk: usize,
    pub d: usize,
    pub scale: f32,
}

/// A `[B, H, T, D]` view the kernels can read: bf16, D contiguous, 16-byte aligned base and strides
/// (copied into that form when it is not).
fn kernel_view(op: &'static str, t: &Tensor) -> Result<Tensor> {
    let s = t.strides();
    let aligned = |t: &Tensor| -> Result<bool> {
        let s = t.strides();
        Ok(s[3] == 1
            && s[..3].iter().all(|x| x % 8 == 0)
            && buffer(op, t)?.ptr(t.layout.offset) % 16 == 0)
    };
    if s[3] == 1 && aligned(t)? {
        return Ok(t.clone());
    }
    // A fresh buffer (a view can be contiguous yet start at an unaligned offset).
    let c = Tensor::from_storage(t.storage.cast(&t.layout, t.dtype())?, t.shape());
    if aligned(&c)? {
        Ok(c)
    } else {
        Err(Error::Device {
            op,
            msg: format!(
                "{:?} is not 16-byte aligned even when contiguous",
                t.shape()
            ),
        })
    }
}

/// `(sb, st, sh)` of a `[B, H, T, D]` view, as the kernels take them.
fn bth_strides(op: &'static str, t: &Tensor) -> Result<[Arg; 3]> {
    let s = t.strides();
    Ok([int(op, s[0])?, int(op, s[2])?, int(op, s[1])?])
}

/// A fresh `[B, T, H, D]` buffer seen as `[B, H, T, D]`.
fn heads_view(buffer: DeviceBuffer, b: usize, t: usize, h: usize, d: usize) -> Result<Tensor> {
    Tensor::from_device(buffer, &[b, t, h, d]).permute(&[0, 2, 1, 3])
}

/// Head dims with a flash-attention kernel.
pub(crate) fn has_kernel(d: usize) -> bool {
    matches!(d, 16 | 32 | 64 | 128)
}

fn head_dim_name(op: &'static str, d: usize) -> Result<String> {
    if has_kernel(d) {
        Ok(format!("d{d}"))
    } else {
        Err(Error::Device {
            op,
            msg: format!("head dim {d} has no GPU kernel (16, 32, 64 and 128 do)"),
        })
    }
}

/// Causal flash attention of bf16 `q`, `k`, `v` → `(o [B, H, Tq, D] bf16, lse [B·H·Tq] f32)`.
pub(crate) fn attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    s: AttentionShape,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "attention";
    let dim = head_dim_name(OP, s.d)?;
    let (q, k, v) = (
        kernel_view(OP, q)?,
        kernel_view(OP, k)?,
        kernel_view(OP, v)?,
    );
    let gpu = gpu_of(OP, &q)?;
    let o = gpu.alloc(DType::BF16, s.batch * s.tq * s.heads * s.d)?;
    let lse = gpu.alloc(DType::F32, s.batch * s.heads * s.tq)?;
    let o = heads_view(o, s.batch, s.tq, s.heads, s.d)?;
    let mut args = vec![
        ptr(OP, &q)?,
        ptr(OP, &k)?,
        ptr(OP, &v)?,
        ptr(OP, &o)?,
        Arg::Ptr(lse.ptr(0)),
        int(OP, s.heads)?,
        int(OP, s.kv_heads)?,
        int(OP, s.tq)?,
        int(OP, s.tk)?,
    ];
    for t in [&q, &k, &v, &o] {
        args.extend(bth_strides(OP, t)?);
    }
    args.push(Arg::F32(s.scale));
    if s.tq > 0 && s.batch > 0 && s.heads > 0 {
        let smem = (5 * 64 * (s.d + 8) * 2) as u32;
        gpu.launch(
            "attention",
            &format!("attention_fwd_{dim}_bf16"),
            config(
                (s.tq.div_ceil(64) as u32, s.heads as u32, s.batch as u32),
                128,
                smem,
            ),
            &args,
        )?;
    }
    let n = s.batch * s.heads * s.tq;
    Ok((o, Tensor::from_device(lse, &[n])))
}

/// Gradients `(dq, dk, dv)` (bf16, shaped like q, k, v) of causal attention.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    s: AttentionShape,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "attention backward";
    let dim = head_dim_name(OP, s.d)?;
    let (q, k, v, o, dout) = (
        kernel_view(OP, q)?,
        kernel_view(OP, k)?,
        kernel_view(OP, v)?,
        kernel_view(OP, o)?,
        kernel_view(OP, dout)?,
    );
    let gpu = gpu_of(OP, &q)?;
    let rows = s.batch * s.heads * s.tq;
    // A bf16 gradient `[B, H, T, D]` (a view of `[B, T, H, D]`); every element is written by the kernels below,
    // except when there is no query row, where the gradients are zeros.
    let grad = |t: usize, heads: usize| {
        let len = s.batch * t * heads * s.d;
        let buffer = if rows == 0 {
            gpu.alloc_zeroed(DType::BF16, len)?
        } else {
            gpu.alloc(DType::BF16, len)?
        };
        heads_view(buffer, s.batch, t, heads, s.d)
    };
    let (dq, dk, dv) = (
        grad(s.tq, s.heads)?,
        grad(s.tk, s.kv_heads)?,
        grad(s.tk, s.kv_heads)?,
    );
    if rows == 0 {
        return Ok((dq, dk, dv));
    }
    let kv_elems = s.batch * s.tk * s.kv_heads * s.d;
    let delta = gpu.alloc(DType::F32, rows)?;
    // Zeroed by the dot kernel; dk/dv_accum are written whole by the main kernel (one block per key tile
    // and query head writes its rows whatever the mask).
    let dq_accum = gpu.alloc(DType::F32, rows * s.d)?;
    let dk_accum = gpu.alloc(DType::F32, s.batch * s.heads * s.tk * s.d)?;
    let dv_accum = gpu.alloc(DType::F32, s.batch * s.heads * s.tk * s.d)?;
    let mut dot = vec![
        ptr(OP, &o)?,
        ptr(OP, &dout)?,
        Arg::Ptr(delta.ptr(0)),
        Arg::Ptr(dq_accum.ptr(0)),
        int(OP, s.batch)?,
        int(OP, s.heads)?,
        int(OP, s.tq)?,
        int(OP, s.d)?,
    ];
    dot.extend(bth_strides(OP, &o)?);
    dot.extend(bth_strides(OP, &dout)?);
    gpu.launch(
        "attention",
        "attention_bwd_dot_bf16",
        config((rows.div_ceil(4) as u32, 1, 1), 128, 0),
        &dot,
    )?;
    let mut main = vec![
        ptr(OP, &q)?,
        ptr(OP, &k)?,
        ptr(OP, &v)?,
        ptr(OP, &dout)?,
        ptr(OP, lse)?,
        Arg::Ptr(delta.ptr(0)),
        Arg::Ptr(dq_accum.ptr(0)),
        Arg::Ptr(dk_accum.ptr(0)),
        Arg::Ptr(dv_accum.ptr(0)),
        int(OP, s.heads)?,
        int(OP, s.kv_heads)?,
        int(OP, s.tq)?,
        int(OP, s.tk)?,
    ];
    for t in [&q, &k, &v, &dout] {
        main.extend(bth_strides(OP, t)?);
    }
    main.push(Arg::F32(s.scale));
    let smem = (6 * 64 * (s.d + 8) * 2 + 64 * 72 * 2 + 4 * 64 * 4) as u32;
    gpu.launch(
        "attention",
        &format!("attention_bwd_{dim}_bf16"),
        config(
            (s.tk.div_ceil(64) as u32, s.heads as u32, s.batch as u32),
            128,
            smem,
        ),
        &main,
    )?;
    let mut convert = vec![
        Arg::Ptr(dq_accum.ptr(0)),
        ptr(OP, &dq)?,
        int(OP, s.batch)?,
        int(OP, s.heads)?,
        int(OP, s.tq)?,
        int(OP, s.d)?,
    ];
    convert.extend(bth_strides(OP, &dq)?);
    convert.push(Arg::F32(s.scale));
    gpu.launch(
        "attention",
        "attention_bwd_dq_convert_bf16",
        config(((rows * s.d).div_ceil(256) as u32, 1, 1), 256, 0),
        &convert,
    )?;
    let mut reduce = vec![
        Arg::Ptr(dk_accum.ptr(0)),
        Arg::Ptr(dv_accum.ptr(0)),
        ptr(OP, &dk)?,
        ptr(OP, &dv)?,
        int(OP, s.batch)?,
        int(OP, s.heads)?,
        int(OP, s.kv_heads)?,
        int(OP, s.tk)?,
        int(OP, s.d)?,
    ];
    reduce.extend(bth_strides(OP, &dk)?);
    reduce.extend(bth_strides(OP, &dv)?);
    gpu.launch(
        "attention",
        "attention_bwd_dkv_reduce_bf16",
        config((kv_elems.div_ceil(256) as u32, 1, 1), 256, 0),
        &reduce,
    )?;
    Ok((dq, dk, dv))
}
