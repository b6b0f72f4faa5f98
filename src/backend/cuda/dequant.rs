//! Launchers of `kernels/dequant.cu`: a quantized weight's blocks (uploaded once, `QuantMatrix::on_gpu`)
//! expanded to f32 or bf16 for the product with the activations.

use super::launch::{grid_1d, i64_of, THREADS};
use super::{config, Arg, DeviceBuffer};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::io::gguf::GgmlType;

/// The kernel name of format `ty`, if there is one.
fn format_name(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q8_0 => "q8_0",
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q5_0 => "q5_0",
        GgmlType::Q5_1 => "q5_1",
        GgmlType::Q4_K => "q4_k",
        GgmlType::Q5_K => "q5_k",
        GgmlType::Q6_K => "q6_k",
        _ => return None,
    })
}

/// The `elements` values (whole blocks) held by `blocks` (format `ty`, raw bytes) as `dtype` (f32 or bf16).
pub(crate) fn dequantize(
    blocks: &DeviceBuffer,
    ty: GgmlType,
    elements: usize,
    dtype: DType,
) -> Result<DeviceBuffer> {
    let op = "dequantize";
    let fmt = format_name(ty).ok_or_else(|| Error::DType {
        op,
        msg: format!("{ty} has no GPU kernel"),
    })?;
    let t = match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        other => {
            return Err(Error::DType {
                op,
                msg: format!("{ty} weights expand to f32 or bf16 on the GPU, not {other}"),
            })
        }
    };
    let (block, bytes) = ty.block_layout().expect("a block format");
    let n_blocks = elements / block;
    if !elements.is_multiple_of(block)
        || blocks.len() * blocks.dtype().size_in_bytes() < n_blocks * bytes
    {
        return Err(Error::shape(
            op,
            format!(
                "internal: {elements} {ty} elements from a buffer of {} bytes",
                blocks.len() * blocks.dtype().size_in_bytes()
            ),
        ));
    }
    let out = blocks.gpu().alloc(dtype, elements)?;
    if n_blocks > 0 {
        blocks.gpu().launch(
            "dequant",
            &format!("dequant_{fmt}_{t}"),
            config(grid_1d(n_blocks), THREADS, 0),
            &[
                Arg::Ptr(blocks.ptr(0)),
                Arg::Ptr(out.ptr(0)),
                Arg::I64(i64_of(op, n_blocks)?),
            ],
        )?;
    }
    Ok(out)
}
