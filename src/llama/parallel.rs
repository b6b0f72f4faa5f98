//! Data-parallel training of a [`Trainer`]: every rank holds a full replica (parameters broadcast from
//! rank 0 when the run starts or resumes), draws its own rows of each global batch, and averages gradients
//! across ranks in buckets launched during backward; with ZeRO-1 the AdamW moments are sharded instead of
//! replicated. The global batch is the per-rank batch × the number of ranks, and the losses do not depend on
//! how it is split (up to the order of floating-point sums).

use super::train::{accumulate, StepStats, Trainer};
use crate::dist::{Buckets, Communicator, GradSync, Group, Reduce, ZeroAdamW};
use crate::error::{Error, Result};
use crate::optim::adamw::StepInfo;
use crate::tensor::Tensor;
use std::time::Duration;

/// How a run is spread over ranks.
#[derive(Clone, Debug)]
pub struct ParallelOptions {
    /// Gradient elements per bucket (at least; parameters are never split).
    pub bucket_elements: usize,
    /// Shard the AdamW moments across ranks (ZeRO-1).
    pub zero1: bool,
    /// How long to wait for the other ranks in any collective before failing.
    pub timeout: Duration,
}

impl Default for ParallelOptions {
    fn default() -> Self {
        ParallelOptions {
            bucket_elements: 1 << 20,
            zero1: false,
            timeout: Duration::from_secs(120),
        }
    }
}

/// The data-parallel state of a trainer.
pub struct DataParallel {
    pub group: Group,
    pub buckets: Buckets,
    /// This rank's optimizer shard, with ZeRO-1.
    pub zero: Option<ZeroAdamW>,
}

/// Communication figures of one step.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommStats {
    /// Gradient bytes each rank handed to the collectives.
    pub bytes: usize,
    /// Seconds the gradient collectives ran.
    pub busy_s: f64,
    /// Seconds spent waiting for them after backward (communication not hidden behind it).
    pub exposed_s: f64,
}

impl Trainer {
    /// Spreads this run over the ranks of `comm`: rank 0's parameters are copied to every rank, gradients
    /// are averaged in buckets, and with `zero1` the optimizer state is sharded. Every rank must call it,
    /// after building or resuming the same run.
    pub fn distribute(
        &mut self,
        comm: Box<dyn Communicator>,
        options: ParallelOptions,
    ) -> Result<()> {
        let mut group = Group::new(comm, options.timeout);
        for p in self.model.params_mut() {
            *p = group.broadcast(p, 0)?;
        }
        let mut sizes = Vec::new();
        self.model.visit(&mut |_, t| sizes.push(t.numel()));
        let buckets = Buckets::new(&sizes, options.bucket_elements, group.size());
        let zero = options.zero1.then(|| {
            let shard = ZeroAdamW::from_full(&self.optimizer, &buckets, group.rank());
            // The full moments are not kept: each rank holds its shard only.
            self.optimizer.m = Vec::new();
            self.optimizer.v = Vec::new();
            shard
        });
        self.parallel = Some(DataParallel {
            group,
            buckets,
            zero,
        });
        Ok(())
    }

    /// This process's rank and the number of ranks (0 and 1 without [`Trainer::distribute`]).
    pub fn rank_and_size(&self) -> (usize, usize) {
        self.parallel
            .as_ref()
            .map_or((0, 1), |p| (p.group.rank(), p.group.size()))
    }

