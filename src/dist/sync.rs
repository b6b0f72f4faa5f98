//! Gradient buckets and their reduction during backward.
//!
//! [`Buckets`] groups the parameters in reverse order (backward finishes the output head first and the
//! embedding last) into flat buffers of about a given size, each padded to a multiple of the number of
//! ranks (so ZeRO-1 can split it evenly). [`GradSync`] collects gradients as backward reports them final;
//! as soon as a bucket is complete — and every bucket before it has been launched, so all ranks issue their
//! collectives in the same order — it flattens the bucket and submits its reduction to the [`Group`], which
//! runs it while backward goes on. [`GradSync::finish`] launches what is left (gradients the loss did not
//! reach are zeros) and waits for every bucket.

use super::group::{Group, Out};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::DType;
use std::time::{Duration, Instant};

/// One bucket: parameters (indices into the model's parameter list), where each starts in the flat buffer,
/// the used length and the padded length (a multiple of the number of ranks).
#[derive(Clone, Debug)]
pub struct Bucket {
    pub params: Vec<usize>,
    pub offsets: Vec<usize>,
    pub len: usize,
    pub padded: usize,
}

impl Bucket {
    /// The number of elements of the `i`-th parameter of this bucket.
    pub fn param_len(&self, i: usize) -> usize {
        self.offsets.get(i + 1).copied().unwrap_or(self.len) - self.offsets[i]
    }
}

/// The bucket layout of a model's parameters.
#[derive(Clone, Debug)]
pub struct Buckets {
    pub list: Vec<Bucket>,
    /// For each parameter: its bucket.
    pub of_param: Vec<usize>,
    pub ranks: usize,
}

impl Buckets {
    /// Buckets of at least `min_elems` elements each (the last may be smaller; a parameter is never split),
    /// filled from the last parameter to the first.
    pub fn new(sizes: &[usize], min_elems: usize, ranks: usize) -> Buckets {
        let mut list: Vec<Bucket> = Vec::new();
        let mut of_param = vec![0; sizes.len()];
        let mut open = None::<Bucket>;
        for p in (0..sizes.len()).rev() {
            let b = open.get_or_insert_with(|| Bucket {
                params: Vec::new(),
                offsets: Vec::new(),
                len: 0,
                padded: 0,
            });
            b.params.push(p);
            b.offsets.push(b.len);
            b.len += sizes[p];
            of_param[p] = list.len();
            if b.len >= min_elems.max(1) {
                list.push(open.take().unwrap());
            }
        }
        list.extend(open);
        for b in &mut list {
            b.padded = b.len.div_ceil(ranks) * ranks;
        }
        Buckets {
            list,
            of_param,
            ranks,
        }
    }

    /// All gradient elements, without padding.
    pub fn elements(&self) -> usize {
        self.list.iter().map(|b| b.len).sum()
    }
}

/// What a bucket's reduction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// Every rank gets the average of the whole bucket.
    AllReduce,
    /// Rank `r` gets the average of chunk `r` of the bucket (ZeRO-1).
    ReduceScatter,
}

/// The reduced gradients of one step.
pub struct Synced {
    /// Per bucket: the averaged bucket (`AllReduce`, `[padded]`) or this rank's averaged chunk
    /// (`ReduceScatter`, `[padded / ranks]`).
    pub buckets: Vec<Tensor>,
    /// Time the collectives ran, in all.
    pub busy: Duration,
    /// Time spent waiting for them after backward: the communication not hidden behind it.
    pub exposed: Duration,
    /// Gradient bytes each rank handed to the collectives.
    pub bytes: usize,
}

/// The gradients of one step on their way through the collectives.
pub struct GradSync<'a> {
    group: &'a mut Group,
    buckets: &'a Buckets,
    mode: Reduce,
    grads: Vec<Option<Tensor>>,
    missing: Vec<usize>,
    launched: usize,
    bytes: usize,
}

