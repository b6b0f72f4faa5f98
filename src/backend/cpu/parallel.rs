//! Running the tasks of one parallel phase (the GEMM's tiles) on every core, with the calling thread working
//! alongside helper threads.
//!
//! A parallel loop handed to rayon from a thread outside its pool injects the work, wakes the workers and puts
//! the caller to sleep until they are done: tens of microseconds per call, a tenth of a 256³ product. Here the
//! caller starts on its own share at once while `threads - 1` helpers (a small pool of their own, so the caller
//! and the helpers are exactly `threads` busy threads) wake and take the other shares; whoever runs out of its
//! own share takes tasks from the others', and the caller spins for the last tasks instead of sleeping. Inside
//! the rayon pool (a GEMM run from a parallel loop) the tasks go to rayon, where spawning is cheap.

use rayon::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Runs `task(t)` once for every `t < tasks` on `threads` threads. Participant `p` first runs the tasks of its
/// own contiguous share (`p · tasks / threads ..`) in order, so participants start on different tasks, then
/// helps with the other shares. A panic in any task is re-raised here once every task has finished.
pub fn run_tasks(tasks: usize, threads: usize, task: &(dyn Fn(usize) + Sync)) {
    if threads <= 1 || tasks <= 1 {
        (0..tasks).for_each(task);
        return;
    }
    if rayon::current_thread_index().is_some() {
        (0..tasks).into_par_iter().for_each(task);
        return;
    }
    let Some(pool) = helpers() else {
        (0..tasks).into_par_iter().for_each(task);
        return;
    };
    let threads = threads.min(pool.current_num_threads() + 1);
    // SAFETY: the lifetime is erased so that helpers may hold the job after this call returns. They call
    // `task` only after claiming a task, and this function returns only once every task has finished (`done`),
    // so no call of `task` outlives it; a helper that starts late claims nothing and never calls it.
    let task: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
    let job = Arc::new(Job {
        tasks,
        threads,
        cursors: (0..threads)
            .map(|p| AtomicUsize::new(p * tasks / threads))
            .collect(),
        done: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
        task: TaskRef(task),
    });
    for p in 1..threads {
        let job = Arc::clone(&job);
        pool.spawn(move || job.work(p));
    }
    job.work(0);
    // The last tasks run on the helpers: spin for them (a tile takes microseconds), yielding after a while.
    let mut spins = 0u32;
    while job.done.load(Ordering::Acquire) < tasks {
        if spins < 1 << 14 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    if job.panicked.load(Ordering::Relaxed) {
        panic!("gemm: a parallel task panicked");
    }
}

/// The helper threads, one fewer than the rayon pool has (built on first use), or `None` when there are none or
/// they cannot be started.
fn helpers() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let count = rayon::current_num_threads()
            .checked_sub(1)
            .filter(|&c| c > 0)?;
        rayon::ThreadPoolBuilder::new()
            .num_threads(count)
            .thread_name(|i| format!("tapegrad-gemm-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// The task function of a [`Job`], callable from any thread.
struct TaskRef(&'static (dyn Fn(usize) + Sync));

/// One call of [`run_tasks`]: the shares' cursors and the count of finished tasks.
struct Job {
    tasks: usize,
    threads: usize,
    /// Next task of each share.
    cursors: Vec<AtomicUsize>,
    /// Tasks finished (or panicked).
    done: AtomicUsize,
    panicked: AtomicBool,
    task: TaskRef,
}

impl Job {
    /// Runs tasks as participant `p`: its own share first, then whatever is left in the others.
    fn work(&self, p: usize) {
        for q in (0..self.threads).map(|i| (p + i) % self.threads) {
            let end = (q + 1) * self.tasks / self.threads;
            loop {
                let t = self.cursors[q].fetch_add(1, Ordering::Relaxed);
                if t >= end {
                    break;
                }
                if catch_unwind(AssertUnwindSafe(|| (self.task.0)(t))).is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
                self.done.fetch_add(1, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for (tasks, threads) in [(0, 2), (1, 2), (2, 2), (7, 2), (12, 3), (100, 2), (5, 8)] {
            let runs: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            run_tasks(tasks, threads, &|t| {
                runs[t].fetch_add(1, Ordering::Relaxed);
            });
            assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn the_caller_and_a_helper_share_the_tasks() {
        if rayon::current_num_threads() < 2 {
            return;
        }
        // Task 0 (the caller's) waits until another thread has run a task of the second share, so this
        // passes only if a helper takes part.
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        let start = std::time::Instant::now();
        run_tasks(64, 2, &|t| {
            seen.lock().unwrap().insert(std::thread::current().id());
            while t == 0
                && seen.lock().unwrap().len() < 2
                && start.elapsed() < std::time::Duration::from_secs(30)
            {
                std::thread::yield_now();
            }
        });
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_panicking_task_is_reported_after_the_others_finish() {
        let finished = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            run_tasks(16, 2, &|t| {
                if t == 9 {
                    panic!("task 9");
                }
                finished.fetch_add(1, Ordering::Relaxed);
            })
        }));
        assert!(result.is_err());
        assert_eq!(finished.load(Ordering::Relaxed), 15);
    }

    #[test]
    fn runs_inside_the_rayon_pool() {
        let total = AtomicUsize::new(0);
        (0..4).into_par_iter().for_each(|_| {
            run_tasks(10, 2, &|t| {
                total.fetch_add(t, Ordering::Relaxed);
            })
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 45);
    }
}
