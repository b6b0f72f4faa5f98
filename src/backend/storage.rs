//! `Storage`: the elements of one tensor, in a typed host buffer or (feature `cuda`) a device buffer, and
//! `StorageElement`, typed access to them. Device-generic, so it sits in `backend` beside `Device`.

use crate::dtype::{DType, Element};
use half::{bf16, f16};

use crate::backend::cpu::recycle;

/// The storage of one tensor: a typed host buffer, or (with the `cuda` feature) a device buffer. Cloning
/// copies (copy-on-write goes through `Arc::make_mut`).
#[derive(Clone, Debug)]
pub enum Storage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
    /// Elements on a GPU.
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
            Storage::Cuda(b) => b.dtype(),
        }
    }

    /// Where the elements live.
    pub fn device(&self) -> crate::backend::Device {
        match self {
            Storage::Cuda(b) => crate::backend::Device::Cuda(b.ordinal()),
            _ => crate::backend::Device::Cpu,
        }
    }

    /// Whether the elements are in host memory.
    pub fn is_host(&self) -> bool {
        self.device() == crate::backend::Device::Cpu
    }

    /// Number of stored elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F64(v) => v.len(),
            Storage::BF16(v) => v.len(),
            Storage::F16(v) => v.len(),
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

    /// The host elements as `T`; a kernel's dtype dispatch makes them match, so a mismatch is a bug.
    pub(crate) fn host<T: StorageElement>(&self) -> &[T] {
        T::slice(self).unwrap_or_else(|| {
            panic!(
                "internal: {} storage on {} read as host {}",
                self.dtype(),
                self.device(),
                T::DTYPE
            )
        })
    }

    /// The host elements of the contiguous view `layout`, as `T`.
    pub(crate) fn host_contiguous<T: StorageElement>(&self, layout: &crate::shape::Layout) -> &[T] {
        assert!(
            layout.is_contiguous(),
            "internal: {:?} is not contiguous",
            layout.shape
        );
        &self.host::<T>()[layout.offset..layout.offset + layout.numel()]
    }

    /// The raw bytes, zero-copy; empty for a device buffer (copy it to the host first).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
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