impl<'a> GradSync<'a> {
    pub fn new(group: &'a mut Group, buckets: &'a Buckets, mode: Reduce) -> GradSync<'a> {
        GradSync {
            missing: buckets.list.iter().map(|b| b.params.len()).collect(),
            grads: vec![None; buckets.of_param.len()],
            group,
            buckets,
            mode,
            launched: 0,
            bytes: 0,
        }
    }

    /// Parameter `param`'s gradient is final: keep it and launch every bucket that is now complete.
    pub fn ready(&mut self, param: usize, grad: &Tensor) -> Result<()> {
        if self.grads[param].replace(grad.detach()).is_none() {
            self.missing[self.buckets.of_param[param]] -= 1;
        }
        while self.launched < self.buckets.list.len() && self.missing[self.launched] == 0 {
            self.launch(self.launched)?;
            self.launched += 1;
        }
        Ok(())
    }

    fn launch(&mut self, index: usize) -> Result<()> {
        let bucket = &self.buckets.list[index];
        let mut parts = Vec::with_capacity(bucket.params.len() + 1);
        for &p in &bucket.params {
            let g = self.grads[p]
                .take()
                .expect("a complete bucket has every gradient");
            if g.dtype() != DType::F32 {
                return Err(Error::DType {
                    op: "gradient bucket",
                    msg: format!("gradient {p} is {}, expected f32", g.dtype()),
                });
            }
            parts.push(g.reshape(&[g.numel()])?);
        }
        if bucket.padded > bucket.len {
            let device = parts.first().map_or(Device::Cpu, Tensor::device);
            parts.push(Tensor::zeros_on(
                &[bucket.padded - bucket.len],
                DType::F32,
                device,
            )?);
        }
        let flat = Tensor::cat(&parts, 0)?;
        drop(parts);
        self.bytes += bucket.padded * 4;
        let (mode, ranks) = (self.mode, self.buckets.ranks);
        let chunk = bucket.padded / ranks;
        self.group.submit("gradient bucket", move |c| {
            let scale = 1.0 / ranks as f64;
            match mode {
                Reduce::AllReduce => {
                    let mut flat = flat;
                    c.all_reduce(&mut flat)?;
                    Ok(Out::Tensor(flat.scale(scale)?))
                }
                Reduce::ReduceScatter => {
                    let mut mine = Tensor::zeros_on(&[chunk], DType::F32, flat.device())?;
                    c.reduce_scatter(&flat, &mut mine)?;
                    Ok(Out::Tensor(mine.scale(scale)?))
                }
            }
        })
    }

    /// Launches the buckets not launched yet (gradients never reported are zeros of the parameters' shapes,
    /// given as `params`) and waits for all of them.
    pub fn finish(mut self, params: &[Tensor]) -> Result<Synced> {
        for (p, g) in self.grads.iter_mut().enumerate() {
            if g.is_none() && self.launched <= self.buckets.of_param[p] {
                let t = &params[p];
                *g = Some(Tensor::zeros_on(t.shape(), DType::F32, t.device())?);
            }
        }
        while self.launched < self.buckets.list.len() {
            self.launch(self.launched)?;
            self.launched += 1;
        }
        let start = Instant::now();
        let mut busy = Duration::ZERO;
        let mut buckets = Vec::with_capacity(self.buckets.list.len());
        for _ in 0..self.buckets.list.len() {
            let done = self.group.wait()?;
            busy += done.busy;
            match done.out {
                Out::Tensor(t) => buckets.push(t),
                _ => unreachable!("a bucket's reduction returns a tensor"),
            }
        }
        Ok(Synced {
            buckets,
            busy,
            exposed: start.elapsed(),
            bytes: self.bytes,
        })
    }
}

