//! The CUDA backend (cargo feature `cuda`, or `cuda12` for CUDA 12 drivers): one context and one stream per
//! device, a caching allocator (`backend::pool`), kernel modules compiled by NVRTC once per process and
//! architecture, and cuBLAS for matrix products.
//!
//! CUDA libraries are loaded at run time. A missing driver library, NVRTC, cuBLAS or GPU is an `Error::Device`
//! naming what is missing; nothing here panics for want of a library.

pub mod adamw;
pub mod attention;
pub(crate) mod binary;
pub mod blas;
pub(crate) mod copy;
pub(crate) mod cross_entropy;
pub(crate) mod dequant;
pub(crate) mod embedding;
pub(crate) mod launch;
pub mod nvrtc;
pub(crate) mod reduce;
pub(crate) mod rmsnorm;
pub(crate) mod rope;
pub(crate) mod softmax;
pub(crate) mod swiglu;
pub(crate) mod unary;

use super::pool::{Pool, PoolStats, RawAlloc};
use crate::dtype::DType;
use crate::error::{Error, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg,
};
use nvrtc::Arch;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

fn device_error(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Device {
        op,
        msg: e.to_string(),
    }
}

/// The driver side of a device's pool.
pub struct Driver {
    stream: Arc<CudaStream>,
}

impl RawAlloc for Driver {
    type Block = CudaSlice<u8>;
    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        // SAFETY: the bytes are uninitialized; every user writes a buffer before reading it.
        unsafe { self.stream.alloc::<u8>(bytes) }.map_err(|e| device_error("alloc", e))
    }
}

/// One GPU: context, stream, cuBLAS handle, pool and compiled kernel modules.
pub struct Gpu {
    pub ordinal: usize,
    pub arch: Arch,
    pub name: String,
    stream: Arc<CudaStream>,
    blas: Mutex<CudaBlas>,
    pool: Pool<Driver>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Each kernel loaded so far, with the dynamic shared memory it may use (raised, never lowered).
    functions: Mutex<HashMap<&'static str, HashMap<String, Kernel>>>,
    /// The most dynamic shared memory a block may use here (the device's opt-in limit).
    max_shared: u32,
}

struct Kernel {
    function: CudaFunction,
    shared_limit: u32,
}

/// The driver's launch limits (grid y and z, block size, shared memory) checked before a launch, so a size
/// past them is an error naming the kernel and the size rather than the driver's "invalid argument".
fn check_launch(family: &str, name: &str, config: &LaunchConfig, max_shared: u32) -> Result<()> {
    let (gx, gy, gz) = config.grid_dim;
    let (bx, by, bz) = config.block_dim;
    let fault = if gx == 0 || gy == 0 || gz == 0 || gx > i32::MAX as u32 || gy > 65535 || gz > 65535
    {
        Some(format!(
            "grid ({gx}, {gy}, {gz}) is outside the device's limits (x up to 2³¹ − 1, y and z up to 65,535)"
        ))
    } else if bx == 0 || by == 0 || bz == 0 || u64::from(bx) * u64::from(by) * u64::from(bz) > 1024
    {
        Some(format!(
            "block ({bx}, {by}, {bz}) is outside the device's limit of 1,024 threads"
        ))
    } else if config.shared_mem_bytes > max_shared {
        Some(format!(
            "{} bytes of shared memory exceed the device's {max_shared} bytes a block",
            config.shared_mem_bytes
        ))
    } else {
        None
    };
    match fault {
        Some(msg) => Err(Error::Device {
            op: "launch",
            msg: format!("{family}/{name}: {msg}"),
        }),
        None => Ok(()),
    }
}

static GPUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();

/// Whether the CUDA driver library can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the shared library by its soname.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Why no GPU can be used here, or `None` when one can.
pub fn unavailable() -> Option<String> {
    if !driver_present() {
        return Some("the CUDA driver library (libcuda.so) is not installed".into());
    }
    match CudaContext::device_count() {
        Ok(0) => Some("the CUDA driver reports no GPU".into()),
        Ok(_) => None,
        Err(e) => Some(format!("the CUDA driver failed to start: {e}")),
    }
}

/// The GPU `ordinal`, initialized on first use.
pub fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    let registry = GPUS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut gpus = registry.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(g) = gpus.get(&ordinal) {
        return Ok(g.clone());
    }
    let g = Arc::new(Gpu::open(ordinal)?);
    gpus.insert(ordinal, g.clone());
    Ok(g)
}

