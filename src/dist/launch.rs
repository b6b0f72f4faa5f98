//! Choosing and starting the communicator of a process from how it was launched: `mpirun -np N` (Open MPI
//! or MPICH) gives MPI ranks on the CPU, or one process per GPU talking NCCL (its unique id handed out over
//! MPI); a process started alone is a single rank.

use super::{launcher_rank_and_size, Communicator, Single};
use crate::backend::Device;
use crate::error::{Error, Result};

/// Which engine carries the collectives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// MPI when launched with several ranks (NCCL for GPU tensors), a single rank otherwise.
    Auto,
    Single,
    Mpi,
    Nccl,
}

impl std::str::FromStr for Engine {
    type Err = Error;
    fn from_str(s: &str) -> Result<Engine> {
        match s {
            "auto" => Ok(Engine::Auto),
            "single" | "none" => Ok(Engine::Single),
            "mpi" => Ok(Engine::Mpi),
            "nccl" => Ok(Engine::Nccl),
            other => Err(Error::invalid(
                "--comm",
                format!("{other:?} is not auto, single, mpi or nccl"),
            )),
        }
    }
}

/// A started communicator, and what must outlive it (the MPI environment that bootstrapped NCCL).
pub struct Launched {
    pub comm: Box<dyn Communicator>,
    pub keep: Option<Box<dyn std::any::Any>>,
}

/// The engine `engine` means for `size` launched ranks with tensors on `device`: `Auto` is a single rank when
/// alone, NCCL for GPU tensors, MPI otherwise.
fn resolve(engine: Engine, device: Device, size: usize) -> Engine {
    match engine {
        Engine::Auto if size == 1 => Engine::Single,
        Engine::Auto if matches!(device, Device::Cuda(_)) => Engine::Nccl,
        Engine::Auto => Engine::Mpi,
        e => e,
    }
}

/// Starts the communicator `engine` asks for, for tensors on `device`.
pub fn launch(engine: Engine, device: Device) -> Result<Launched> {
    let (_, size) = launcher_rank_and_size();
    match resolve(engine, device, size) {
        Engine::Single | Engine::Auto => Ok(Launched {
            comm: Box::new(Single),
            keep: None,
        }),
        Engine::Mpi => start_mpi(size),
        Engine::Nccl => start_nccl(device, size),
    }
}

#[cfg(feature = "mpi")]
fn start_mpi(_: usize) -> Result<Launched> {
    Ok(Launched {
        comm: Box::new(super::mpi::Mpi::init()?),
        keep: None,
    })
}

#[cfg(not(feature = "mpi"))]
fn start_mpi(size: usize) -> Result<Launched> {
    Err(Error::invalid(
        "--comm",
        format!("launched with {size} ranks, but this build has no MPI: build with --features mpi"),
    ))
}

/// The GPU of a process on its node: the first GPU the job was given, plus the launcher's local rank
/// (`OMPI_COMM_WORLD_LOCAL_RANK`, or none: 0), one GPU per process.
#[cfg_attr(not(all(feature = "cuda-backend", feature = "mpi")), allow(dead_code))]
fn local_gpu(first: usize, local_rank: Option<&str>) -> Result<usize> {
    let Some(text) = local_rank else {
        return Ok(first);
    };
    let local = text.parse::<usize>().map_err(|_| {
        Error::invalid(
            "OMPI_COMM_WORLD_LOCAL_RANK",
            format!("{text:?} is not a rank"),
        )
    })?;
    Ok(first + local)
}

#[cfg(all(feature = "cuda-backend", feature = "mpi"))]
fn start_nccl(device: Device, _: usize) -> Result<Launched> {
    use super::nccl::Nccl;
    let Device::Cuda(first) = device else {
        return Err(Error::invalid("--comm", "NCCL needs --device cuda"));
    };
    let mpi = super::mpi::Mpi::init()?;
    let (rank, size) = (mpi.rank(), mpi.size());
    let local = std::env::var("OMPI_COMM_WORLD_LOCAL_RANK").ok();
    let ordinal = local_gpu(first, local.as_deref())?;
    let id = mpi.made_on_root("NCCL id", Nccl::unique_id)?;
    Ok(Launched {
        comm: Box::new(Nccl::new(ordinal, rank, size, id)?),
        keep: Some(Box::new(mpi)),
    })
}

#[cfg(all(feature = "cuda-backend", not(feature = "mpi")))]
fn start_nccl(device: Device, size: usize) -> Result<Launched> {
    use super::nccl::Nccl;
    let Device::Cuda(ordinal) = device else {
        return Err(Error::invalid("--comm", "NCCL needs --device cuda"));
    };
    if size > 1 {
        return Err(Error::invalid(
            "--comm",
            format!("{size} NCCL ranks need MPI to hand out the NCCL id: build with --features cuda,mpi"),
        ));
    }
    Ok(Launched {
        comm: Box::new(Nccl::new(ordinal, 0, 1, Nccl::unique_id()?)?),
        keep: None,
    })
}

#[cfg(not(feature = "cuda-backend"))]
fn start_nccl(_: Device, _: usize) -> Result<Launched> {
    Err(Error::invalid(
        "--comm",
        "NCCL needs a GPU build: --features cuda",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_one_rank_alone_nccl_for_gpu_tensors_and_mpi_otherwise() {
        let gpu = Device::Cuda(0);
        assert_eq!(resolve(Engine::Auto, gpu, 1), Engine::Single);
        assert_eq!(resolve(Engine::Auto, Device::Cpu, 1), Engine::Single);
        assert_eq!(resolve(Engine::Auto, gpu, 2), Engine::Nccl);
        assert_eq!(resolve(Engine::Auto, Device::Cpu, 2), Engine::Mpi);
        for e in [Engine::Single, Engine::Mpi, Engine::Nccl] {
            assert_eq!(resolve(e, Device::Cpu, 2), e, "asked for {e:?}");
        }
        assert_eq!("none".parse::<Engine>().unwrap(), Engine::Single);
        assert!("gloo".parse::<Engine>().is_err());
    }

    #[test]
    fn a_process_started_alone_is_one_rank() {
        let launched = launch(Engine::Auto, Device::Cpu).unwrap();
        let c = &launched.comm;
        assert_eq!((c.rank(), c.size(), c.engine()), (0, 1, "single"));
        assert!(launched.keep.is_none());
    }

    #[test]
    fn an_engine_this_build_lacks_is_an_error_saying_how_to_build_it() {
        let mpi = launch(Engine::Mpi, Device::Cpu)
            .err()
            .map(|e| e.to_string());
        if !cfg!(feature = "mpi") {
            assert!(mpi.unwrap().contains("--features mpi"));
        }
        let nccl = launch(Engine::Nccl, Device::Cpu).err().unwrap().to_string();
        let expected = if cfg!(feature = "cuda-backend") {
            "NCCL needs --device cuda"
        } else {
            "NCCL needs a GPU build"
        };
        assert!(nccl.contains(expected), "{nccl}");
    }

    #[test]
    fn each_process_of_a_node_takes_the_gpu_of_its_local_rank() {
        assert_eq!(local_gpu(0, None).unwrap(), 0);
        assert_eq!(local_gpu(2, None).unwrap(), 2);
        assert_eq!(local_gpu(0, Some("3")).unwrap(), 3);
        assert_eq!(local_gpu(1, Some("2")).unwrap(), 3);
        let error = local_gpu(0, Some("x")).unwrap_err().to_string();
        assert!(
            error.contains("OMPI_COMM_WORLD_LOCAL_RANK") && error.contains("\"x\""),
            "{error}"
        );
    }
}
