//! Data-parallel training across ranks (processes, or threads in tests): one [`Communicator`] trait over the
//! engines clusters run — MPI on CPU clusters (feature `mpi`), NCCL between GPUs (feature `cuda`) — plus a
//! single-process one and an in-process thread group, so the training loop has one code path.
//!
//! - [`Group`] runs a communicator's collectives on a thread of their own, so gradient buckets are reduced
//!   while backward goes on, and turns a collective that does not complete within a timeout (a rank died or
//!   stalled) into an [`Error::Comm`](crate::Error) instead of a hang.
//! - [`Buckets`] and [`GradSync`] group gradients (in reverse parameter order, the order backward finishes
//!   them) and launch each bucket's reduction as soon as its last gradient is final.
//! - [`ZeroAdamW`] shards the AdamW moments across ranks (ZeRO stage 1): reduce-scatter of the gradients,
//!   update of the local shard, all-gather of the parameters.
//!
//! Every collective takes whole f32 buffers on the communicator's device (host memory for MPI and threads,
//! the GPU for NCCL); sums are in f32, averages are sums scaled by `1 / size`.

mod group;
pub mod launch;
mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "cuda-backend")]
pub mod nccl;
mod sync;
mod zero;

pub use group::{Completed, Group, Out};
pub use launch::{launch, Engine, Launched};
pub use local::{Single, ThreadGroup};
pub use sync::{Buckets, GradSync, Reduce, Synced};
pub use zero::ZeroAdamW;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The collectives data-parallel training needs. Ranks must call them in the same order.
pub trait Communicator: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// What carries the traffic ("single", "threads", "mpi", "nccl"), for reports and errors.
    fn engine(&self) -> &'static str;
    /// Sums `buf` (f32 `[n]`, a whole buffer) over all ranks, in place.
    fn all_reduce(&self, buf: &mut Tensor) -> Result<()>;
    /// `send`: `[size · n]`; `recv`: `[n]`, which receives the sum over ranks of chunk `rank` of `send`.
    fn reduce_scatter(&self, send: &Tensor, recv: &mut Tensor) -> Result<()>;
    /// `send`: `[n]`; `recv`: `[size · n]`, whose chunk `r` receives rank `r`'s `send`.
    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<()>;
    /// Copies `buf` of rank `root` into `buf` on every rank.
    fn broadcast(&self, buf: &mut Tensor, root: usize) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Sums a few host values over all ranks, in place (losses, norms, token counts).
    fn all_reduce_host(&self, values: &mut [f64]) -> Result<()>;
}

/// Checks the buffer lengths of a reduce-scatter or all-gather: `long` must be `size · short`.
pub(crate) fn check_chunks(op: &'static str, long: usize, short: usize, size: usize) -> Result<()> {
    if long != short * size {
        return Err(Error::shape(
            op,
            format!("[{long}] is not {size} chunks of [{short}]"),
        ));
    }
    Ok(())
}

/// Checks a broadcast's root.
pub(crate) fn check_root(root: usize, size: usize) -> Result<()> {
    if root >= size {
        return Err(Error::invalid(
            "broadcast",
            format!("root {root} of {size} ranks"),
        ));
    }
    Ok(())
}

/// The f32 elements of a host tensor, for the host engines.
pub(crate) fn host_f32(op: &'static str, t: &Tensor) -> Result<Vec<f32>> {
    if t.is_cuda() {
        return Err(Error::Device {
            op,
            msg: "this engine moves host buffers; the tensor is on a GPU".into(),
        });
    }
    if t.dtype() != crate::DType::F32 {
        return Err(Error::DType {
            op,
            msg: format!("collectives move f32, got {}", t.dtype()),
        });
    }
    t.to_vec::<f32>()
}

/// How ranks and the world size are told to a process by its launcher: Open MPI's, MPICH's or the
/// `RANK` / `WORLD_SIZE` convention, in that order; `(0, 1)` when none is set.
pub fn launcher_rank_and_size() -> (usize, usize) {
    let read = |name: &str| std::env::var(name).ok()?.parse::<usize>().ok();
    for (rank, size) in [
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
        ("RANK", "WORLD_SIZE"),
    ] {
        if let (Some(r), Some(s)) = (read(rank), read(size)) {
            if r < s {
                return (r, s);
            }
        }
    }
    (0, 1)
}
