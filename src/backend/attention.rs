//! Causal attention by device: `Storage::attention` (the output and the row log-sum-exp; nothing of size T²)
//! and `Storage::attention_backward`. The tiled CPU kernel (`cpu::attention`) on the host; on a GPU the flash
//! kernels (`kernels/attention.cu`, bf16 operands), or — for a head dim they lack — the CPU kernel on copies
//! moved both ways, computing the operands in f32.
//!
//! Shapes: `q: [B, H, Tq, D]`, `k, v: [B, Hkv, Tk, D]` views with the last dim contiguous; outputs are stored
//! `[B, T, H, D]` (the op sees them as `[B, H, T, D]`), the log-sum-exp `[B·H·Tq]`.

pub use super::cpu::attention::Geometry;
use super::{float_dispatch, Storage, StorageElement, View};
use crate::error::Result;
use crate::shape::Layout;

/// The host copy of a GPU operand in f32, contiguous, with its layout.
fn host_f32(v: View) -> Result<(Storage, Layout)> {
    let host = super::copy_to(v.0, super::Device::Cpu)?;
    let copy = host.cast(v.1, crate::DType::F32)?;
    Ok((copy, Layout::contiguous(&v.1.shape)))
}

/// `s` (a host result) on `like`'s device, in `dtype`.
fn back_to(s: Storage, like: &Storage, dtype: crate::DType) -> Result<Storage> {
    let moved = s.cast(&Layout::contiguous(&[s.len()]), dtype)?;
    super::copy_to(&moved, like.device())
}

/// The flash kernels take bf16 only; an error naming the dtype otherwise.
fn bf16_only(op: &'static str, s: &Storage) -> Result<()> {
    if s.dtype() == crate::DType::BF16 {
        return Ok(());
    }
    Err(crate::Error::DType {
        op,
        msg: format!("the GPU kernels take bf16 operands, not {}", s.dtype()),
    })
}

/// A host operand as a typed slice with its layout.
fn host<T: StorageElement>((s, layout): View<'_>) -> (&[T], &Layout) {
    (s.host::<T>(), layout)
}

/// A GPU operand as its buffer with its layout, or an error naming the device it is on.
fn cuda((s, layout): View<'_>) -> Result<(&super::cuda::DeviceBuffer, &Layout)> {
    match s {
        Storage::Cuda(b) => Ok((b, layout)),
        other => Err(crate::Error::Device {
            op: "attention backward",
            msg: format!("an operand is on {}, the queries on a GPU", other.device()),
        }),
    }
}

impl Storage {
    /// The output (`[B, Tq, H, D]`) and row log-sum-exp (`[B·H·Tq]`) of causal attention.
    pub fn attention(q: View, k: View, v: View, geo: &Geometry) -> Result<(Storage, Storage)> {
        if let (Storage::Cuda(qb), Storage::Cuda(kb), Storage::Cuda(vb)) = (q.0, k.0, v.0) {
            if !super::cuda::attention::has_kernel(geo.d) {
                let (hq, hk, hv) = (host_f32(q)?, host_f32(k)?, host_f32(v)?);
                let (o, lse) =
                    Storage::attention((&hq.0, &hq.1), (&hk.0, &hk.1), (&hv.0, &hv.1), geo)?;
                // The log-sum-exp stays f32, as the flash kernels keep it.
                let f32 = crate::DType::F32;
                return Ok((back_to(o, q.0, q.0.dtype())?, back_to(lse, q.0, f32)?));
            }
            bf16_only("attention", q.0)?;
            let (o, lse) = super::cuda::attention::forward((qb, q.1), (kb, k.1), (vb, v.1), geo)?;
            return Ok((Storage::Cuda(o), Storage::Cuda(lse)));
        }
        float_dispatch!(q.0.dtype(), T, {
            let (o, lse) = super::cpu::attention::forward::<T>(
                (q.0.host(), q.1),
                (k.0.host(), k.1),
                (v.0.host(), v.1),
                geo,
            );
            Ok((T::wrap(o), T::wrap(lse)))
        })
    }

    /// The gradients `(dq, dk, dv)`, each stored `[B, T, H, D]`, from the forward's operands, its output `o`,
    /// its log-sum-exp and the output gradient `dout`.
    pub fn attention_backward(
        (q, k, v): (View, View, View),
        o: View,
        lse: View,
        dout: View,
        geo: &Geometry,
    ) -> Result<(Storage, Storage, Storage)> {
        if let (Storage::Cuda(qb), Storage::Cuda(kb), Storage::Cuda(vb)) = (q.0, k.0, v.0) {
            if !super::cuda::attention::has_kernel(geo.d) {
                let h: Vec<(Storage, Layout)> = [q, k, v, o, lse, dout]
                    .into_iter()
                    .map(host_f32)
                    .collect::<Result<_>>()?;
                let view = |i: usize| (&h[i].0, &h[i].1);
                let (dq, dk, dv) = Storage::attention_backward(
                    (view(0), view(1), view(2)),
                    view(3),
                    view(4),
                    view(5),
                    geo,
                )?;
                let dtype = q.0.dtype();
                return Ok((
                    back_to(dq, q.0, dtype)?,
                    back_to(dk, q.0, dtype)?,
                    back_to(dv, q.0, dtype)?,
                ));
            }
            for s in [q.0, dout.0] {
                bf16_only("attention backward", s)?;
            }
            let (dq, dk, dv) = super::cuda::attention::backward(
                (qb, q.1),
                (kb, k.1),
                (vb, v.1),
                cuda(o)?,
                cuda(lse)?,
                cuda(dout)?,
                geo,
            )?;
            return Ok((Storage::Cuda(dq), Storage::Cuda(dk), Storage::Cuda(dv)));
        }
        float_dispatch!(q.0.dtype(), T, {
            let (dq, dk, dv) = super::cpu::attention::backward::<T>(
                (host(q), host(k), host(v)),
                host(o),
                lse.0.host_contiguous::<T>(lse.1),
                host(dout),
                geo,
            );
            Ok((T::wrap(dq), T::wrap(dk), T::wrap(dv)))
        })
    }
}
