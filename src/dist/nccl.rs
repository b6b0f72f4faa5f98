//! The NCCL communicator (feature `cuda`): one process per GPU, collectives on the device buffers, enqueued on
//! the device's stream (so they run in order with the kernels that produced their inputs). NCCL is loaded at
//! run time; a missing library is an error naming it. Rank 0 makes a unique id with [`Nccl::unique_id`] and
//! the launcher hands it to every rank ([`Nccl::new`]).

use super::{check_chunks, check_root, Communicator};
use crate::backend::cuda::{gpu, Gpu};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::DType;
use cudarc::nccl::{result, sys};
use std::sync::{Arc, Mutex};

/// One rank of an NCCL communicator, bound to one GPU.
pub struct Nccl {
    comm: sys::ncclComm_t,
    gpu: Arc<Gpu>,
    rank: usize,
    size: usize,
    lock: Mutex<()>,
}

// SAFETY: the communicator handle is used under `lock` only, one call at a time, on the device's stream.
unsafe impl Send for Nccl {}
unsafe impl Sync for Nccl {}

/// An NCCL failure: its result code and the library's last message (the communicator may be null).
fn nccl_error(op: &'static str, comm: sys::ncclComm_t, e: result::NcclError) -> Error {
    // SAFETY: NCCL returns a NUL-terminated string it owns, valid until its next call on this thread.
    let text = unsafe { sys::ncclGetLastError(comm) };
    let detail = if text.is_null() {
        String::new()
    } else {
        // SAFETY: as above.
        unsafe { std::ffi::CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    };
    let msg = if detail.is_empty() {
        format!("NCCL: {:?}", e.0)
    } else {
        format!("NCCL: {:?}: {detail}", e.0)
    };
    Error::Comm { op, msg }
}

fn context_error(op: &'static str, e: cudarc::driver::DriverError) -> Error {
    Error::Comm {
        op,
        msg: format!("cannot bind the GPU for NCCL: {e}"),
    }
}

fn present(op: &'static str) -> Result<()> {
    // SAFETY: only tries to open the shared library by its soname.
    if unsafe { sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::Device {
            op,
            msg: "the NCCL library (libnccl.so) is not installed".into(),
        })
    }
}

impl Nccl {
    /// A fresh unique id for a new communicator (made on rank 0, given to every rank).
    pub fn unique_id() -> Result<[u8; 128]> {
        present("nccl unique id")?;
        let id = result::get_uniqueid()
            .map_err(|e| nccl_error("nccl unique id", std::ptr::null_mut(), e))?;
        Ok(id.internal.map(|c| c as u8))
    }

    /// Joins communicator `id` as rank `rank` of `size` on GPU `ordinal`.
    pub fn new(ordinal: usize, rank: usize, size: usize, id: [u8; 128]) -> Result<Nccl> {
        present("nccl init")?;
        if rank >= size {
            return Err(Error::invalid("nccl", format!("rank {rank} of {size}")));
        }
        let gpu = gpu(ordinal)?;
        gpu.stream()
            .context()
            .bind_to_thread()
            .map_err(|e| context_error("nccl init", e))?;
        let id = sys::ncclUniqueId {
            internal: id.map(|b| b as std::ffi::c_char),
        };
        let mut comm = std::mem::MaybeUninit::uninit();
        // SAFETY: `comm` receives the new handle; the id is the one every rank was given.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), size as i32, id, rank as i32)
                .map_err(|e| nccl_error("nccl init", std::ptr::null_mut(), e))?;
            comm.assume_init()
        };
        Ok(Nccl {
            comm,
            gpu,
            rank,
            size,
            lock: Mutex::new(()),
        })
    }

    /// The device address of a whole f32 buffer on this communicator's GPU.
    fn address(&self, op: &'static str, t: &Tensor) -> Result<u64> {
        let buffer = t.cuda_buffer().filter(|b| Arc::ptr_eq(b.gpu(), &self.gpu));
        let Some(buffer) = buffer else {
            return Err(Error::Device {
                op,
                msg: format!("NCCL moves buffers on cuda:{}", self.gpu.ordinal),
            });
        };
        if t.dtype() != DType::F32 || !t.is_contiguous() {
            return Err(Error::DType {
                op,
                msg: format!("collectives move contiguous f32, got {}", t.dtype()),
            });
        }
        Ok(buffer.ptr(t.layout().offset))
    }

    /// Runs one NCCL call on the device's stream.
    fn call(
        &self,
        op: &'static str,
        f: impl FnOnce(
            sys::ncclComm_t,
            sys::cudaStream_t,
        ) -> std::result::Result<result::NcclStatus, result::NcclError>,
    ) -> Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.gpu
            .stream()
            .context()
            .bind_to_thread()
            .map_err(|e| context_error(op, e))?;
        let stream = self.gpu.stream().cu_stream() as sys::cudaStream_t;
        f(self.comm, stream).map_err(|e| nccl_error(op, self.comm, e))?;
        Ok(())
    }

    /// A fresh f32 buffer of `shape` on this GPU.
    fn empty(&self, shape: &[usize]) -> Result<Tensor> {
        Tensor::zeros_on(shape, DType::F32, crate::Device::Cuda(self.gpu.ordinal))
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // SAFETY: the handle came from comm_init_rank and is not used after this.
        unsafe {
            let _ = result::comm_destroy(self.comm);
        }
    }
}

