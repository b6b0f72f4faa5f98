//! Launcher of `kernels/rope.cu`, and the device copies of the cos/sin tables.
//!
//! The tables are uploaded once per (table, device) and cached: the cache is keyed by the address of the
//! tables' shared allocations (`Arc<Vec<f64>>`) and the device, and holds a `Weak` of each table, which keeps
//! that address from being reused while the entry exists. Entries whose tables were dropped are pruned on the
//! next lookup, which frees their device copies.

use super::launch::{float_suffix, grid_1d, i32_of, i64_of, THREADS};
use super::{config, Arg, DeviceBuffer, Gpu};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

struct Entry {
    cos: Weak<Vec<f64>>,
    sin: Weak<Vec<f64>>,
    device: Arc<(DeviceBuffer, DeviceBuffer)>,
}

type Key = (usize, usize, usize);

static TABLES: OnceLock<Mutex<HashMap<Key, Entry>>> = OnceLock::new();

/// The device copies (f64) of `cos` and `sin` on `gpu`, uploaded on first use.
fn tables(
    gpu: &Arc<Gpu>,
    cos: &Arc<Vec<f64>>,
    sin: &Arc<Vec<f64>>,
) -> Result<Arc<(DeviceBuffer, DeviceBuffer)>> {
    let key = (
        Arc::as_ptr(cos) as usize,
        Arc::as_ptr(sin) as usize,
        gpu.ordinal,
    );
    let mut cache = TABLES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache.retain(|_, e| e.cos.strong_count() > 0 && e.sin.strong_count() > 0);
    if let Some(e) = cache.get(&key) {
        return Ok(e.device.clone());
    }
    let device = Arc::new((
        gpu.upload(DType::F64, bytemuck::cast_slice(cos.as_slice()))?,
        gpu.upload(DType::F64, bytemuck::cast_slice(sin.as_slice()))?,
    ));
    cache.insert(
        key,
        Entry {
            cos: Arc::downgrade(cos),
            sin: Arc::downgrade(sin),
            device: device.clone(),
        },
    );
    Ok(device)
}

/// Every head vector of `x: [B, T, H, D]` (read through the contiguous `layout`) rotated by `sign · angle` of
/// position `start_pos + t`, with `cos`/`sin` the `[max_len, D/2]` tables.
pub(crate) fn rotate(
    x: &DeviceBuffer,
    layout: &Layout,
    cos: &Arc<Vec<f64>>,
    sin: &Arc<Vec<f64>>,
    start_pos: usize,
    sign: f64,
) -> Result<DeviceBuffer> {
    let xb = x;
    let shape = &layout.shape;
    if !layout.is_contiguous() || shape.len() != 4 || !shape[3].is_multiple_of(2) {
        return Err(Error::shape(
            "rope",
            format!("internal: input {shape:?} is not a contiguous [B, T, H, D] with D even"),
        ));
    }
    let t = float_suffix("rope", x.dtype())?;
    let (t_len, heads, half) = (shape[1], shape[2], shape[3] / 2);
    if (start_pos + t_len) * half > cos.len().min(sin.len()) {
        return Err(Error::Index {
            op: "rope",
            msg: format!(
                "positions up to {} exceed tables of {} entries of {half}",
                start_pos + t_len,
                cos.len() / half.max(1)
            ),
        });
    }
    let gpu = xb.gpu();
    let n_pairs = layout.numel() / 2;
    let out = gpu.alloc(x.dtype(), layout.numel())?;
    if n_pairs > 0 {
        let table = tables(gpu, cos, sin)?;
        gpu.launch(
            "rope",
            &format!("rope_{t}"),
            config(grid_1d(n_pairs), THREADS, 0),
            &[
                Arg::Ptr(xb.ptr(layout.offset)),
                Arg::Ptr(out.ptr(0)),
                Arg::Ptr(table.0.ptr(0)),
                Arg::Ptr(table.1.ptr(0)),
                Arg::I64(i64_of("rope", n_pairs)?),
                Arg::I32(i32_of("rope", "a sequence of", t_len)?),
                Arg::I32(i32_of("rope", "heads", heads)?),
                Arg::I32(i32_of("rope", "a half head of", half)?),
                Arg::I64(i64_of("rope", start_pos)?),
                Arg::F64(sign),
            ],
        )?;
    }
    Ok(out)
}
