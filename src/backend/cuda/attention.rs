//! Launchers of `kernels/attention.cu` (its header gives the parameter lists and launch configurations): causal
//! flash attention forward and backward, bf16 with f32 accumulation, grouped-query heads. Operands are
//! `[B, H, T, D]` views with D contiguous and 16-byte aligned strides (copied into that form when not);
//! outputs are fresh `[B, T, H, D]` buffers, seen as `[B, H, T, D]` through `heads_layout`.

use super::copy::copy_into;
use super::launch::int;
use super::{config, Arg, DeviceBuffer};
use crate::backend::Geometry;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;

/// A `[B, H, T, D]` operand as the kernels read it: bf16, D contiguous, 16-byte aligned base and strides
/// (copied into that form when it is not; the copy lives as long as this).
struct Operand {
    address: u64,
    /// Strides of B, H and T.
    strides: [usize; 3],
    _copy: Option<DeviceBuffer>,
}

impl Operand {
    fn of(op: &'static str, (buffer, layout): (&DeviceBuffer, &Layout)) -> Result<Operand> {
        let aligned = |b: &DeviceBuffer, l: &Layout| {
            let s = &l.strides;
            s[3] == 1 && s[..3].iter().all(|x| x % 8 == 0) && b.ptr(l.offset).is_multiple_of(16)
        };
        let operand = |b: &DeviceBuffer, l: &Layout, copy| Operand {
            address: b.ptr(l.offset),
            strides: [l.strides[0], l.strides[1], l.strides[2]],
            _copy: copy,
        };
        if aligned(buffer, layout) {
            return Ok(operand(buffer, layout, None));
        }
        // A fresh buffer (a view can be contiguous yet start at an unaligned offset).
        let dense = Layout::contiguous(&layout.shape);
        let copy = buffer.gpu().alloc(buffer.dtype(), dense.numel())?;
        copy_into(buffer, layout, &copy, &dense)?;
        if !aligned(&copy, &dense) {
            return Err(Error::Device {
                op,
                msg: format!(
                    "{:?} is not 16-byte aligned even when contiguous",
                    layout.shape
                ),
            });
        }
        Ok(operand(&copy, &dense, None).keeping(copy))
    }

    /// An output the kernels write: a fresh buffer's view, which must already be in the kernels' form (a copy
    /// would take the writes).
    fn output(op: &'static str, buffer: &DeviceBuffer, layout: &Layout) -> Result<Operand> {
        let s = &layout.strides;
        if s[3] != 1
            || s[..3].iter().any(|x| x % 8 != 0)
            || !buffer.ptr(layout.offset).is_multiple_of(16)
        {
            return Err(Error::Device {
                op,
                msg: format!("internal: output {:?} is not 16-byte aligned", layout.shape),
            });
        }
        Ok(Operand {
            address: buffer.ptr(layout.offset),
            strides: [s[0], s[1], s[2]],
            _copy: None,
        })
    }

    fn keeping(mut self, copy: DeviceBuffer) -> Operand {
        self._copy = Some(copy);
        self
    }

    fn ptr(&self) -> Arg {
        Arg::Ptr(self.address)
    }

    /// `(sb, st, sh)`, as the kernels take them.
    fn bth_strides(&self, op: &'static str) -> Result<[Arg; 3]> {
        let [sb, sh, st] = self.strides;
        Ok([int(op, sb)?, int(op, st)?, int(op, sh)?])
    }
}

/// The layout of a fresh `[B, T, H, D]` buffer seen as `[B, H, T, D]`.
pub(crate) fn heads_layout(b: usize, t: usize, h: usize, d: usize) -> Layout {
    Layout {
        shape: vec![b, h, t, d],
        strides: vec![t * h * d, d, h * d, 1],
        offset: 0,
    }
}

