//! The MPI communicator across real processes (feature `mpi`): each test starts itself under `mpirun -np 2`
//! (the test binary, filtered to the same test, with `TAPEGRAD_MPI_RANK_TEST` set), the ranks run the test's
//! body against each other, and the parent checks that every rank finished it. Built and run only with
//! `--features mpi`, which needs an MPI library (and so `mpirun`) to build at all.

#![cfg(feature = "mpi")]

use std::process::Command;
use tapegrad::dist::mpi::Mpi;
use tapegrad::dist::{launch, Communicator, Engine};
use tapegrad::{DType, Device, Error, Tensor};

/// Set in the ranks' environment: run the body instead of starting `mpirun`.
const RANK_VAR: &str = "TAPEGRAD_MPI_RANK_TEST";

/// Runs `body` on two MPI ranks: here when this process is a rank, otherwise by starting `mpirun -np 2` over
/// this test binary, filtered to `test` (which must be the calling test's name), and checking that both
/// ranks passed it.
fn on_two_ranks(test: &str, body: impl FnOnce()) {
    if std::env::var_os(RANK_VAR).is_some() {
        body();
        println!("rank passed {test}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("mpirun")
        .args([
            "-np",
            "2",
            "--oversubscribe",
            "-x",
            RANK_VAR,
            "-x",
            "RAYON_NUM_THREADS",
        ])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(RANK_VAR, "1")
        .env("RAYON_NUM_THREADS", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap_or_else(|e| panic!("mpirun could not be started ({e}); the mpi feature needs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "mpirun failed: {}\n{text}",
        out.status
    );
    let passed = text.matches(&format!("rank passed {test}")).count();
    assert_eq!(passed, 2, "{passed} of 2 ranks passed\n{text}");
}

fn tensor(values: Vec<f32>) -> Tensor {
    let n = values.len();
    Tensor::from_vec(values, &[n]).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

#[test]
fn two_mpi_ranks_compute_every_collective_by_its_definition() {
    on_two_ranks(
        "two_mpi_ranks_compute_every_collective_by_its_definition",
        || {
            // `auto` with two launched ranks and host tensors is MPI.
            let comm = launch(Engine::Auto, Device::Cpu).unwrap().comm;
            assert_eq!((comm.size(), comm.engine()), (2, "mpi"));
            let rank = comm.rank();
            let r = rank as f32;

            let mut sum = tensor(vec![r + 1.0, 10.0 * (r + 1.0), -r]);
            comm.all_reduce(&mut sum).unwrap();
            assert_eq!(values(&sum), [3.0, 30.0, -1.0]);
            assert_eq!(sum.shape(), &[3]);

            // Chunk `rank` of [i + 10 r] summed over r = 0, 1: 2 i + 10.
            let send = tensor((0..6).map(|i| i as f32 + 10.0 * r).collect());
            let mut chunk = Tensor::zeros(&[3], DType::F32);
            comm.reduce_scatter(&send, &mut chunk).unwrap();
            let first = 3.0 * r;
            let expected: Vec<f32> = (0..3).map(|i| 2.0 * (first + i as f32) + 10.0).collect();
            assert_eq!(values(&chunk), expected);

            let mut gathered = Tensor::zeros(&[4], DType::F32);
            comm.all_gather(&tensor(vec![r, r + 0.5]), &mut gathered)
                .unwrap();
            assert_eq!(values(&gathered), [0.0, 0.5, 1.0, 1.5]);

            let mut b = tensor(vec![r + 7.0, r]);
            comm.broadcast(&mut b, 1).unwrap();
            assert_eq!(values(&b), [8.0, 1.0]);
            let mut b = tensor(vec![r + 7.0]);
            comm.broadcast(&mut b, 0).unwrap();
            assert_eq!(values(&b), [7.0]);

            let mut host = [rank as f64, 0.25];
            comm.all_reduce_host(&mut host).unwrap();
            assert_eq!(host, [1.0, 0.5]);

            // A barrier holds every rank until the last one reaches it.
            comm.barrier().unwrap();
            let start = std::time::Instant::now();
            if rank == 1 {
                std::thread::sleep(std::time::Duration::from_millis(400));
            }
            comm.barrier().unwrap();
            assert!(start.elapsed().as_millis() >= 300, "{:?}", start.elapsed());

            // Bad arguments are refused on every rank alike, before any traffic.
            let error = comm
                .reduce_scatter(&tensor(vec![0.0; 5]), &mut Tensor::zeros(&[2], DType::F32))
                .unwrap_err();
            assert!(error.to_string().contains("not 2 chunks of [2]"), "{error}");
            let error = comm
                .all_gather(&tensor(vec![0.0; 2]), &mut Tensor::zeros(&[3], DType::F32))
                .unwrap_err();
            assert!(error.to_string().contains("not 2 chunks of [2]"), "{error}");
            let error = comm.broadcast(&mut tensor(vec![0.0]), 2).unwrap_err();
            assert!(error.to_string().contains("root 2 of 2 ranks"), "{error}");
            let mut halves = Tensor::zeros(&[2], DType::F32)
                .to_dtype(DType::BF16)
                .unwrap();
            let error = comm.all_reduce(&mut halves).unwrap_err();
            assert!(matches!(error, Error::DType { .. }), "{error}");
            comm.barrier().unwrap();
        },
    );
}

#[test]
fn bytes_travel_from_the_root_to_every_rank() {
    on_two_ranks("bytes_travel_from_the_root_to_every_rank", || {
        let mpi = Mpi::init().unwrap();
        // Every value of a byte, as a GPU job's NCCL id travels from rank 0, and back from rank 1.
        let made: Vec<u8> = (0..=255u8).rev().collect();
        for root in [0, 1] {
            let mut bytes = if mpi.rank() == root {
                made.clone()
            } else {
                vec![0; 256]
            };
            mpi.broadcast_bytes(&mut bytes, root).unwrap();
            assert_eq!(bytes, made, "from rank {root}");
        }
        let error = mpi.broadcast_bytes(&mut [0; 4], 2).unwrap_err();
        assert!(error.to_string().contains("root 2 of 2 ranks"), "{error}");
        mpi.barrier().unwrap();
    });
}

#[test]
fn bytes_made_on_rank_0_reach_every_rank_and_a_failure_there_stops_them_all() {
    on_two_ranks(
        "bytes_made_on_rank_0_reach_every_rank_and_a_failure_there_stops_them_all",
        || {
            let mpi = Mpi::init().unwrap();
            let mut made_here = 0;
            let id: [u8; 128] = std::array::from_fn(|i| 255 - i as u8);
            let shared = mpi
                .made_on_root("NCCL id", || {
                    made_here += 1;
                    Ok(id)
                })
                .unwrap();
            assert_eq!(shared, id);
            assert_eq!(
                made_here,
                usize::from(mpi.rank() == 0),
                "only rank 0 makes them"
            );
            let error = mpi
                .made_on_root::<128>("NCCL id", || {
                    Err(Error::invalid("ncclGetUniqueId", "no GPU"))
                })
                .unwrap_err();
            let expected = if mpi.rank() == 0 {
                "no GPU"
            } else {
                "NCCL id: rank 0 of 2 could not make it"
            };
            assert!(error.to_string().contains(expected), "{error}");
            mpi.barrier().unwrap();
        },
    );
}

#[test]
fn mpi_starts_once_per_process() {
    on_two_ranks("mpi_starts_once_per_process", || {
        let first = launch(Engine::Mpi, Device::Cpu).unwrap();
        let error = launch(Engine::Mpi, Device::Cpu).err().unwrap();
        assert!(matches!(error, Error::Comm { .. }), "{error}");
        assert!(error.to_string().contains("already initialized"), "{error}");
        first.comm.barrier().unwrap();
    });
}

#[test]
fn serialized_calls_from_several_threads_are_enough() {
    use mpi::environment::Threading;
    assert!(!Mpi::thread_level_suffices(Threading::Single));
    assert!(!Mpi::thread_level_suffices(Threading::Funneled));
    assert!(Mpi::thread_level_suffices(Threading::Serialized));
    assert!(Mpi::thread_level_suffices(Threading::Multiple));
}