const F32: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat32;
const SUM: sys::ncclRedOp_t = sys::ncclRedOp_t::ncclSum;

impl Communicator for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn engine(&self) -> &'static str {
        "nccl"
    }
    fn all_reduce(&self, buf: &mut Tensor) -> Result<()> {
        buf.make_unique_on_device()?;
        let p = self.address("all_reduce", buf)? as *mut std::ffi::c_void;
        let n = buf.numel();
        // SAFETY: `p` addresses `n` f32 on this GPU, owned by `buf` alone.
        self.call("all_reduce", |c, s| unsafe {
            result::all_reduce(p, p, n, F32, SUM, c, s)
        })
    }
    fn reduce_scatter(&self, send: &Tensor, recv: &mut Tensor) -> Result<()> {
        check_chunks("reduce_scatter", send.numel(), recv.numel(), self.size)?;
        let send = send.contiguous()?;
        *recv = self.empty(recv.shape())?;
        let src = self.address("reduce_scatter", &send)? as *const std::ffi::c_void;
        let dst = self.address("reduce_scatter", recv)? as *mut std::ffi::c_void;
        let n = recv.numel();
        // SAFETY: `src` holds size · n f32 and `dst` n f32 on this GPU.
        self.call("reduce_scatter", |c, s| unsafe {
            result::reduce_scatter(src, dst, n, F32, SUM, c, s)
        })
    }
    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<()> {
        check_chunks("all_gather", recv.numel(), send.numel(), self.size)?;
        let send = send.contiguous()?;
        *recv = self.empty(recv.shape())?;
        let src = self.address("all_gather", &send)? as *const std::ffi::c_void;
        let dst = self.address("all_gather", recv)? as *mut std::ffi::c_void;
        let n = send.numel();
        // SAFETY: `src` holds n f32 and `dst` size · n f32 on this GPU.
        self.call("all_gather", |c, s| unsafe {
            result::all_gather(src, dst, n, F32, c, s)
        })
    }
    fn broadcast(&self, buf: &mut Tensor, root: usize) -> Result<()> {
        check_root(root, self.size)?;
        buf.make_unique_on_device()?;
        let p = self.address("broadcast", buf)? as *mut std::ffi::c_void;
        let n = buf.numel();
        // SAFETY: `p` addresses `n` f32 on this GPU, owned by `buf` alone.
        self.call("broadcast", |c, s| unsafe {
            result::broadcast(p, p, n, F32, root as i32, c, s)
        })
    }
    fn barrier(&self) -> Result<()> {
        let mut one = self.empty(&[1])?;
        self.all_reduce(&mut one)?;
        one.to_vec::<f32>().map(|_| ())
    }
    fn all_reduce_host(&self, values: &mut [f64]) -> Result<()> {
        let dev = crate::Device::Cuda(self.gpu.ordinal);
        let mut buf = Tensor::from_slice(values, &[values.len()])?.to_device(dev)?;
        buf.make_unique_on_device()?;
        let p = buf
            .cuda_buffer()
            .map(|b| b.ptr(buf.layout().offset))
            .ok_or_else(|| Error::Device {
                op: "all_reduce_host",
                msg: "upload failed".into(),
            })? as *mut std::ffi::c_void;
        let n = values.len();
        // SAFETY: `p` addresses `n` f64 on this GPU, owned by `buf` alone.
        self.call("all_reduce_host", |c, s| unsafe {
            result::all_reduce(p, p, n, sys::ncclDataType_t::ncclFloat64, SUM, c, s)
        })?;
        values.copy_from_slice(&buf.to_vec::<f64>()?);
        Ok(())
    }
}
