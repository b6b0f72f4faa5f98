//! The ops. One file per op (or per family sharing one kernel, like the four broadcast binaries): each adds
//! its user-facing methods to `Tensor` in its own `impl Tensor` block, checks its operands (returning an `Error`
//! that names the op and the shapes), runs its CPU kernel, and records one tape node whose closure is the
//! op's backward. Fused ops keep their composed reference (built from primitive ops) beside them.
//!
//! Architecture invariant: every op has a backward; an op never picks a device: it hands storages and layouts
//! to the backend (`backend::Storage`'s kernel methods), which dispatches on the storage. The dtype an op
//! computes in on each device is one table here (`PRECISION`, applied by `with_precision`).

mod attention;
mod binary;
mod cast;
mod cat;
mod cross_entropy;
mod device;
mod embedding;
mod linear_cross_entropy;
mod matmul;
mod quant_linear;
mod reduce;
mod rmsnorm;
mod rope;
mod softmax;
mod swiglu;
mod unary;
mod view;

pub use attention::attention_reference;
pub use cross_entropy::cross_entropy_reference;
pub use linear_cross_entropy::linear_cross_entropy_reference;
pub use quant_linear::linear_quantized_reference;
pub use rmsnorm::rms_norm_reference;
pub use rope::{rope_interleaved_to_half, rope_reference, Rope};
pub use swiglu::swiglu_reference;

use crate::backend::Precision;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The mixed-precision rule of the ops that do not simply upcast half types (`Precision::Upcast`): one row per
/// op, read by `with_precision`. Where each rule lands per device is `Device::compute_dtype`.
const PRECISION: &[(&str, Precision)] = &[
    ("matmul", Precision::AutocastOnGpu),
    ("linear", Precision::AutocastOnGpu),
    ("linear_quantized", Precision::AutocastOnGpu),
    ("rms_norm", Precision::NativeOnGpu),
    ("swiglu", Precision::NativeOnGpu),
    ("attention", Precision::Bf16OnGpu),
];

/// The rule of `op` (`Upcast` unless `PRECISION` names it).
fn precision(op: &str) -> Precision {
    PRECISION
        .iter()
        .find(|(name, _)| *name == op)
        .map_or(Precision::Upcast, |&(_, rule)| rule)
}

/// Checks that `inputs` share one device and one dtype, then runs `f` on them in the dtype `op` computes in
/// there (its `PRECISION` rule): inputs of another dtype are cast to it (recorded casts, so gradients flow) and
/// the result cast back.
pub(crate) fn with_precision(
    op: &'static str,
    inputs: &[&Tensor],
    f: impl FnOnce(&[Tensor]) -> Result<Tensor>,
) -> Result<Tensor> {
    let device = device_of(op, inputs)?;
    let dtype = inputs[0].dtype();
    if let Some(other) = inputs.iter().find(|t| t.dtype() != dtype) {
        return Err(Error::DType {
            op,
            msg: format!("operands are {dtype} and {}; cast one first", other.dtype()),
        });
    }
    let compute = device.compute_dtype(dtype, precision(op), gpu_bf16());
    if compute == dtype {
        let owned: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        return f(&owned);
    }
    let cast = inputs
        .iter()
        .map(|t| t.to_dtype(compute))
        .collect::<Result<Vec<_>>>()?;
    f(&cast)?.to_dtype(dtype)
}

thread_local! {
    static GPU_BF16: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `f` with GPU matrix products on f32 operands computed in bf16 (f32 accumulation; the product is rounded
/// to bf16 and handed back as f32, as PyTorch's autocast does) when `enabled` — mixed precision, on by default —
/// or in f32 when not. Weight gradients are such products too, so they carry bf16 rounding. Attention on the GPU always computes in bf16
/// (its kernels are bf16 only). Parameters, optimizer state, norms and reductions stay f32 either way.
pub fn with_gpu_bf16<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    crate::tape::scoped(&GPU_BF16, enabled, f)
}

/// Runs `f` with the CPU's f32 matrix products (every GEMM on this thread: `matmul`, `linear`, the fused head,
/// products with quantized weights) computed in bf16 with f32 accumulation when `enabled` and the CPU has
/// AVX512-BF16 (`cpu_bf16_available`): the operands are rounded to bf16, the product stays f32. Off by default.
pub fn with_cpu_bf16<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    crate::backend::cpu::gemm_bf16::with_products_in_bf16(enabled, f)
}

/// Whether this CPU computes products in bf16 (AVX512-BF16, within the `TAPEGRAD_SIMD` cap).
pub fn cpu_bf16_available() -> bool {
    crate::backend::cpu::gemm_bf16::available()
}

/// Whether f32 matrix products on the GPU run in bf16 on this thread (see `with_gpu_bf16`).
pub fn gpu_bf16() -> bool {
    GPU_BF16.with(|g| g.get())
}

/// The one device all `inputs` live on, or an error naming the op and the devices.
pub(crate) fn device_of(op: &'static str, inputs: &[&Tensor]) -> Result<crate::backend::Device> {
    let device = inputs[0].device();
    match inputs.iter().find(|t| t.device() != device) {
        None => Ok(device),
        Some(other) => Err(Error::Device {
            op,
            msg: format!(
                "operands are on {device} and {}; move one with to_device first",
                other.device()
            ),
        }),
    }
}

/// Keeps `tensors` for backward on the tape an op over `inputs` records on (`None` when nothing records).
/// A tensor produced under a recomputing save policy is kept as its recipe only.
pub(crate) fn keep<const N: usize>(
    inputs: &[&Tensor],
    tensors: [&Tensor; N],
) -> Option<[crate::tape::Saved; N]> {
    let tape = crate::tape::recording_tape(inputs)?;
    Some(tensors.map(|t| tape.save(t)))
}