impl Gpu {
    fn open(ordinal: usize) -> Result<Gpu> {
        if let Some(why) = unavailable() {
            return Err(Error::Device {
                op: "cuda",
                msg: format!("cannot use cuda:{ordinal}: {why}"),
            });
        }
        let count = CudaContext::device_count().map_err(|e| device_error("cuda", e))?;
        if ordinal >= count as usize {
            return Err(Error::Device {
                op: "cuda",
                msg: format!("cuda:{ordinal} does not exist ({count} GPUs)"),
            });
        }
        // SAFETY: only tries to open the shared library by its soname.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Device {
                op: "cuda",
                msg: "the cuBLAS library (libcublas.so) is not on LD_LIBRARY_PATH".into(),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| device_error("cuda", e))?;
        // One stream orders everything, so cudarc's per-buffer events are not needed.
        // SAFETY: no other stream of this context touches our buffers.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| device_error("cuda", e))?;
        let arch = Arch::for_capability(major, minor)?;
        let name = ctx.name().map_err(|e| device_error("cuda", e))?;
        let max_shared = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .map_err(|e| device_error("cuda", e))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| device_error("cublas", e))?;
        Ok(Gpu {
            ordinal,
            arch,
            name,
            pool: Pool::new(Driver {
                stream: stream.clone(),
            }),
            stream,
            blas: Mutex::new(blas),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            max_shared: u32::try_from(max_shared).unwrap_or(0),
        })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Runs `f` with the cuBLAS handle (bound to this device's stream).
    pub fn with_blas<R>(&self, f: impl FnOnce(&CudaBlas) -> R) -> R {
        f(&self.blas.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The pool's figures: bytes in use by tensors, peak, reserved from the driver.
    pub fn memory(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Starts a new peak window of the pool.
    pub fn reset_peak(&self) {
        self.pool.reset_peak();
    }

    /// Waits for every queued kernel and copy.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| device_error("synchronize", e))
    }

    /// The kernel `name` of family `family`, compiling the family on first use, allowed `shared` bytes of
    /// dynamic shared memory. The default limit is 48 KiB minus the kernel's static shared memory; it is raised
    /// under the lock and never lowered, so launches from two threads cannot shrink each other's limit.
    fn function(&self, family: &'static str, name: &str, shared: u32) -> Result<CudaFunction> {
        let mut functions = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        let functions = functions.entry(family).or_default();
        if !functions.contains_key(name) {
            let module = self.module(family)?;
            let function = module.load_function(name).map_err(|e| Error::Device {
                op: "cuda",
                msg: format!("kernel {name} not found in kernels/{family}.cu: {e}"),
            })?;
            functions.insert(
                name.to_string(),
                Kernel {
                    function,
                    shared_limit: 0,
                },
            );
        }
        let kernel = functions.get_mut(name).expect("inserted above");
        if shared > kernel.shared_limit {
            kernel
                .function
                .set_attribute(
                    cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared as i32,
                )
                .map_err(|e| Error::Device {
                    op: "launch",
                    msg: format!("{family}/{name}: allowing {shared} bytes of dynamic shared memory: {e}"),
                })?;
            kernel.shared_limit = shared;
        }
        Ok(kernel.function.clone())
    }

    /// The module of kernel family `family`, compiled by NVRTC on first use.
    fn module(&self, family: &'static str) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(family) {
            return Ok(m.clone());
        }
        let ptx = nvrtc::compile(family, self.arch)?;
        let m = self
            .stream
            .context()
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|e| device_error("load kernels", e))?;
        modules.insert(family, m.clone());
        Ok(m)
    }

    /// Launches kernel `name` of `family` with `args` (in the kernel's parameter order).
    pub fn launch(
        &self,
        family: &'static str,
        name: &str,
        config: LaunchConfig,
        args: &[Arg],
    ) -> Result<()> {
        check_launch(family, name, &config, self.max_shared)?;
        let f = self.function(family, name, config.shared_mem_bytes)?;
        let mut builder = self.stream.launch_builder(&f);
        for a in args {
            match a {
                Arg::Ptr(p) => builder.arg(p),
                Arg::I32(v) => builder.arg(v),
                Arg::I64(v) => builder.arg(v),
                Arg::F32(v) => builder.arg(v),
                Arg::F64(v) => builder.arg(v),
                Arg::Strided(v) => builder.arg(v),
            };
        }
        // SAFETY: the argument list matches the kernel's parameters (each launcher is written against the
        // kernel's signature) and every pointer is a live buffer of this device, kept alive by the caller
        // until the stream has run the kernel (buffers return to the pool only in stream order).
        unsafe { builder.launch(config) }
            .map(|_| ())
            .map_err(|e| Error::Device {
                op: "launch",
                msg: format!("{family}/{name}: {e}"),
            })
    }

    /// An uninitialized buffer of `len` elements of `dtype` on this device.
    pub fn alloc(self: &Arc<Self>, dtype: DType, len: usize) -> Result<DeviceBuffer> {
        let bytes = (len * dtype.size_in_bytes()).max(1);
        let (block, class) = self.pool.acquire(bytes)?;
        Ok(DeviceBuffer {
            block: Some(block),
            class,
            dtype,
            len,
            gpu: self.clone(),
        })
    }

    /// A buffer of `len` zeros of `dtype` on this device.
    pub fn alloc_zeroed(self: &Arc<Self>, dtype: DType, len: usize) -> Result<DeviceBuffer> {
        let mut buf = self.alloc(dtype, len)?;
        let bytes = len * dtype.size_in_bytes();
        let block = buf.block.as_mut().expect("a live buffer has its block");
        self.stream
            .memset_zeros(&mut block.slice_mut(..bytes.max(1)))
            .map_err(|e| device_error("zeros", e))?;
        Ok(buf)
    }

    /// A buffer holding `bytes` (the raw little-endian elements of `dtype`).
    pub fn upload(self: &Arc<Self>, dtype: DType, bytes: &[u8]) -> Result<DeviceBuffer> {
        let mut buf = self.alloc(dtype, bytes.len() / dtype.size_in_bytes())?;
        let block = buf.block.as_mut().expect("a live buffer has its block");
        let mut view = block.slice_mut(..bytes.len());
        self.stream
            .memcpy_htod(bytes, &mut view)
            .map_err(|e| device_error("to_device", e))?;
        Ok(buf)
    }
}

