//! Storage and kernels. `Device` says where a tensor lives; `Storage` holds its elements, and its kernel methods
//! (a file per family: `pointwise`, `copy`, `reduce`, …) are the one dispatch point: each takes storages and
//! layouts, matches on the storage (a host buffer, or `Storage::Cuda`), and runs the CPU kernel or the GPU
//! launcher. This module knows nothing of tensors, ops or the tape.
//!
//! Architecture invariant: this is the only module that chooses a device. The CPU backend is always built; the
//! GPU backend is `cuda` with the `cuda` feature and its stand-in `cuda_off.rs` (the same launcher signatures
//! over uninhabited buffers) without it, so the dispatch compiles and type-checks in every build.

mod attention;
mod copy;
pub mod cpu;
mod cross_entropy;
#[cfg(feature = "cuda-backend")]
pub mod cuda;
#[cfg(not(feature = "cuda-backend"))]
#[path = "cuda_off.rs"]
pub mod cuda;
mod embedding;
mod linear_cross_entropy;
mod matmul;
pub mod memory;
pub(crate) mod op_code;
mod pointwise;
pub mod pool;
mod quant;
mod quant_linear;
mod reduce;
mod rmsnorm;
mod rope;
mod softmax;
mod storage;
mod swiglu;
pub mod twin;

use crate::dtype::DType;
pub use attention::Geometry;
pub use cross_entropy::Labels;
pub use linear_cross_entropy::{chunk_rows, LinearCrossEntropy};
pub use pointwise::{Arith, Pointwise};
pub use quant::{is_block_format, QuantMatrix};
pub use reduce::{Argmax, Reduce};
pub use rope::RopeTables;
pub use storage::{Storage, StorageElement};

/// A storage read through a layout: one operand of a kernel.
pub type View<'a> = (&'a Storage, &'a crate::shape::Layout);

/// Runs `$body` with `$T` bound to the Rust type of a compute dtype (f32 or f64).
macro_rules! float_dispatch {
    ($dtype:expr, $T:ident, $body:expr) => {
        match $dtype {
            $crate::dtype::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::dtype::DType::F64 => {
                type $T = f64;
                $body
            }
            other => {
                unreachable!("internal: kernel reached with {other}; half types are upcast first")
            }
        }
    };
}
pub(crate) use float_dispatch;

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory, computed with rayon over all cores.
    Cpu,
    /// A GPU by ordinal (builds with the `cuda` feature).
    Cuda(usize),
}

/// How an op's operands reach its kernels on each device: the mixed-precision rules (the op → rule table is
/// `ops::PRECISION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 and f64 as they are; bf16 and f16 computed in f32, on every device (the kernels are written for f32
    /// and f64).
    Upcast,
    /// On a GPU every dtype as it is (the kernels take bf16 and f32); on the CPU as `Upcast`.
    NativeOnGpu,
    /// `NativeOnGpu`, and on a GPU f32 computed in bf16 under mixed precision (`ops::with_gpu_bf16`).
    AutocastOnGpu,
    /// On a GPU every dtype computed in bf16 (the kernels' only one); on the CPU as `Upcast`.
    Bf16OnGpu,
}

impl Device {
    /// The dtype an op with rule `rule` computes `dtype` operands in here; `mixed` is whether mixed precision
    /// is on (`ops::gpu_bf16`).
    pub fn compute_dtype(self, dtype: DType, rule: Precision, mixed: bool) -> DType {
        match (self, rule) {
            (Device::Cpu, _) | (Device::Cuda(_), Precision::Upcast) => dtype.compute(),
            (Device::Cuda(_), Precision::NativeOnGpu) => dtype,
            (Device::Cuda(_), Precision::AutocastOnGpu) if mixed && dtype == DType::F32 => {
                DType::BF16
            }
            (Device::Cuda(_), Precision::AutocastOnGpu) => dtype,
            (Device::Cuda(_), Precision::Bf16OnGpu) => DType::BF16,
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Device> {
        let ordinal = match s {
            "cpu" => return Ok(Device::Cpu),
            "cuda" => Some(0),
            other => other.strip_prefix("cuda:").and_then(|n| n.parse().ok()),
        };
        match ordinal {
            Some(i) if cfg!(feature = "cuda-backend") => Ok(Device::Cuda(i)),
            Some(_) => Err(crate::Error::Device {
                op: "device",
                msg: format!(
                    "{s} is not available in this build (build with --features cuda for the GPU backend)"
                ),
            }),
            None => Err(crate::Error::invalid(
                "device",
                format!("unknown device {s:?} (expected cpu, cuda or cuda:N)"),
            )),
        }
    }
}

/// A buffer of `len` elements of `dtype` on `device`, each `value` rounded to the dtype (a fill kernel on a GPU).
pub fn filled(
    len: usize,
    value: f64,
    dtype: crate::DType,
    device: Device,
) -> crate::Result<Storage> {
    match device {
        Device::Cpu => Ok(Storage::filled(dtype, len, value)),
        Device::Cuda(i) => Ok(Storage::Cuda(cuda::copy::fill(
            &cuda::gpu(i)?,
            dtype,
            len,
            value,
        )?)),
    }
}

/// A copy of a whole buffer on `device` (a GPU of a build without the `cuda` feature is an error saying so).
pub fn copy_to(storage: &Storage, device: Device) -> crate::Result<Storage> {
    if storage.device() == device {
        return Ok(storage.clone());
    }
    match (storage, device) {
        (Storage::Cuda(buffer), to) => {
            let host = Storage::from_bytes(buffer.dtype(), &buffer.download()?);
            copy_to(&host, to)
        }
        (host, Device::Cuda(i)) => {
            let buffer = cuda::gpu(i)?.upload(host.dtype(), host.as_bytes())?;
            Ok(Storage::Cuda(buffer))
        }
        (host, Device::Cpu) => Ok(host.clone()),
    }
}
