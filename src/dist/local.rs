//! Communicators within one process: [`Single`] (one rank: every collective is the identity) and
//! [`ThreadGroup`] (ranks as threads sharing memory, for tests of the data-parallel code path without a
//! launcher). Sums run in rank order, so results do not depend on which thread arrives first.

use super::{check_chunks, check_root, host_f32, Communicator};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One process, one rank.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Communicator for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn engine(&self) -> &'static str {
        "single"
    }
    fn all_reduce(&self, _: &mut Tensor) -> Result<()> {
        Ok(())
    }
    fn reduce_scatter(&self, send: &Tensor, recv: &mut Tensor) -> Result<()> {
        check_chunks("reduce_scatter", send.numel(), recv.numel(), 1)?;
        *recv = send.contiguous()?.detach();
        Ok(())
    }
    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<()> {
        check_chunks("all_gather", recv.numel(), send.numel(), 1)?;
        *recv = send.contiguous()?.detach();
        Ok(())
    }
    fn broadcast(&self, _: &mut Tensor, root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn all_reduce_host(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

/// What the ranks of a thread group deposit for one collective.
#[derive(Clone)]
enum Deposit {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// The shared board of a thread group: deposits of the round in progress and the last completed round.
struct Board {
    round: u64,
    deposits: Vec<Option<Deposit>>,
    done: Arc<Vec<Deposit>>,
}

/// One rank of a group of threads in this process.
pub struct ThreadGroup {
    rank: usize,
    size: usize,
    shared: Arc<(Mutex<Board>, Condvar)>,
    timeout: Duration,
}

impl ThreadGroup {
    /// `size` ranks, one per thread that will use it; a collective that waits longer than `timeout` for
    /// the others fails with [`Error::Comm`].
    pub fn new(size: usize, timeout: Duration) -> Vec<ThreadGroup> {
        let shared = Arc::new((
            Mutex::new(Board {
                round: 0,
                deposits: vec![None; size],
                done: Arc::new(Vec::new()),
            }),
            Condvar::new(),
        ));
        (0..size)
            .map(|rank| ThreadGroup {
                rank,
                size,
                shared: shared.clone(),
                timeout,
            })
            .collect()
    }

    /// Deposits `mine` and returns every rank's deposit of this round, in rank order.
    fn exchange(&self, op: &'static str, mine: Deposit) -> Result<Arc<Vec<Deposit>>> {
        let (lock, cvar) = &*self.shared;
        let mut board = lock.lock().unwrap_or_else(|e| e.into_inner());
        let round = board.round;
        board.deposits[self.rank] = Some(mine);
        if board.deposits.iter().all(Option::is_some) {
            let all = board.deposits.iter_mut().map(|d| d.take().unwrap());
            board.done = Arc::new(all.collect());
            board.round += 1;
            cvar.notify_all();
            return Ok(board.done.clone());
        }
        let (board, waited) = cvar
            .wait_timeout_while(board, self.timeout, |b| b.round == round)
            .unwrap_or_else(|e| e.into_inner());
        if waited.timed_out() {
            return Err(Error::Comm {
                op,
                msg: format!(
                    "rank {} of {}: the other ranks did not join within {:?}",
                    self.rank, self.size, self.timeout
                ),
            });
        }
        Ok(board.done.clone())
    }

    fn exchange_f32(&self, op: &'static str, t: &Tensor) -> Result<Vec<Vec<f32>>> {
        let all = self.exchange(op, Deposit::F32(host_f32(op, t)?))?;
        all.iter()
            .map(|d| match d {
                Deposit::F32(v) => Ok(v.clone()),
                Deposit::F64(_) => Err(mismatch(op)),
            })
            .collect()
    }
}

fn mismatch(op: &'static str) -> Error {
    Error::Comm {
        op,
        msg: "the ranks called different collectives".into(),
    }
}

/// Sums equal-length vectors in rank order.
fn sum_in_order(parts: &[Vec<f32>], range: std::ops::Range<usize>) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; range.len()];
    for p in parts {
        let p = p.get(range.clone()).ok_or_else(|| mismatch("reduce"))?;
        for (o, &x) in out.iter_mut().zip(p) {
            *o += x;
        }
    }
    Ok(out)
}

impl Communicator for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn engine(&self) -> &'static str {
        "threads"
    }
    fn all_reduce(&self, buf: &mut Tensor) -> Result<()> {
        let parts = self.exchange_f32("all_reduce", buf)?;
        let sum = sum_in_order(&parts, 0..buf.numel())?;
        *buf = Tensor::from_vec(sum, buf.shape())?;
        Ok(())
    }
    fn reduce_scatter(&self, send: &Tensor, recv: &mut Tensor) -> Result<()> {
        let n = recv.numel();
        check_chunks("reduce_scatter", send.numel(), n, self.size)?;
        let parts = self.exchange_f32("reduce_scatter", send)?;
        let sum = sum_in_order(&parts, self.rank * n..(self.rank + 1) * n)?;
        *recv = Tensor::from_vec(sum, recv.shape())?;
        Ok(())
    }
    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<()> {
        check_chunks("all_gather", recv.numel(), send.numel(), self.size)?;
        let parts = self.exchange_f32("all_gather", send)?;
        *recv = Tensor::from_vec(parts.concat(), recv.shape())?;
        Ok(())
    }
    fn broadcast(&self, buf: &mut Tensor, root: usize) -> Result<()> {
        check_root(root, self.size)?;
        let parts = self.exchange_f32("broadcast", buf)?;
        *buf = Tensor::from_vec(parts[root].clone(), buf.shape())?;
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.exchange("barrier", Deposit::F64(Vec::new()))
            .map(|_| ())
    }
    fn all_reduce_host(&self, values: &mut [f64]) -> Result<()> {
        let all = self.exchange("all_reduce_host", Deposit::F64(values.to_vec()))?;
        values.fill(0.0);
        for d in all.iter() {
            let Deposit::F64(v) = d else {
                return Err(mismatch("all_reduce_host"));
            };
            if v.len() != values.len() {
                return Err(mismatch("all_reduce_host"));
            }
            for (o, x) in values.iter_mut().zip(v) {
                *o += x;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_ranks<R: Send>(size: usize, f: impl Fn(ThreadGroup) -> R + Sync) -> Vec<R> {
        let group = ThreadGroup::new(size, Duration::from_secs(10));
        std::thread::scope(|s| {
            let handles: Vec<_> = group.into_iter().map(|g| s.spawn(|| f(g))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn collectives_match_their_definitions() {
        let results = on_ranks(3, |g| {
            let r = g.rank() as f32;
            let mut buf = Tensor::from_vec(vec![r, 10.0 * r], &[2]).unwrap();
            g.all_reduce(&mut buf).unwrap();
            let send = Tensor::from_vec((0..6).map(|i| i as f32 + r).collect(), &[6]).unwrap();
            let mut chunk = Tensor::zeros(&[2], crate::DType::F32);
            g.reduce_scatter(&send, &mut chunk).unwrap();
            let mut gathered = Tensor::zeros(&[3], crate::DType::F32);
            g.all_gather(&Tensor::from_vec(vec![r], &[1]).unwrap(), &mut gathered)
                .unwrap();
            let mut b = Tensor::from_vec(vec![r + 1.0], &[1]).unwrap();
            g.broadcast(&mut b, 2).unwrap();
            let mut host = [g.rank() as f64, 1.0];
            g.all_reduce_host(&mut host).unwrap();
            g.barrier().unwrap();
            (
                buf.to_vec::<f32>().unwrap(),
                chunk.to_vec::<f32>().unwrap(),
                gathered.to_vec::<f32>().unwrap(),
                b.to_vec::<f32>().unwrap(),
                host,
            )
        });
        for (rank, (sum, chunk, gathered, b, host)) in results.into_iter().enumerate() {
            assert_eq!(sum, [3.0, 30.0]);
            // Chunk `rank` of [i + r] summed over r = 0, 1, 2: 3 · i + 3.
            let i = 2.0 * rank as f32;
            assert_eq!(chunk, [3.0 * i + 3.0, 3.0 * (i + 1.0) + 3.0]);
            assert_eq!(gathered, [0.0, 1.0, 2.0]);
            assert_eq!(b, [3.0]);
            assert_eq!(host, [3.0, 3.0]);
        }
    }

    #[test]
    fn a_missing_rank_times_out_with_a_clear_error() {
        let mut group = ThreadGroup::new(2, Duration::from_millis(200));
        let alone = group.remove(0);
        let error = alone.barrier().unwrap_err();
        assert!(matches!(error, Error::Comm { .. }), "{error}");
        assert!(error.to_string().contains("did not join"), "{error}");
    }

    #[test]
    fn one_rank_collectives_are_copies_and_still_check_their_arguments() {
        let f32 = crate::DType::F32;
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
        let mut gathered = Tensor::zeros(&[3], f32);
        Single.all_gather(&x, &mut gathered).unwrap();
        assert_eq!(gathered.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0]);
        let mut scattered = Tensor::zeros(&[3], f32);
        Single.reduce_scatter(&x, &mut scattered).unwrap();
        assert_eq!(scattered.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0]);
        assert!(Single
            .all_gather(&x, &mut Tensor::zeros(&[2], f32))
            .is_err());
        let mut b = x.clone();
        Single.broadcast(&mut b, 0).unwrap();
        assert!(Single.broadcast(&mut b, 1).is_err());
        let mut summed = x.clone();
        Single.all_reduce(&mut summed).unwrap();
        assert_eq!(summed.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0]);
        Single.barrier().unwrap();
    }

    #[test]
    fn chunk_lengths_are_checked() {
        let error = Single
            .reduce_scatter(
                &Tensor::zeros(&[3], crate::DType::F32),
                &mut Tensor::zeros(&[2], crate::DType::F32),
            )
            .unwrap_err();
        assert!(error.to_string().contains("not 1 chunks of [2]"), "{error}");
    }
}
