//! The CUDA backend's stand-in when the `cuda` feature is off: the launchers' names and signatures, with
//! `DeviceBuffer` and `Gpu` uninhabited. The dispatch code (`Storage`'s kernel methods) is then compiled and
//! type-checked in every build, and its GPU arms can never run; `gpu` says how to build the GPU backend.
//! A signature that drifts from `backend/cuda` fails the default build.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;
use std::sync::Arc;

/// Elements on a GPU: none without the `cuda` feature.
#[derive(Clone, Debug)]
pub enum DeviceBuffer {}

/// A GPU: none without the `cuda` feature.
#[derive(Debug)]
pub enum Gpu {}

impl DeviceBuffer {
    pub fn dtype(&self) -> DType {
        match *self {}
    }
    pub fn len(&self) -> usize {
        match *self {}
    }
    pub fn is_empty(&self) -> bool {
        match *self {}
    }
    pub fn gpu(&self) -> &Arc<Gpu> {
        match *self {}
    }
    pub fn ptr(&self, _offset: usize) -> u64 {
        match *self {}
    }
    pub fn download(&self) -> Result<Vec<u8>> {
        match *self {}
    }
    pub fn ordinal(&self) -> usize {
        match *self {}
    }
}

impl Gpu {
    pub fn upload(self: &Arc<Self>, _dtype: DType, _bytes: &[u8]) -> Result<DeviceBuffer> {
        match **self {}
    }
    pub fn alloc(&self, _dtype: DType, _len: usize) -> Result<DeviceBuffer> {
        match *self {}
    }
}

/// GPU `ordinal`: an error naming the feature to build with.
pub fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    Err(Error::Device {
        op: "device",
        msg: format!("cuda:{ordinal} is not available in this build (build with --features cuda)"),
    })
}

pub(crate) mod unary {
    use super::{DeviceBuffer, Layout, Result};
    pub(crate) fn forward(x: &DeviceBuffer, _: &Layout, _: i32, _: f64) -> Result<DeviceBuffer> {
        match *x {}
    }
    pub(crate) fn backward(
        g: &DeviceBuffer,
        _: &Layout,
        _: &DeviceBuffer,
        _: &Layout,
        _: i32,
        _: f64,
    ) -> Result<DeviceBuffer> {
        match *g {}
    }
}

pub(crate) mod binary {
    use super::{DeviceBuffer, Layout, Result};
    pub(crate) fn forward(
        a: &DeviceBuffer,
        _: &Layout,
        _: &DeviceBuffer,
        _: &Layout,
        _: i32,
    ) -> Result<DeviceBuffer> {
        match *a {}
    }
}

pub(crate) mod copy {
    use super::{Arc, DType, DeviceBuffer, Gpu, Layout, Result};
    pub(crate) fn copy_into(
        src: &DeviceBuffer,
        _: &Layout,
        _: &DeviceBuffer,
        _: &Layout,
    ) -> Result<()> {
        match *src {}
    }
    pub(crate) fn fill(gpu: &Arc<Gpu>, _: DType, _: usize, _: f64) -> Result<DeviceBuffer> {
        match **gpu {}
    }
}

pub(crate) mod reduce {
    use super::{DeviceBuffer, Layout, Result};
    pub(crate) fn reduce(
        x: &DeviceBuffer,
        _: &Layout,
        _: &Layout,
        _: bool,
    ) -> Result<(DeviceBuffer, Option<DeviceBuffer>)> {
        match *x {}
    }
    pub(crate) fn max_backward(
        g: &DeviceBuffer,
        _: &Layout,
        _: &DeviceBuffer,
        _: &Layout,
        _: &Layout,
    ) -> Result<DeviceBuffer> {
        match *g {}
    }
}

pub(crate) mod softmax {
    use super::{DeviceBuffer, Layout, Result};
    pub(crate) fn forward(x: &DeviceBuffer, _: &Layout, _: bool) -> Result<DeviceBuffer> {
        match *x {}
    }
}

