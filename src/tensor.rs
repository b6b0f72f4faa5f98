//! `Tensor`: a cheap handle — shared storage + layout (shape, strides, offset) + an optional tape track.
//! Views share storage; clones are reference counts; the only in-place writes go through copy-on-write
//! (`data_mut`), so a tensor saved on a tape can never change under it.
//!
//! This file holds creation and inspection only. Every op adds its method to `Tensor` in its own file under
//! `ops/`; the tape knows tensors only through the `Track` they carry.

use crate::backend::memory::Counted;
use crate::backend::StorageElement;
use crate::backend::{Device, Storage};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::shape::Layout;
use crate::tape::{Recipe, Track};
use half::{bf16, f16};
use std::sync::Arc;

/// An n-dimensional array, optionally recorded on a tape.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) storage: Arc<Counted>,
    pub(crate) layout: Layout,
    pub(crate) track: Option<Track>,
    /// How to recompute this tensor, when it was produced under a save policy that does not keep it.
    pub(crate) recipe: Option<Arc<Recipe>>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {}", self.shape(), self.dtype())?;
        if let Some(t) = &self.track {
            write!(f, ", node {}", t.id)?;
        }
        f.write_str(")")
    }
}

impl Tensor {
    /// A contiguous tensor over `data` with `shape`.
    pub fn from_vec<T: StorageElement>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(Error::shape(
                "from_vec",
                format!("{} elements cannot have shape {shape:?}", data.len()),
            ));
        }
        Ok(Tensor::from_storage(T::wrap(data), shape))
    }

    /// A contiguous tensor copied from `data`.
    pub fn from_slice<T: StorageElement>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A scalar (shape `[]`).
    pub fn scalar(value: f64, dtype: DType) -> Tensor {
        Tensor::full(&[], value, dtype)
    }

    pub(crate) fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        debug_assert_eq!(storage.len(), shape.iter().product::<usize>());
        Tensor {
            storage: Arc::new(Counted::new(storage)),
            layout: Layout::contiguous(shape),
            track: None,
            recipe: None,
        }
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_storage(Storage::filled(dtype, n, value), shape)
    }

    /// Zeros.
    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(shape, 0.0, dtype)
    }

    /// A tensor of `shape` filled with `value` (rounded to `dtype`) on `device`: `full` on the host, a fill
    /// kernel on a GPU. Errors name a device that is not built in or not present.
    pub fn full_on(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        let n = shape.iter().product();
        Ok(Tensor::from_storage(
            crate::backend::filled(n, value, dtype, device)?,
            shape,
        ))
    }

    /// Zeros of `shape` on `device` (see `full_on`).
    pub fn zeros_on(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full_on(shape, 0.0, dtype, device)
    }

    /// Ones.
    pub fn ones(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(shape, 1.0, dtype)
    }

    /// Normal samples with mean 0 and standard deviation `std`, from the crate's own seeded generator.
    pub fn randn(shape: &[usize], std: f64, dtype: DType, rng: &mut Rng) -> Tensor {
        let n: usize = shape.iter().product();
        let values: Vec<f64> = (0..n).map(|_| rng.normal() * std).collect();
        Tensor::from_f64_values(&values, shape, dtype)
    }

    /// Uniform samples in `[low, high)`.
    pub fn uniform(shape: &[usize], low: f64, high: f64, dtype: DType, rng: &mut Rng) -> Tensor {
        let n: usize = shape.iter().product();
        let values: Vec<f64> = (0..n).map(|_| low + (high - low) * rng.uniform()).collect();
        Tensor::from_f64_values(&values, shape, dtype)
    }

    /// A tensor of `dtype` from f64 values (rounded to the dtype).
    pub fn from_f64_values(values: &[f64], shape: &[usize], dtype: DType) -> Tensor {
        let storage = match dtype {
            DType::F32 => Storage::F32(values.iter().map(|&v| v as f32).collect()),
            DType::F64 => Storage::F64(values.to_vec()),
            DType::BF16 => Storage::BF16(values.iter().map(|&v| bf16::from_f64(v)).collect()),
            DType::F16 => Storage::F16(values.iter().map(|&v| f16::from_f64(v)).collect()),
        };
        Tensor::from_storage(storage, shape)
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }

    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.layout.strides
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.layout.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }

    /// Size of dimension `d`.
    pub fn dim(&self, d: usize) -> usize {
        self.layout.shape[d]
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// Where the tensor lives.
    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// An error naming `op` unless the tensor is in host memory.
    fn host_only(&self, op: &'static str) -> Result<()> {
        if self.is_cuda() {
            return Err(Error::Device {
                op,
                msg: format!(
                    "the tensor is on {}; move it to the cpu first",
                    self.device()
                ),
            });
        }
        Ok(())
    }

    /// Whether the elements are on a GPU.
    pub fn is_cuda(&self) -> bool {
        !self.storage.is_host()
    }

    /// The device buffer of a GPU tensor.
    #[cfg(feature = "cuda-backend")]
    pub(crate) fn cuda_buffer(&self) -> Option<&crate::backend::cuda::DeviceBuffer> {
        match &**self.storage {
            Storage::Cuda(b) => Some(b),
            _ => None,
        }
    }

    /// The device buffer of a GPU tensor with its layout, or an error naming `op`.
    #[cfg(feature = "cuda-backend")]
    pub(crate) fn device_view(
        &self,
        op: &'static str,
    ) -> Result<(&crate::backend::cuda::DeviceBuffer, &Layout)> {
        let buffer = self.cuda_buffer().ok_or_else(|| Error::Device {
            op,
            msg: format!("expected a tensor on a GPU, got one on {}", self.device()),
        })?;
        Ok((buffer, &self.layout))
    }

    /// Makes this tensor the only owner of its device buffer (copying it when shared), so a kernel may update
    /// it in place without changing a tensor saved elsewhere.
    #[cfg(feature = "cuda-backend")]
    pub(crate) fn make_unique_on_device(&mut self) -> Result<()> {
        self.recipe = None;
        if Arc::get_mut(&mut self.storage).is_none() {
            let copy = match &**self.storage {
                Storage::Cuda(b) => b.try_clone()?,
                _ => {
                    return Err(Error::Device {
                        op: "update",
                        msg: "a cpu tensor reached a device update".into(),
                    })
                }
            };
            self.storage = Arc::new(Counted::new(Storage::Cuda(copy)));
        }
        Ok(())
    }

    /// The layout (shape, strides, offset).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether the elements lie row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// Whether this tensor is recorded on a tape (gradients will flow to or through it).
    pub fn is_tracked(&self) -> bool {
        self.track.is_some()
    }

    /// The same data, not recorded on any tape.
    pub fn detach(&self) -> Tensor {
        Tensor {
            storage: self.storage.clone(),
            layout: self.layout.clone(),
            track: None,
            recipe: self.recipe.clone(),
        }
    }

    /// Whether two tensors share one storage buffer.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The elements in logical row-major order; `T` must be the stored dtype. Reading values records nothing,
    /// so it works after the tensor's tape has run backward (this and the readers below detach first).
    pub fn to_vec<T: StorageElement>(&self) -> Result<Vec<T>> {
        if self.is_cuda() {
            return self.detach().to_device(Device::Cpu)?.to_vec();
        }
        let data = T::slice(&self.storage).ok_or_else(|| Error::DType {
            op: "to_vec",
            msg: format!("tensor is {} but {} was asked for", self.dtype(), T::DTYPE),
        })?;
        if self.is_contiguous() {
            let start = self.layout.offset;
            return Ok(data[start..start + self.numel()].to_vec());
        }
        Ok(self.layout.offsets().map(|o| data[o]).collect())
    }

    /// The elements as f64 in logical order, whatever the dtype.
    ///
    /// A GPU tensor is copied to the host first (panics if that copy fails; `to_vec` reports it instead).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        if self.is_cuda() {
            return self
                .detach()
                .to_device(Device::Cpu)
                .unwrap_or_else(|e| panic!("to_f64_vec: {e}"))
                .to_f64_vec();
        }
        fn collect<T: StorageElement>(t: &Tensor) -> Vec<f64> {
            let data = T::slice(&t.storage).expect("dtype matched");
            t.layout.offsets().map(|o| data[o].to_f64()).collect()
        }
        match self.dtype() {
            DType::F32 => collect::<f32>(self),
            DType::F64 => collect::<f64>(self),
            DType::BF16 => collect::<bf16>(self),
            DType::F16 => collect::<f16>(self),
        }
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                format!("tensor of shape {:?} is not a single value", self.shape()),
            ));
        }
        if self.is_cuda() {
            return self.detach().to_device(Device::Cpu)?.item();
        }
        Ok(self.to_f64_vec()[0])
    }

    /// The raw little-endian bytes of a contiguous tensor, zero-copy.
    pub fn as_bytes(&self) -> Result<&[u8]> {
        self.host_only("as_bytes")?;
        if !self.is_contiguous() {
            return Err(Error::shape(
                "as_bytes",
                format!(
                    "tensor of shape {:?} is a non-contiguous view",
                    self.shape()
                ),
            ));
        }
        let size = self.dtype().size_in_bytes();
        let start = self.layout.offset * size;
        Ok(&self.storage.as_bytes()[start..start + self.numel() * size])
    }

    /// The whole storage slice of dtype `T` (kernels index it through the layout). Panics on a dtype mismatch,
    /// which callers rule out by dispatching on `dtype()` first.
    pub(crate) fn data<T: StorageElement>(&self) -> &[T] {
        T::slice(&self.storage).unwrap_or_else(|| {
            panic!(
                "internal: tensor is {} but read as {}",
                self.dtype(),
                T::DTYPE
            )
        })
    }

    /// The logical elements of a contiguous tensor.
    pub(crate) fn contiguous_data<T: StorageElement>(&self) -> &[T] {
        assert!(
            self.is_contiguous(),
            "internal: {:?} is not contiguous",
            self.shape()
        );
        let start = self.layout.offset;
        &self.data::<T>()[start..start + self.numel()]
    }

    /// Mutable access to the elements of a contiguous tensor that spans its whole storage. Copies the storage
    /// first if anything else shares it (copy-on-write), so saved tensors are never changed.
    pub fn data_mut<T: StorageElement>(&mut self) -> Result<&mut [T]> {
        self.host_only("data_mut")?;
        if !self.is_contiguous() || self.layout.offset != 0 || self.numel() != self.storage.len() {
            return Err(Error::shape(
                "data_mut",
                format!(
                    "tensor of shape {:?} is a view, not a whole buffer",
                    self.shape()
                ),
            ));
        }
        let dtype = self.dtype();
        self.recipe = None;
        T::slice_mut(&mut *Arc::make_mut(&mut self.storage)).ok_or_else(|| Error::DType {
            op: "data_mut",
            msg: format!("tensor is {dtype} but {} was asked for", T::DTYPE),
        })
    }

    /// A view with another layout over the same storage, untracked (the op that makes it records the node).
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor {
            storage: self.storage.clone(),
            layout,
            track: None,
            recipe: self.recipe.clone(),
        }
    }
}
