//! A communicator behind a thread of its own: collectives are submitted as jobs, run in submission order
//! (the same order on every rank, as MPI and NCCL require), and waited for with a timeout. While a job runs
//! the submitting thread goes on (backward keeps computing while a gradient bucket is reduced); a job that
//! does not finish in time means another rank died or stalled, and becomes an [`Error::Comm`] naming the
//! collective, the rank and the engine instead of a hang. With one rank jobs run inline.

use super::Communicator;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a job hands back.
pub enum Out {
    Tensor(Tensor),
    Host(Vec<f64>),
    Nothing,
}

/// A finished job: its output and how long the collective itself ran.
pub struct Completed {
    pub out: Out,
    pub busy: Duration,
}

type Job = Box<dyn FnOnce(&dyn Communicator) -> Result<Out> + Send>;

struct Worker {
    jobs: Option<Sender<Job>>,
    done: Receiver<Result<Completed>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A communicator, its worker thread and the jobs in flight.
pub struct Group {
    comm: Arc<dyn Communicator>,
    worker: Option<Worker>,
    inline: VecDeque<Result<Completed>>,
    /// Names of the jobs submitted and not yet waited for, oldest first.
    pending: VecDeque<&'static str>,
    timeout: Duration,
    failed: Option<String>,
}

impl Group {
    /// Wraps `comm`; a job not finished `timeout` after it was waited for fails.
    pub fn new(comm: Box<dyn Communicator>, timeout: Duration) -> Group {
        let comm: Arc<dyn Communicator> = Arc::from(comm);
        let worker = (comm.size() > 1).then(|| {
            let (jobs, inbox) = channel::<Job>();
            let (outbox, done) = channel();
            let c = comm.clone();
            let thread = std::thread::Builder::new()
                .name("tapegrad-comm".into())
                .spawn(move || {
                    for job in inbox {
                        let start = Instant::now();
                        let out = job(&*c).map(|out| Completed {
                            out,
                            busy: start.elapsed(),
                        });
                        if outbox.send(out).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawning the communication thread");
            Worker {
                jobs: Some(jobs),
                done,
                thread: Some(thread),
            }
        });
        Group {
            comm,
            worker,
            inline: VecDeque::new(),
            pending: VecDeque::new(),
            timeout,
            failed: None,
        }
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    pub fn size(&self) -> usize {
        self.comm.size()
    }

    pub fn engine(&self) -> &'static str {
        self.comm.engine()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn check_failed(&self, op: &'static str) -> Result<()> {
        match &self.failed {
            Some(why) => Err(Error::Comm {
                op,
                msg: format!("the group already failed: {why}"),
            }),
            None => Ok(()),
        }
    }

    /// Queues collective `op` (a name for errors); it starts once the jobs before it have finished.
    pub fn submit(
        &mut self,
        op: &'static str,
        job: impl FnOnce(&dyn Communicator) -> Result<Out> + Send + 'static,
    ) -> Result<()> {
        self.check_failed(op)?;
        self.pending.push_back(op);
        match &self.worker {
            Some(w) => w
                .jobs
                .as_ref()
                .expect("open until drop")
                .send(Box::new(job))
                .map_err(|_| Error::Comm {
                    op,
                    msg: "the communication thread has stopped".into(),
                }),
            None => {
                let start = Instant::now();
                let out = job(&*self.comm).map(|out| Completed {
                    out,
                    busy: start.elapsed(),
                });
                self.inline.push_back(out);
                Ok(())
            }
        }
    }

    /// The oldest job's result, waiting at most the timeout for it.
    pub fn wait(&mut self) -> Result<Completed> {
        let op = self.pending.pop_front().ok_or_else(|| Error::Comm {
            op: "wait",
            msg: "no collective in flight".into(),
        })?;
        self.check_failed(op)?;
        let result = match &self.worker {
            None => self.inline.pop_front().expect("an inline result per job"),
            Some(w) => match w.done.recv_timeout(self.timeout) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    let why = format!(
                        "rank {} of {} ({}): no answer within {:.0?}; another rank has died or stalled",
                        self.rank(),
                        self.size(),
                        self.engine(),
                        self.timeout
                    );
                    self.failed = Some(why.clone());
                    Err(Error::Comm { op, msg: why })
                }
                Err(RecvTimeoutError::Disconnected) => Err(Error::Comm {
                    op,
                    msg: "the communication thread has stopped".into(),
                }),
            },
        };
        if let Err(e) = &result {
            self.failed.get_or_insert_with(|| e.to_string());
        }
        result
    }

    /// Runs one collective and waits for it.
    pub fn run(
        &mut self,
        op: &'static str,
        job: impl FnOnce(&dyn Communicator) -> Result<Out> + Send + 'static,
    ) -> Result<Completed> {
        self.submit(op, job)?;
        self.wait()
    }

    /// Sums host values over the ranks.
    pub fn sum_host(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        let mut v = values.to_vec();
        let done = self.run("all_reduce_host", move |c| {
            c.all_reduce_host(&mut v)?;
            Ok(Out::Host(v))
        })?;
        match done.out {
            Out::Host(v) => Ok(v),
            _ => unreachable!("all_reduce_host returns host values"),
        }
    }

    /// Rank `root`'s `t` on every rank.
    pub fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<Tensor> {
        let mut buf = t.contiguous()?.detach();
        let done = self.run("broadcast", move |c| {
            c.broadcast(&mut buf, root)?;
            Ok(Out::Tensor(buf))
        })?;
        match done.out {
            Out::Tensor(t) => Ok(t),
            _ => unreachable!("broadcast returns a tensor"),
        }
    }

    /// Waits until every rank gets here.
    pub fn barrier(&mut self) -> Result<()> {
        self.run("barrier", |c| c.barrier().map(|_| Out::Nothing))
            .map(|_| ())
    }
}

impl Drop for Group {
    /// Stops the worker and, unless a collective failed (it may never return), waits for it, so the
    /// communicator is dropped — MPI finalized — on this thread.
    fn drop(&mut self) {
        if let Some(w) = &mut self.worker {
            w.jobs = None;
            if self.failed.is_none() {
                if let Some(t) = w.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::ThreadGroup;

    #[test]
    fn jobs_run_in_order_and_a_silent_rank_becomes_an_error() {
        let mut ranks = ThreadGroup::new(2, Duration::from_secs(30));
        let r1 = ranks.pop().unwrap();
        let r0 = ranks.pop().unwrap();
        let other = std::thread::spawn(move || {
            let mut g = Group::new(Box::new(r1), Duration::from_secs(30));
            let sums = g.sum_host(&[1.0, 2.0]).unwrap();
            g.barrier().unwrap();
            sums
            // Rank 1 then stops answering.
        });
        let mut g = Group::new(Box::new(r0), Duration::from_millis(300));
        assert_eq!(
            (g.rank(), g.size(), g.engine(), g.timeout()),
            (0, 2, "threads", Duration::from_millis(300))
        );
        assert_eq!(g.sum_host(&[10.0, 20.0]).unwrap(), [11.0, 22.0]);
        g.barrier().unwrap();
        assert_eq!(other.join().unwrap(), [11.0, 22.0]);
        let started = Instant::now();
        let error = g.sum_host(&[1.0]).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = error.to_string();
        assert!(
            text.contains("rank 0 of 2 (threads)") && text.contains("died or stalled"),
            "{text}"
        );
        // The group stays failed.
        assert!(g
            .barrier()
            .unwrap_err()
            .to_string()
            .contains("already failed"));
    }

    /// A rank that records the thread it is dropped on.
    struct Watched {
        rank: ThreadGroup,
        dropped_on: Arc<std::sync::Mutex<Option<std::thread::ThreadId>>>,
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            *self.dropped_on.lock().unwrap() = Some(std::thread::current().id());
        }
    }

    impl Communicator for Watched {
        fn rank(&self) -> usize {
            self.rank.rank()
        }
        fn size(&self) -> usize {
            self.rank.size()
        }
        fn engine(&self) -> &'static str {
            self.rank.engine()
        }
        fn all_reduce(&self, buf: &mut Tensor) -> Result<()> {
            self.rank.all_reduce(buf)
        }
        fn reduce_scatter(&self, send: &Tensor, recv: &mut Tensor) -> Result<()> {
            self.rank.reduce_scatter(send, recv)
        }
        fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<()> {
            self.rank.all_gather(send, recv)
        }
        fn broadcast(&self, buf: &mut Tensor, root: usize) -> Result<()> {
            self.rank.broadcast(buf, root)
        }
        fn barrier(&self) -> Result<()> {
            self.rank.barrier()
        }
        fn all_reduce_host(&self, values: &mut [f64]) -> Result<()> {
            self.rank.all_reduce_host(values)
        }
    }

    #[test]
    fn a_dropped_group_stops_its_worker_and_drops_the_communicator_on_its_own_thread() {
        // MPI must be finalized on the thread that initialized it: the worker's handle goes first.
        let rank = ThreadGroup::new(2, Duration::from_secs(30)).remove(0);
        let dropped_on = Arc::new(std::sync::Mutex::new(None));
        let watched = Watched {
            rank,
            dropped_on: dropped_on.clone(),
        };
        let group = Group::new(Box::new(watched), Duration::from_secs(30));
        drop(group);
        assert_eq!(
            *dropped_on.lock().unwrap(),
            Some(std::thread::current().id())
        );
    }
}