/// One kernel argument.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device address.
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// A strided view, passed by value (`tg::Strided` in `kernels/common.cuh`).
    Strided(Strided),
}

/// The most dims a strided kernel argument carries.
pub const MAX_DIMS: usize = 6;

/// A view's shape, element strides and offset, as kernels receive it (`tg::Strided`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strided {
    pub ndim: i32,
    pub _pad: i32,
    pub shape: [i64; MAX_DIMS],
    pub strides: [i64; MAX_DIMS],
    pub offset: i64,
}

// SAFETY: `Strided` is plain old data with a C layout matching `tg::Strided`.
unsafe impl cudarc::driver::DeviceRepr for Strided {}

impl Strided {
    /// The view of `layout`, or an error when it has more than `MAX_DIMS` dims.
    pub fn of(layout: &crate::shape::Layout) -> Result<Strided> {
        let n = layout.shape.len();
        if n > MAX_DIMS {
            return Err(Error::shape(
                "cuda",
                format!(
                    "a view of {n} dims {:?}; kernels take at most {MAX_DIMS}",
                    layout.shape
                ),
            ));
        }
        let mut s = Strided {
            ndim: n as i32,
            _pad: 0,
            shape: [1; MAX_DIMS],
            strides: [0; MAX_DIMS],
            offset: layout.offset as i64,
        };
        for d in 0..n {
            s.shape[d] = layout.shape[d] as i64;
            s.strides[d] = layout.strides[d] as i64;
        }
        Ok(s)
    }
}

/// A tensor's elements on a GPU; the block returns to the device's pool when dropped.
pub struct DeviceBuffer {
    block: Option<CudaSlice<u8>>,
    class: usize,
    dtype: DType,
    len: usize,
    gpu: Arc<Gpu>,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer(cuda:{}, {} x {})",
            self.gpu.ordinal, self.len, self.dtype
        )
    }
}

impl DeviceBuffer {
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The ordinal of the GPU holding it.
    pub fn ordinal(&self) -> usize {
        self.gpu.ordinal
    }

    /// The device address of element `offset`.
    pub fn ptr(&self, offset: usize) -> u64 {
        let block = self.block.as_ref().expect("a live buffer has its block");
        let (base, _sync) = block.device_ptr(&self.gpu.stream);
        base + (offset * self.dtype.size_in_bytes()) as u64
    }

    /// The raw bytes, copied to the host (waits for the stream).
    pub fn download(&self) -> Result<Vec<u8>> {
        let bytes = self.len * self.dtype.size_in_bytes();
        let block = self.block.as_ref().expect("a live buffer has its block");
        let mut out = vec![0u8; bytes];
        self.gpu
            .stream
            .memcpy_dtoh(&block.slice(..bytes), &mut out)
            .map_err(|e| device_error("to_host", e))?;
        Ok(out)
    }

    /// A copy on the same device.
    pub fn try_clone(&self) -> Result<DeviceBuffer> {
        let mut out = self.gpu.alloc(self.dtype, self.len)?;
        let bytes = self.len * self.dtype.size_in_bytes();
        let src = self.block.as_ref().expect("a live buffer has its block");
        let dst = out.block.as_mut().expect("a live buffer has its block");
        self.gpu
            .stream
            .memcpy_dtod(&src.slice(..bytes), &mut dst.slice_mut(..bytes))
            .map_err(|e| device_error("copy", e))?;
        Ok(out)
    }
}

impl Clone for DeviceBuffer {
    /// Copy-on-write clones; `Tensor::data_mut` refuses device tensors first, so this runs only where a
    /// device copy is wanted and cannot be reported otherwise.
    fn clone(&self) -> DeviceBuffer {
        self.try_clone()
            .unwrap_or_else(|e| panic!("copying a device buffer: {e}"))
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            self.gpu.pool.release(block, self.class);
        }
    }
}

/// A launch configuration of `grid` × `block` threads with `shared` bytes of dynamic shared memory.
pub fn config(grid: (u32, u32, u32), block: u32, shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: shared,
    }
}
