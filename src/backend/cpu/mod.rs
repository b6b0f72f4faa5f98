//! The CPU backend: typed host buffers, the packed GEMM, and the strided loops the elementwise kernels share.

pub mod elementwise;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
pub mod gemm_avx512;
pub mod gemm_kernel;
mod gemm_panels;
pub mod parallel;
pub mod recycle;
pub mod simd;

use crate::dtype::{DType, Element};
use half::{bf16, f16};

/// The storage of one tensor: a typed host buffer, or (with the `cuda` feature) a device buffer. Cloning
/// copies (copy-on-write goes through `Arc::make_mut`).
#[derive(Clone, Debug)]
pub enum Storage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
    /// Elements on a GPU.
    #[cfg(feature = "cuda-backend")]
    Cuda(crate::backend::cuda::DeviceBuffer),
}

impl Storage {
    /// The stored dtype.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F64(_) => DType::F64,
            Storage::BF16(_) => DType::BF16,
            Storage::F16(_) => DType::F16,
            #[cfg(feature = "cuda-backend")]
            Storage::Cuda(b) => b.dtype(),
        }
    }

    /// Where the elements live.
    pub fn device(&self) -> super::Device {
        match self {
            #[cfg(feature = "cuda-backend")]
            Storage::Cuda(b) => super::Device::Cuda(b.gpu().ordinal),
            _ => super::Device::Cpu,
        }
    }

    /// Whether the elements are in host memory.
    pub fn is_host(&self) -> bool {
        self.device() == super::Device::Cpu
    }

    /// Number of stored elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F64(v) => v.len(),
            Storage::BF16(v) => v.len(),
            Storage::F16(v) => v.len(),
            #[cfg(feature = "cuda-backend")]
            Storage::Cuda(b) => b.len(),
        }
    }

    /// Size of the buffer in bytes.
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype().size_in_bytes()
    }

    /// A host buffer of `dtype` from its raw little-endian bytes.
    pub fn from_bytes(dtype: DType, bytes: &[u8]) -> Storage {
        match dtype {
            DType::F32 => Storage::F32(bytemuck::pod_collect_to_vec(bytes)),
            DType::F64 => Storage::F64(bytemuck::pod_collect_to_vec(bytes)),
            DType::BF16 => Storage::BF16(bytemuck::pod_collect_to_vec(bytes)),
            DType::F16 => Storage::F16(bytemuck::pod_collect_to_vec(bytes)),
        }
    }

    /// A host buffer of `len` elements of `dtype`, each `value` rounded to the dtype.
    pub fn filled(dtype: DType, len: usize, value: f64) -> Storage {
        match dtype {
            DType::F32 => Storage::F32(recycle::filled(len, value as f32)),
            DType::F64 => Storage::F64(recycle::filled(len, value)),
            DType::BF16 => Storage::BF16(recycle::filled(len, bf16::from_f64(value))),
            DType::F16 => Storage::F16(recycle::filled(len, f16::from_f64(value))),
        }
    }

    /// Whether no element is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw bytes, zero-copy; empty for a device buffer (copy it to the host first).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            #[cfg(feature = "cuda-backend")]
            Storage::Cuda(_) => &[],
            Storage::F32(v) => bytemuck::cast_slice(v),
            Storage::F64(v) => bytemuck::cast_slice(v),
            Storage::BF16(v) => bytemuck::cast_slice(v),
            Storage::F16(v) => bytemuck::cast_slice(v),
        }
    }
}

/// Typed access to a `Storage`; implemented for every `Element`.
pub trait StorageElement: Element {
    fn wrap(v: Vec<Self>) -> Storage;
    fn slice(s: &Storage) -> Option<&[Self]>;
    fn slice_mut(s: &mut Storage) -> Option<&mut [Self]>;
    /// The buffer of a storage of this dtype.
    fn unwrap(s: Storage) -> Option<Vec<Self>>;
}

macro_rules! storage_element {
    ($t:ty, $v:ident) => {
        impl StorageElement for $t {
            fn wrap(v: Vec<Self>) -> Storage {
                Storage::$v(v)
            }
            fn slice(s: &Storage) -> Option<&[Self]> {
                match s {
                    Storage::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut Storage) -> Option<&mut [Self]> {
                match s {
                    Storage::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn unwrap(s: Storage) -> Option<Vec<Self>> {
                match s {
                    Storage::$v(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
storage_element!(f32, F32);
storage_element!(f64, F64);
storage_element!(bf16, BF16);
storage_element!(f16, F16);

/// A dot product in eight independent lanes, so the compiler vectorizes it (a single running sum would
/// serialize on the add latency).
#[inline(always)]
pub fn dot<T: crate::dtype::Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let mut lanes = [T::ZERO; 8];
    let (a8, b8) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let (ta, tb) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (&x, &y) in ta.iter().zip(tb) {
        s += x * y;
    }
    s
}

/// `Σ a ⊙ b ⊙ c` in eight independent lanes, combined as in [`dot`].
#[inline(always)]
pub fn dot3<T: crate::dtype::Float>(a: &[T], b: &[T], c: &[T]) -> T {
    let n = a.len().min(b.len()).min(c.len());
    let mut lanes = [T::ZERO; 8];
    let (a8, b8, c8) = (
        a[..n].chunks_exact(8),
        b[..n].chunks_exact(8),
        c[..n].chunks_exact(8),
    );
    let (ta, tb, tc) = (a8.remainder(), b8.remainder(), c8.remainder());
    for ((x, y), z) in a8.zip(b8).zip(c8) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l] * z[l];
        }
    }
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for ((&x, &y), &z) in ta.iter().zip(tb).zip(tc) {
        s += x * y * z;
    }
    s
}

/// Below this many elements an elementwise kernel runs on one thread (rayon's overhead would dominate).
pub const PARALLEL_THRESHOLD: usize = 1 << 15;

/// Asks glibc's allocator to keep freed memory for reuse instead of returning large blocks to the kernel, so
/// buffers that `recycle` does not keep (below its size, or beyond its limit, and every non-tensor vector)
/// are not fresh mappings whose pages fault in one by one. (Before `recycle`, page faults from op outputs were
/// about 8% of a training step in a profile.) A no-op on other platforms.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes allocator tuning parameters; both values are within glibc's limits
        // (the mmap threshold's maximum is 32 MiB on 64-bit).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}
