//! The MPI communicator (feature `mpi`; Open MPI or MPICH, through the `mpi` crate): one rank per process,
//! started by `mpirun -np N ...`. Collectives move host f32 buffers; every call holds a lock, so MPI sees one
//! call at a time from whichever thread makes it (the thread level asked for is `MPI_THREAD_MULTIPLE`,
//! `MPI_THREAD_SERIALIZED` is enough). Dropping the communicator finalizes MPI.

use super::{check_chunks, check_count, check_root, host_f32, Communicator};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use mpi::collective::SystemOperation;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};
use std::sync::Mutex;

/// The world communicator of an MPI job.
pub struct Mpi {
    world: SimpleCommunicator,
    lock: Mutex<()>,
    rank: usize,
    size: usize,
    /// Finalizes MPI when dropped, after `world`.
    _universe: Universe,
}

// SAFETY: MPI is initialized with at least MPI_THREAD_SERIALIZED (checked in `init`), and every call into it
// goes through `lock`, so calls from different threads never overlap.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

impl Mpi {
    /// Initializes MPI. Fails if it is already initialized or cannot serialize calls from several threads.
    pub fn init() -> Result<Mpi> {
        let (universe, level) =
            mpi::initialize_with_threading(Threading::Multiple).ok_or_else(|| Error::Comm {
                op: "mpi init",
                msg: "MPI is already initialized in this process".into(),
            })?;
        if !Mpi::thread_level_suffices(level) {
            return Err(Error::Comm {
                op: "mpi init",
                msg: format!(
                    "the MPI library offers thread level {level:?}; data-parallel training needs Serialized"
                ),
            });
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Mpi {
            world,
            lock: Mutex::new(()),
            rank,
            size,
            _universe: universe,
        })
    }

    /// Whether a thread level MPI offers is enough here: at least `MPI_THREAD_SERIALIZED` (calls from several
    /// threads, one at a time).
    pub fn thread_level_suffices(level: Threading) -> bool {
        level >= Threading::Serialized
    }

    fn locked<R>(&self, f: impl FnOnce(&SimpleCommunicator) -> R) -> R {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        f(&self.world)
    }

    /// Copies rank `root`'s `bytes` to every rank (each passes a buffer of the same length): how a GPU job's
    /// ranks share the NCCL id that rank 0 made.
    pub fn broadcast_bytes(&self, bytes: &mut [u8], root: usize) -> Result<()> {
        check_root(root, self.size)?;
        check_count("broadcast_bytes", bytes.len())?;
        self.locked(|w| w.process_at_rank(root as i32).broadcast_into(bytes));
        Ok(())
    }

    /// Makes `N` bytes on rank 0 with `make` and hands them to every rank: how a GPU job's ranks share the
    /// NCCL id. If `make` fails on rank 0, rank 0 returns its error and every other rank an error naming `what`,
    /// instead of waiting for bytes that never come.
    pub fn made_on_root<const N: usize>(
        &self,
        what: &'static str,
        make: impl FnOnce() -> Result<[u8; N]>,
    ) -> Result<[u8; N]> {
        // The first byte says whether rank 0 made the rest.
        let mut message = vec![0u8; N + 1];
        let made = if self.rank == 0 {
            let made = make();
            if let Ok(bytes) = &made {
                message[0] = 1;
                message[1..].copy_from_slice(bytes);
            }
            Some(made)
        } else {
            None
        };
        self.broadcast_bytes(&mut message, 0)?;
        match made {
            Some(made) => made,
            None if message[0] == 1 => {
                Ok(message[1..].try_into().expect("N bytes follow the flag"))
            }
            None => Err(Error::Comm {
                op: what,
                msg: format!(
                    "rank 0 of {} could not make it (its own error says why)",
                    self.size
                ),
            }),
        }
    }

    /// Ends every rank of the job with `code` (after an error that the other ranks cannot see).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn engine(&self) -> &'static str {
        "mpi"
    }
    fn all_reduce(&self, buf: &mut Tensor) -> Result<()> {
        let send = host_f32("all_reduce", buf)?;
        check_count("all_reduce", send.len())?;
        let mut recv = vec![0.0f32; send.len()];
        self.locked(|w| w.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum()));
        *buf = Tensor::from_vec(recv, buf.shape())?;
        Ok(())
    }
    fn reduce_scatter(&self, send: &Tensor, recv: &mut Tensor) -> Result<()> {
        check_chunks("reduce_scatter", send.numel(), recv.numel(), self.size)?;
        let send_v = host_f32("reduce_scatter", send)?;
        check_count("reduce_scatter", send_v.len())?;
        let mut out = vec![0.0f32; recv.numel()];
        self.locked(|w| {
            w.reduce_scatter_block_into(&send_v[..], &mut out[..], SystemOperation::sum())
        });
        *recv = Tensor::from_vec(out, recv.shape())?;
        Ok(())
    }
    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<()> {
        check_chunks("all_gather", recv.numel(), send.numel(), self.size)?;
        let send_v = host_f32("all_gather", send)?;
        check_count("all_gather", recv.numel())?;
        let mut out = vec![0.0f32; recv.numel()];
        self.locked(|w| w.all_gather_into(&send_v[..], &mut out[..]));
        *recv = Tensor::from_vec(out, recv.shape())?;
        Ok(())
    }
    fn broadcast(&self, buf: &mut Tensor, root: usize) -> Result<()> {
        check_root(root, self.size)?;
        let mut data = host_f32("broadcast", buf)?;
        check_count("broadcast", data.len())?;
        self.locked(|w| w.process_at_rank(root as i32).broadcast_into(&mut data[..]));
        *buf = Tensor::from_vec(data, buf.shape())?;
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.locked(|w| w.barrier());
        Ok(())
    }
    fn all_reduce_host(&self, values: &mut [f64]) -> Result<()> {
        let send = values.to_vec();
        self.locked(|w| w.all_reduce_into(&send[..], values, SystemOperation::sum()));
        Ok(())
    }
}
