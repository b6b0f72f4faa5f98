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

/// Checks that `n` elements fit an MPI count (a C int).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn check_count(op: &'static str, n: usize) -> Result<()> {
    if n > i32::MAX as usize {
        return Err(Error::shape(
            op,
            format!("{n} elements pass MPI's count limit of {}", i32::MAX),
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
    rank_and_size_from(|name| std::env::var(name).ok())
}

/// [`launcher_rank_and_size`] over the variables `var` gives: the first convention whose rank and size both
/// parse, with the rank below the size.
fn rank_and_size_from(var: impl Fn(&str) -> Option<String>) -> (usize, usize) {
    let read = |name: &str| var(name)?.parse::<usize>().ok();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn launchers_tell_rank_and_size_in_order_of_precedence() {
        assert_eq!(rank_and_size_from(vars(&[])), (0, 1));
        let ompi = [("OMPI_COMM_WORLD_RANK", "2"), ("OMPI_COMM_WORLD_SIZE", "3")];
        assert_eq!(rank_and_size_from(vars(&ompi)), (2, 3));
        let pmi = [("PMI_RANK", "1"), ("PMI_SIZE", "4")];
        assert_eq!(rank_and_size_from(vars(&pmi)), (1, 4));
        let torch = [("RANK", "0"), ("WORLD_SIZE", "2")];
        assert_eq!(rank_and_size_from(vars(&torch)), (0, 2));
        // Open MPI's variables win over the others.
        let both = [ompi[0], ompi[1], pmi[0], pmi[1]];
        assert_eq!(rank_and_size_from(vars(&both)), (2, 3));
        // A rank that is not below its size, or half a pair, or a number that does not parse, is passed over.
        let bad = [
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "3"),
            pmi[0],
            pmi[1],
        ];
        assert_eq!(rank_and_size_from(vars(&bad)), (1, 4));
        assert_eq!(rank_and_size_from(vars(&[("RANK", "1")])), (0, 1));
        assert_eq!(
            rank_and_size_from(vars(&[("RANK", "x"), ("WORLD_SIZE", "2")])),
            (0, 1)
        );
    }

    #[test]
    fn a_test_process_is_rank_0_of_1() {
        // cargo test is not started by a launcher: none of the variables is set (checked, not assumed).
        for name in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "WORLD_SIZE"] {
            assert!(std::env::var_os(name).is_none(), "{name} is set");
        }
        assert_eq!(launcher_rank_and_size(), (0, 1));
    }

    #[test]
    fn counts_past_a_c_int_are_refused() {
        let limit = i32::MAX as usize;
        assert!(check_count("all_reduce", 0).is_ok());
        assert!(check_count("all_reduce", limit).is_ok());
        let error = check_count("all_reduce", limit + 1).unwrap_err();
        assert!(error.to_string().contains("2147483648 elements"), "{error}");
        assert!(error.to_string().contains("all_reduce"), "{error}");
    }

    #[test]
    fn a_broadcast_root_must_be_a_rank() {
        assert!(check_root(0, 1).is_ok());
        assert!(check_root(3, 4).is_ok());
        let error = check_root(4, 4).unwrap_err();
        assert!(error.to_string().contains("root 4 of 4 ranks"), "{error}");
        assert!(check_root(0, 0).is_err());
    }
}