pub(crate) mod dequant {
    use super::{DType, DeviceBuffer, Result};
    use crate::io::gguf::GgmlType;
    pub(crate) fn dequantize(
        blocks: &DeviceBuffer,
        _: GgmlType,
        _: usize,
        _: DType,
    ) -> Result<DeviceBuffer> {
        match *blocks {}
    }
}

pub(crate) mod embedding {
    use super::{DeviceBuffer, Layout, Result};
    pub(crate) fn forward(w: &DeviceBuffer, _: &Layout, _: &[u32]) -> Result<DeviceBuffer> {
        match *w {}
    }
    pub(crate) fn backward(
        g: &DeviceBuffer,
        _: &Layout,
        _: &[u32],
        _: usize,
        _: usize,
    ) -> Result<DeviceBuffer> {
        match *g {}
    }
}

pub(crate) mod rope {
    use super::{Arc, DeviceBuffer, Layout, Result};
    pub(crate) fn rotate(
        x: &DeviceBuffer,
        _: &Layout,
        _: &Arc<Vec<f64>>,
        _: &Arc<Vec<f64>>,
        _: usize,
        _: f64,
    ) -> Result<DeviceBuffer> {
        match *x {}
    }
}

pub(crate) mod cross_entropy {
    use super::{DeviceBuffer, Layout, Result};
    use crate::backend::Labels;
    pub(crate) fn forward(
        x: &DeviceBuffer,
        _: &Layout,
        _: &Labels,
    ) -> Result<(DeviceBuffer, DeviceBuffer)> {
        match *x {}
    }
    pub(crate) fn backward(
        (x, _): (&DeviceBuffer, &Layout),
        _: (&DeviceBuffer, &Layout),
        _: (&DeviceBuffer, &Layout),
        _: &Labels,
        _: f64,
    ) -> Result<DeviceBuffer> {
        match *x {}
    }
}

pub(crate) mod blas {
    use super::{DeviceBuffer, Layout, Result};
    pub(crate) fn matmul(
        (a, _): (&DeviceBuffer, &Layout),
        _: (&DeviceBuffer, &Layout),
        _: &[usize],
    ) -> Result<DeviceBuffer> {
        match *a {}
    }
}

pub(crate) mod rmsnorm {
    use super::{DeviceBuffer, Layout, Result};
    type View<'a> = (&'a DeviceBuffer, &'a Layout);
    pub(crate) fn forward((x, _): View, _: View, _: f64) -> Result<(DeviceBuffer, DeviceBuffer)> {
        match *x {}
    }
    pub(crate) fn backward(
        (x, _): View,
        _: View,
        _: View,
        _: View,
    ) -> Result<(DeviceBuffer, DeviceBuffer)> {
        match *x {}
    }
}

pub(crate) mod swiglu {
    use super::{DeviceBuffer, Layout, Result};
    type View<'a> = (&'a DeviceBuffer, &'a Layout);
    pub(crate) fn forward((a, _): View, _: View) -> Result<DeviceBuffer> {
        match *a {}
    }
    pub(crate) fn backward((a, _): View, _: View, _: View) -> Result<(DeviceBuffer, DeviceBuffer)> {
        match *a {}
    }
}

pub mod attention {
    use super::{DeviceBuffer, Layout, Result};
    use crate::backend::Geometry;
    type View<'a> = (&'a DeviceBuffer, &'a Layout);

    /// Head dims with a flash-attention kernel: none without the GPU backend.
    pub fn has_kernel(_d: usize) -> bool {
        false
    }

    pub(crate) fn forward(
        (q, _): View,
        _: View,
        _: View,
        _: &Geometry,
    ) -> Result<(DeviceBuffer, DeviceBuffer)> {
        match *q {}
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        (q, _): View,
        _: View,
        _: View,
        _: View,
        _: View,
        _: View,
        _: &Geometry,
    ) -> Result<(DeviceBuffer, DeviceBuffer, DeviceBuffer)> {
        match *q {}
    }
}