    /// One data-parallel step: forward and backward on this rank's rows, bucketed gradient averaging during
    /// backward, the global loss, and the (sharded) update. With gradient accumulation the first micro-batches
    /// sum their gradients locally, and the last one's backward hands the running mean to the collectives.
    pub(crate) fn parallel_step(&mut self) -> Result<StepStats> {
        if self.sft.is_some() {
            return Err(Error::invalid(
                "--sft",
                "supervised finetuning runs on one process (no data parallelism yet)",
            ));
        }
        let (rank, ranks) = self.rank_and_size();
        let (b, t, n) = (
            self.options.batch_size,
            self.options.seq_len,
            self.options.grad_accum,
        );
        let (mut local_total, mut earlier, mut saved_bytes) = (0.0, None::<Vec<Tensor>>, 0);
        for micro in 0..n - 1 {
            let batch = self.mixture.next_batch_part(b, rank, ranks);
            let (loss, grads, saved) = self.micro_step(micro, &batch)?;
            local_total += loss;
            saved_bytes = saved_bytes.max(saved);
            earlier = Some(accumulate(earlier, grads)?);
        }
        let batch = self.mixture.next_batch_part(b, rank, ranks);
        let (tape, leaves, loss) = self.forward_micro(n - 1, &batch)?;
        let mean = 1.0 / n as f64;
        let dp = self.parallel.as_mut().expect("a distributed trainer");
        let mode = if dp.zero.is_some() {
            Reduce::ReduceScatter
        } else {
            Reduce::AllReduce
        };
        let mut sync = GradSync::new(&mut dp.group, &dp.buckets, mode);
        let grads = tape.backward_streaming(&loss, &leaves, &mut |i, g| match &earlier {
            None => sync.ready(i, g),
            Some(sum) => sync.ready(i, &sum[i].add(g)?.scale(mean)?),
        })?;
        drop(grads);
        let synced = sync.finish(&leaves)?;
        let saved_bytes = saved_bytes.max(tape.saved_bytes().peak);
        let local_loss = (local_total + loss.item()?) * mean;
        drop((loss, tape));
        let loss = dp.group.sum_host(&[local_loss])?[0] / ranks as f64;
        let lr = self.schedule.lr(self.step as usize);
        let info = if !loss.is_finite() {
            StepInfo {
                grad_norm: f64::NAN,
                clip_scale: 0.0,
                skipped: true,
            }
        } else if let Some(zero) = &mut dp.zero {
            let mut params = self.model.params_mut();
            zero.step(&mut dp.group, &dp.buckets, &mut params, &synced.buckets, lr)?
        } else {
            let grads = synced.gradients(&dp.buckets, &leaves)?;
            drop(leaves);
            self.optimizer
                .step(&mut self.model.params_mut(), &grads, lr)?
        };
        let comm = CommStats {
            bytes: synced.bytes,
            busy_s: synced.busy.as_secs_f64(),
            exposed_s: synced.exposed.as_secs_f64(),
        };
        let stats = StepStats {
            loss,
            skipped: info.skipped,
            lr,
            grad_norm: info.grad_norm,
            tokens: n * b * t * ranks,
            saved_bytes,
            comm,
        };
        Ok(stats)
    }

    /// Sums `(total loss, target count)` of the validation batches each rank scored.
    pub(crate) fn reduce_eval(&mut self, total: f64, count: usize) -> Result<(f64, usize)> {
        match &mut self.parallel {
            None => Ok((total, count)),
            Some(dp) => {
                let v = dp.group.sum_host(&[total, count as f64])?;
                Ok((v[0], v[1] as usize))
            }
        }
    }

    /// The whole optimizer state for a checkpoint (gathered from every rank with ZeRO-1: a collective).
    pub(crate) fn full_optimizer(&mut self) -> Result<Option<crate::optim::AdamW>> {
        let Some(DataParallel {
            group,
            buckets,
            zero: Some(zero),
        }) = &mut self.parallel
        else {
            return Ok(None);
        };
        let mut sizes = Vec::new();
        self.model.visit(&mut |_, t| sizes.push(t.numel()));
        zero.to_full(group, buckets, &sizes).map(Some)
    }

    /// Waits for every rank (after a checkpoint, so none runs ahead of it).
    pub(crate) fn barrier(&mut self) -> Result<()> {
        match &mut self.parallel {
            None => Ok(()),
            Some(dp) => dp.group.barrier(),
        }
    }
}