/// Head dims with a flash-attention kernel.
pub fn has_kernel(d: usize) -> bool {
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

type View<'a> = (&'a DeviceBuffer, &'a Layout);

/// Causal flash attention of bf16 `q`, `k`, `v` (`[B, H, T, D]` views) → `(o, lse)`: `o` a `[B, Tq, H, D]`
/// bf16 buffer (`heads_layout` sees it as `[B, H, Tq, D]`), `lse` `[B·H·Tq]` f32.
pub(crate) fn forward(
    q: View,
    k: View,
    v: View,
    s: &Geometry,
) -> Result<(DeviceBuffer, DeviceBuffer)> {
    const OP: &str = "attention";
    let dim = head_dim_name(OP, s.d)?;
    let gpu = q.0.gpu().clone();
    let (q, k, v) = (
        Operand::of(OP, q)?,
        Operand::of(OP, k)?,
        Operand::of(OP, v)?,
    );
    let o_buffer = gpu.alloc(DType::BF16, s.batch * s.tq * s.heads * s.d)?;
    let lse = gpu.alloc(DType::F32, s.batch * s.heads * s.tq)?;
    let o = Operand::output(OP, &o_buffer, &heads_layout(s.batch, s.tq, s.heads, s.d))?;
    let mut args = vec![
        q.ptr(),
        k.ptr(),
        v.ptr(),
        o.ptr(),
        Arg::Ptr(lse.ptr(0)),
        int(OP, s.heads)?,
        int(OP, s.kv_heads)?,
        int(OP, s.tq)?,
        int(OP, s.tk)?,
    ];
    for t in [&q, &k, &v, &o] {
        args.extend(t.bth_strides(OP)?);
    }
    args.push(Arg::F32(s.scale as f32));
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
    Ok((o_buffer, lse))
}

/// Gradients `(dq, dk, dv)` of causal attention: bf16 `[B, T, H, D]` buffers (`heads_layout` sees them as
/// `[B, H, T, D]`, shaped like q, k, v), from the forward's operands, output `o`, `lse` and the bf16 output
/// gradient `dout`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    q: View,
    k: View,
    v: View,
    o: View,
    lse: View,
    dout: View,
    s: &Geometry,
) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer)> {
    const OP: &str = "attention backward";
    let dim = head_dim_name(OP, s.d)?;
    let gpu = q.0.gpu().clone();
    let lse = Arg::Ptr(lse.0.ptr(lse.1.offset));
    let (q, k, v, o, dout) = (
        Operand::of(OP, q)?,
        Operand::of(OP, k)?,
        Operand::of(OP, v)?,
        Operand::of(OP, o)?,
        Operand::of(OP, dout)?,
    );
    let rows = s.batch * s.heads * s.tq;
    // A bf16 gradient `[B, T, H, D]`; every element is written by the kernels below, except when there is no
    // query row, where the gradients are zeros.
    let grad = |t: usize, heads: usize| {
        let len = s.batch * t * heads * s.d;
        if rows == 0 {
            gpu.alloc_zeroed(DType::BF16, len)
        } else {
            gpu.alloc(DType::BF16, len)
        }
    };
    let (dq, dk, dv) = (
        grad(s.tq, s.heads)?,
        grad(s.tk, s.kv_heads)?,
        grad(s.tk, s.kv_heads)?,
    );
    if rows == 0 {
        return Ok((dq, dk, dv));
    }
    let view = |b: &DeviceBuffer, t: usize, heads: usize| {
        Operand::output(OP, b, &heads_layout(s.batch, t, heads, s.d))
    };
    let (dq_view, dk_view, dv_view) = (
        view(&dq, s.tq, s.heads)?,
        view(&dk, s.tk, s.kv_heads)?,
        view(&dv, s.tk, s.kv_heads)?,
    );
    let kv_elems = s.batch * s.tk * s.kv_heads * s.d;
    let delta = gpu.alloc(DType::F32, rows)?;
    // Zeroed by the dot kernel; dk/dv_accum are written whole by the main kernel (one block per key tile
    // and query head writes its rows whatever the mask).
    let dq_accum = gpu.alloc(DType::F32, rows * s.d)?;
    let dk_accum = gpu.alloc(DType::F32, s.batch * s.heads * s.tk * s.d)?;
    let dv_accum = gpu.alloc(DType::F32, s.batch * s.heads * s.tk * s.d)?;
    let mut dot = vec![
        o.ptr(),
        dout.ptr(),
        Arg::Ptr(delta.ptr(0)),
        Arg::Ptr(dq_accum.ptr(0)),
        int(OP, s.batch)?,
        int(OP, s.heads)?,
        int(OP, s.tq)?,
        int(OP, s.d)?,
    ];
    dot.extend(o.bth_strides(OP)?);
    dot.extend(dout.bth_strides(OP)?);
    gpu.launch(
        "attention",
        "attention_bwd_dot_bf16",
        config((rows.div_ceil(4) as u32, 1, 1), 128, 0),
        &dot,
    )?;
    let mut main = vec![
        q.ptr(),
        k.ptr(),
        v.ptr(),
        dout.ptr(),
        lse,
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
        main.extend(t.bth_strides(OP)?);
    }
    main.push(Arg::F32(s.scale as f32));
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
        dq_view.ptr(),
        int(OP, s.batch)?,
        int(OP, s.heads)?,
        int(OP, s.tq)?,
        int(OP, s.d)?,
    ];
    convert.extend(dq_view.bth_strides(OP)?);
    convert.push(Arg::F32(s.scale as f32));
    gpu.launch(
        "attention",
        "attention_bwd_dq_convert_bf16",
        config(((rows * s.d).div_ceil(256) as u32, 1, 1), 256, 0),
        &convert,
    )?;
    let mut reduce = vec![
        Arg::Ptr(dk_accum.ptr(0)),
        Arg::Ptr(dv_accum.ptr(0)),
        dk_view.ptr(),
        dv_view.ptr(),
        int(OP, s.batch)?,
        int(OP, s.heads)?,
        int(OP, s.kv_heads)?,
        int(OP, s.tk)?,
        int(OP, s.d)?,
    ];
    reduce.extend(dk_view.bth_strides(OP)?);
    reduce.extend(dv_view.bth_strides(OP)?);
    gpu.launch(
        "attention",
        "attention_bwd_dkv_reduce_bf16",
        config((kv_elems.div_ceil(256) as u32, 1, 1), 256, 0),
        &reduce,
    )?;
    Ok((dq, dk, dv))
}
