//! ZeRO stage 1: the AdamW moments sharded across ranks. Each bucket of the gradient layout ([`Buckets`]) is
//! split into `ranks` equal chunks and rank `r` keeps the moments of chunk `r` of every bucket only — a
//! `1 / ranks` share of the optimizer state. A step takes this rank's averaged gradient chunks (from a
//! reduce-scatter), computes the global gradient norm from every rank's share, updates its chunk of the
//! parameters with the same arithmetic as [`AdamW`], and all-gathers the updated chunks into every rank's
//! full parameters. Host parameters only.

use super::group::{Group, Out};
use super::sync::Buckets;
use crate::error::{Error, Result};
use crate::optim::adamw::{update_slices, AdamW, AdamWConfig, StepInfo};
use crate::tensor::Tensor;
use crate::DType;

/// The part of parameter `param` in a rank's chunk of a bucket: elements `param_start..param_start + len`
/// of the parameter are elements `chunk_start..chunk_start + len` of the chunk.
#[derive(Clone, Copy, Debug)]
struct Piece {
    param: usize,
    param_start: usize,
    chunk_start: usize,
    len: usize,
}

/// The pieces of chunk `rank` of every bucket.
fn pieces(layout: &Buckets, rank: usize) -> Vec<Vec<Piece>> {
    layout
        .list
        .iter()
        .map(|b| {
            let c = b.padded / layout.ranks;
            let (lo, hi) = (rank * c, (rank + 1) * c);
            b.params
                .iter()
                .zip(&b.offsets)
                .enumerate()
                .filter_map(|(i, (&param, &offset))| {
                    let end = offset + b.param_len(i);
                    let (s, e) = (offset.max(lo), end.min(hi));
                    (s < e).then(|| Piece {
                        param,
                        param_start: s - offset,
                        chunk_start: s - lo,
                        len: e - s,
                    })
                })
                .collect()
        })
        .collect()
}