impl Synced {
    /// The averaged gradient of every parameter (`AllReduce` only), as views into the buckets.
    pub fn gradients(&self, layout: &Buckets, params: &[Tensor]) -> Result<Vec<Tensor>> {
        let mut out = vec![None; params.len()];
        for (bucket, flat) in layout.list.iter().zip(&self.buckets) {
            for (&p, &offset) in bucket.params.iter().zip(&bucket.offsets) {
                let shape = params[p].shape();
                let n = params[p].numel();
                out[p] = Some(flat.narrow(0, offset, n)?.reshape(shape)?);
            }
        }
        Ok(out
            .into_iter()
            .map(|g| g.expect("every parameter is in a bucket"))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fill_from_the_last_parameter_and_pad_to_the_ranks() {
        let b = Buckets::new(&[5, 3, 4, 2], 6, 4);
        let params: Vec<_> = b.list.iter().map(|b| b.params.clone()).collect();
        assert_eq!(params, [vec![3, 2], vec![1, 0]]);
        assert_eq!(b.list[0].offsets, [0, 2]);
        assert_eq!((b.list[0].len, b.list[0].padded), (6, 8));
        assert_eq!((b.list[1].len, b.list[1].padded), (8, 8));
        assert_eq!(b.of_param, [1, 1, 0, 0]);
        assert_eq!(b.elements(), 14);
    }

    use crate::dist::local::ThreadGroup;

    /// Runs `f` on each of `size` ranks (threads), each with its own [`Group`].
    fn on_ranks<R: Send>(size: usize, f: impl Fn(usize, Group) -> R + Sync) -> Vec<R> {
        let comms = ThreadGroup::new(size, Duration::from_secs(20));
        std::thread::scope(|s| {
            let f = &f;
            let handles: Vec<_> = comms
                .into_iter()
                .enumerate()
                .map(|(r, c)| {
                    s.spawn(move || f(r, Group::new(Box::new(c), Duration::from_secs(20))))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Parameters of 2, 3 and 1 elements in buckets of at least 3 over 3 ranks: bucket 0 holds parameters 2
    /// and 1 (4 elements, padded to 6), bucket 1 parameter 0 (2, padded to 3).
    fn layout() -> (Buckets, Vec<Tensor>) {
        let b = Buckets::new(&[2, 3, 1], 3, 3);
        assert_eq!(b.list[0].params, [2, 1]);
        assert_eq!((b.list[0].padded, b.list[1].padded), (6, 3));
        let params = [2, 3, 1].map(|n| Tensor::zeros(&[n], DType::F32)).to_vec();
        (b, params)
    }

    /// Rank `r`'s gradient of parameter `p`: `[100 p + 10 r + i]`.
    fn grad(p: usize, r: usize, n: usize) -> Tensor {
        let v = (0..n).map(|i| (100 * p + 10 * r + i) as f32).collect();
        Tensor::from_vec(v, &[n]).unwrap()
    }

    #[test]
    fn a_bucket_is_launched_once_it_and_every_bucket_before_it_are_complete() {
        let (layout, params) = layout();
        let out = on_ranks(3, |r, mut group| {
            let mut sync = GradSync::new(&mut group, &layout, Reduce::AllReduce);
            let mut launched = Vec::new();
            // Bucket 1 complete first: it waits for bucket 0, so every rank submits in the same order.
            sync.ready(0, &grad(0, r, 2)).unwrap();
            launched.push(sync.launched);
            sync.ready(2, &grad(2, r, 1)).unwrap();
            launched.push(sync.launched);
            // Parameter 2 reported twice: it still counts once.
            sync.ready(2, &grad(2, r, 1)).unwrap();
            launched.push(sync.launched);
            sync.ready(1, &grad(1, r, 3)).unwrap();
            launched.push(sync.launched);
            let synced = sync.finish(&params).unwrap();
            assert!(synced.busy > Duration::ZERO);
            assert_eq!(synced.bytes, (6 + 3) * 4);
            let grads = synced.gradients(&layout, &params).unwrap();
            let values: Vec<Vec<f32>> = grads.iter().map(|g| g.to_vec().unwrap()).collect();
            let padding = synced.buckets[0].to_vec::<f32>().unwrap()[4..].to_vec();
            (launched, values, padding)
        });
        for (launched, values, padding) in out {
            assert_eq!(launched, [0, 0, 0, 2]);
            // The mean over ranks of 100 p + 10 r + i is 100 p + 10 + i.
            assert_eq!(
                values,
                [vec![10.0, 11.0], vec![110.0, 111.0, 112.0], vec![210.0]]
            );
            assert_eq!(padding, [0.0, 0.0]);
        }
    }

    #[test]
    fn finish_launches_what_is_left_with_zeros_for_gradients_never_reported() {
        let (layout, params) = layout();
        let out = on_ranks(3, |r, mut group| {
            let mut sync = GradSync::new(&mut group, &layout, Reduce::ReduceScatter);
            // Parameter 1 never reported: nothing is launched before finish.
            sync.ready(2, &grad(2, r, 1)).unwrap();
            sync.ready(0, &grad(0, r, 2)).unwrap();
            assert_eq!(sync.launched, 0);
            let synced = sync.finish(&params).unwrap();
            assert_eq!(synced.bytes, (6 + 3) * 4);
            let chunks: Vec<Vec<f32>> =
                synced.buckets.iter().map(|g| g.to_vec().unwrap()).collect();
            chunks
        });
        // Bucket 0 is [p2, p1 (zeros), pad, pad]: 210, 0, 0, 0, 0, 0; bucket 1 is [10, 11, pad].
        let expect = [
            [vec![210.0, 0.0], vec![10.0]],
            [vec![0.0, 0.0], vec![11.0]],
            [vec![0.0, 0.0], vec![0.0]],
        ];
        for (r, chunks) in out.into_iter().enumerate() {
            assert_eq!(chunks, expect[r], "rank {r}");
        }
    }
}