/// AdamW with this rank's shard of the moments.
#[derive(Clone, Debug)]
pub struct ZeroAdamW {
    /// Configuration and step count (its own moments stay empty).
    inner: AdamW,
    pieces: Vec<Vec<Piece>>,
    /// Per bucket: the moments of this rank's chunk.
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl ZeroAdamW {
    /// This rank's shard of `full` (every rank holds the same full state when a run starts or resumes).
    pub fn from_full(full: &AdamW, layout: &Buckets, rank: usize) -> ZeroAdamW {
        let pieces = pieces(layout, rank);
        let shard = |moments: &[Vec<f32>]| -> Vec<Vec<f32>> {
            layout
                .list
                .iter()
                .zip(&pieces)
                .map(|(b, ps)| {
                    let mut chunk = vec![0.0; b.padded / layout.ranks];
                    for p in ps {
                        chunk[p.chunk_start..p.chunk_start + p.len].copy_from_slice(
                            &moments[p.param][p.param_start..p.param_start + p.len],
                        );
                    }
                    chunk
                })
                .collect()
        };
        let mut inner = AdamW::new(full.config.clone(), &[]);
        inner.step = full.step;
        ZeroAdamW {
            m: shard(&full.m),
            v: shard(&full.v),
            inner,
            pieces,
        }
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.inner.config
    }

    /// Elements of optimizer state (both moments) this rank holds.
    pub fn state_elements(&self) -> usize {
        self.m.iter().chain(&self.v).map(Vec::len).sum()
    }

    /// The whole state, gathered from every rank (a collective: every rank must call it).
    pub fn to_full(&self, group: &mut Group, layout: &Buckets, sizes: &[usize]) -> Result<AdamW> {
        let mut full = AdamW::new(self.inner.config.clone(), sizes);
        full.step = self.inner.step;
        for (moments, target) in [(&self.m, &mut full.m), (&self.v, &mut full.v)] {
            let gathered = gather_chunks(group, layout, moments)?;
            for (b, flat) in layout.list.iter().zip(gathered) {
                for (&p, &offset) in b.params.iter().zip(&b.offsets) {
                    let n = target[p].len();
                    target[p].copy_from_slice(&flat[offset..offset + n]);
                }
            }
        }
        Ok(full)
    }

    /// One update: `grads[b]` is this rank's averaged chunk of bucket `b`; `params` are the whole
    /// parameters, updated on every rank.
    pub fn step(
        &mut self,
        group: &mut Group,
        layout: &Buckets,
        params: &mut [&mut Tensor],
        grads: &[Tensor],
        lr: f64,
    ) -> Result<StepInfo> {
        if grads.len() != layout.list.len() || params.len() != layout.of_param.len() {
            return Err(Error::invalid(
                "zero1",
                format!(
                    "{} gradient chunks and {} parameters for {} buckets of {} parameters",
                    grads.len(),
                    params.len(),
                    layout.list.len(),
                    layout.of_param.len()
                ),
            ));
        }
        if params
            .iter()
            .any(|p| p.is_cuda() || p.dtype() != DType::F32)
        {
            return Err(Error::Device {
                op: "zero1",
                msg: "ZeRO-1 updates f32 parameters in host memory; on GPUs train without it"
                    .into(),
            });
        }
        let grads: Vec<Vec<f32>> = grads
            .iter()
            .map(|g| g.to_vec::<f32>())
            .collect::<Result<_>>()?;
        let local: f64 = grads
            .iter()
            .map(|g| g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
            .sum();
        let grad_norm = group.sum_host(&[local])?[0].sqrt();
        if !grad_norm.is_finite() {
            return Ok(StepInfo {
                grad_norm,
                clip_scale: 0.0,
                skipped: true,
            });
        }
        let k = self.inner.begin_step(grad_norm, lr);
        let mut chunks = Vec::with_capacity(grads.len());
        for (b, g) in grads.iter().enumerate() {
            let mut chunk = vec![0.0f32; g.len()];
            for piece in &self.pieces[b] {
                let param = &params[piece.param];
                let decay = self.inner.decay_for(param.ndim(), lr);
                let range = piece.chunk_start..piece.chunk_start + piece.len;
                let values = param.contiguous()?;
                let values = values.contiguous_data::<f32>();
                chunk[range.clone()]
                    .copy_from_slice(&values[piece.param_start..piece.param_start + piece.len]);
                update_slices(
                    &self.inner.config,
                    &k,
                    decay,
                    &mut chunk[range.clone()],
                    &mut self.m[b][range.clone()],
                    &mut self.v[b][range.clone()],
                    &g[range],
                );
            }
            chunks.push(chunk);
        }
        let gathered = gather_chunks(group, layout, &chunks)?;
        for (b, flat) in layout.list.iter().zip(gathered) {
            for (&p, &offset) in b.params.iter().zip(&b.offsets) {
                let data = params[p].data_mut::<f32>()?;
                let n = data.len();
                data.copy_from_slice(&flat[offset..offset + n]);
            }
        }
        Ok(StepInfo {
            grad_norm,
            clip_scale: k.clip_scale,
            skipped: false,
        })
    }
}

/// Every bucket's chunks from all ranks, concatenated in rank order (one all-gather per bucket, all in
/// flight at once).
fn gather_chunks(
    group: &mut Group,
    layout: &Buckets,
    chunks: &[Vec<f32>],
) -> Result<Vec<Vec<f32>>> {
    for (b, chunk) in layout.list.iter().zip(chunks) {
        let send = Tensor::from_slice(chunk, &[chunk.len()])?;
        let padded = b.padded;
        group.submit("all_gather", move |c| {
            let mut recv = Tensor::zeros(&[padded], DType::F32);
            c.all_gather(&send, &mut recv)?;
            Ok(Out::Tensor(recv))
        })?;
    }
    (0..chunks.len())
        .map(|_| match group.wait()?.out {
            Out::Tensor(t) => t.to_vec::<f32>(),
            _ => unreachable!("an all-gather returns a tensor"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_holds_its_chunk_of_every_bucket_and_the_config() {
        // Parameters of 5, 3 and 4 elements over 3 ranks: buckets [p2, p1] (7, padded to 9) and [p0] (5, to 6).
        let layout = Buckets::new(&[5, 3, 4], 6, 3);
        let config = AdamWConfig {
            beta1: 0.5,
            weight_decay: 0.25,
            ..AdamWConfig::default()
        };
        let mut full = AdamW::new(config.clone(), &[5, 3, 4]);
        for (p, m) in full.m.iter_mut().enumerate() {
            for (i, v) in m.iter_mut().enumerate() {
                *v = (10 * p + i) as f32;
            }
        }
        full.step = 7;
        let shards: Vec<ZeroAdamW> = (0..3)
            .map(|r| ZeroAdamW::from_full(&full, &layout, r))
            .collect();
        for (r, z) in shards.iter().enumerate() {
            // A third of each padded bucket, both moments.
            assert_eq!(z.state_elements(), 2 * (3 + 2), "rank {r}");
            assert_eq!(z.config().beta1, 0.5);
            assert_eq!(z.config().weight_decay, 0.25);
        }
        // Bucket 0 is p2 (20, 21, 22, 23) then p1 (10, 11, 12), then padding; bucket 1 is p0 (0..5), padding.
        assert_eq!(shards[0].m, [vec![20.0, 21.0, 22.0], vec![0.0, 1.0]]);
        assert_eq!(shards[1].m, [vec![23.0, 10.0, 11.0], vec![2.0, 3.0]]);
        assert_eq!(shards[2].m, [vec![12.0, 0.0, 0.0], vec![4.0, 0.0]]);
    }

    #[test]
    fn a_step_with_mismatched_counts_or_non_f32_parameters_is_refused() {
        let layout = Buckets::new(&[2, 3], 4, 1);
        let mut zero =
            ZeroAdamW::from_full(&AdamW::new(AdamWConfig::default(), &[2, 3]), &layout, 0);
        let mut group = Group::new(
            Box::new(crate::dist::local::Single),
            std::time::Duration::from_secs(5),
        );
        let (mut a, mut b) = (
            Tensor::zeros(&[2], DType::F32),
            Tensor::zeros(&[3], DType::F32),
        );
        let grad = Tensor::zeros(&[5], DType::F32);
        // One gradient chunk too many, then one parameter too few.
        let two = [grad.clone(), grad.clone()];
        let err = zero
            .step(&mut group, &layout, &mut [&mut a, &mut b], &two, 0.1)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("2 gradient chunks and 2 parameters"),
            "{err}"
        );
        let err = zero
            .step(
                &mut group,
                &layout,
                &mut [&mut a],
                std::slice::from_ref(&grad),
                0.1,
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("1 gradient chunks and 1 parameters"),
            "{err}"
        );
        let mut wide = Tensor::zeros(&[3], DType::F64);
        let err = zero
            .step(
                &mut group,
                &layout,
                &mut [&mut a, &mut wide],
                std::slice::from_ref(&grad),
                0.1,
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("f32 parameters in host memory"),
            "{err}"
        );
        zero.step(&mut group, &layout, &mut [&mut a, &mut b], &[grad], 0.1)
            .unwrap();
    }
}
