//! Data-parallel training with ranks as threads (`ThreadGroup`), the same code path MPI and NCCL take:
//! 2 ranks with half the batch each (at once, or in two accumulated micro-batches) follow 1 rank with the whole
//! batch, with and without ZeRO-1; replicas
//! stay identical; a ZeRO-1 checkpoint holds the whole optimizer state and resumes exactly; gradients are
//! reported to the buckets as soon as they are final.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tapegrad::dist::ThreadGroup;
use tapegrad::llama::parallel::ParallelOptions;
use tapegrad::llama::train::{TrainOptions, Trainer};
use tapegrad::llama::{Config, Llama};
use tapegrad::optim::AdamWConfig;
use tapegrad::{DType, Tape, Tensor};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tapegrad-par-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(dir: &Path, batch_size: usize) -> TrainOptions {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let corpus = dir.join("corpus.txt");
    if !corpus.exists() {
        let text = std::fs::read_to_string(root.join("austen.txt")).unwrap();
        std::fs::write(&corpus, &text[..150_000]).unwrap();
    }
    TrainOptions {
        config: Config::preset("tiny").unwrap().config,
        steps: 20,
        batch_size,
        seq_len: 32,
        lr: 3e-3,
        warmup_steps: 3,
        final_lr_fraction: 0.1,
        data: vec![(corpus, 1.0)],
        cache_dir: dir.join("cache"),
        seed: 11,
        optimizer: AdamWConfig::default(),
        ..Default::default()
    }
}

/// Small buckets, so a step has several and their reductions overlap backward.
fn parallel(zero1: bool) -> ParallelOptions {
    ParallelOptions {
        bucket_elements: 20_000,
        zero1,
        timeout: Duration::from_secs(60),
    }
}

fn parameters(t: &Trainer) -> Vec<f32> {
    let mut out = Vec::new();
    t.model
        .visit(&mut |_, p| out.extend(p.to_vec::<f32>().unwrap()));
    out
}

/// Runs `ranks` trainers as threads; `body` gets each rank's distributed trainer and returns a result.
fn on_ranks<R: Send>(
    ranks: usize,
    zero1: bool,
    make: impl Fn() -> Trainer + Sync,
    body: impl Fn(&mut Trainer) -> R + Sync,
) -> Vec<R> {
    let group = ThreadGroup::new(ranks, Duration::from_secs(60));
    std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|comm| {
                let (make, body) = (&make, &body);
                s.spawn(move || {
                    let mut trainer = make();
                    trainer.distribute(Box::new(comm), parallel(zero1)).unwrap();
                    body(&mut trainer)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn relative_gap(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(1e-12))
        .fold(0.0, f64::max)
}

#[test]
fn two_ranks_with_half_the_batch_follow_one_rank_with_all_of_it() {
    let dir = temp_dir("equal");
    let mut single = Trainer::new(options(&dir, 4)).unwrap();
    let expected: Vec<f64> = (0..20).map(|_| single.train_step().unwrap().loss).collect();
    let expected_eval = single.evaluate(3).unwrap().nats_per_token;
    let expected_params = parameters(&single);
    // Two ranks with half the batch each, or a quarter of it in each of two accumulated micro-batches.
    for (zero1, batch_size, grad_accum) in
        [(false, 2, 1), (true, 2, 1), (false, 1, 2), (true, 1, 2)]
    {
        let runs = on_ranks(
            2,
            zero1,
            || {
                let options = TrainOptions {
                    grad_accum,
                    ..options(&dir, batch_size)
                };
                Trainer::new(options).unwrap()
            },
            |t| {
                let losses: Vec<f64> = (0..20).map(|_| t.train_step().unwrap().loss).collect();
                let eval = t.evaluate(3).unwrap().nats_per_token;
                (losses, eval, parameters(t))
            },
        );
        let (losses, eval, params) = &runs[0];
        let gap = relative_gap(losses, &expected);
        assert!(
            gap <= 1e-5,
            "zero1 {zero1}, accumulating {grad_accum}: losses differ by {gap:e} relative"
        );
        assert!(((eval - expected_eval) / expected_eval).abs() <= 1e-5);
        assert_eq!(runs[1].0, *losses, "both ranks report the global loss");
        assert_eq!(runs[1].2, *params, "the replicas stay identical");
        let drift = params
            .iter()
            .zip(&expected_params)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            drift < 1e-4,
            "zero1 {zero1}, accumulating {grad_accum}: parameters drift by {drift}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_zero1_checkpoint_holds_the_whole_state_and_resumes_exactly() {
    let dir = temp_dir("zero-resume");
    let ckpts = dir.join("ckpts");
    let _ = Trainer::new(options(&dir, 2)).unwrap(); // caches built once, before the ranks start
    let straight = on_ranks(
        2,
        true,
        || Trainer::new(options(&dir, 2)).unwrap(),
        |t| {
            for _ in 0..3 {
                t.train_step().unwrap();
            }
            let written = t.save(&ckpts, 2).unwrap();
            let rest: Vec<f64> = (0..3).map(|_| t.train_step().unwrap().loss).collect();
            (written.is_some(), rest)
        },
    );
    assert_eq!(
        straight.iter().map(|r| r.0).collect::<Vec<_>>(),
        [true, false],
        "rank 0 writes"
    );
    let ckpt = tapegrad::llama::checkpoint::load_checkpoint(&ckpts).unwrap();
    let mut sizes = Vec::new();
    ckpt.model.visit(&mut |_, p| sizes.push(p.numel()));
    let state_sizes: Vec<usize> = ckpt.optimizer.m.iter().map(Vec::len).collect();
    assert_eq!(
        state_sizes, sizes,
        "the gathered moments cover every parameter"
    );
    assert!(ckpt.optimizer.v.iter().flatten().any(|&x| x > 0.0));
    assert_eq!(ckpt.optimizer.step, 3);

    let resumed = on_ranks(
        2,
        true,
        || Trainer::resume(&ckpts, options(&dir, 2)).unwrap(),
        |t| {
            (0..3)
                .map(|_| t.train_step().unwrap().loss)
                .collect::<Vec<f64>>()
        },
    );
    assert_eq!(resumed[0], straight[0].1, "resumed bit for bit");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn streaming_backward_reports_each_gradient_once_as_soon_as_it_is_final() {
    let mut model = Llama::new(Config::preset("tiny").unwrap().config, DType::F32, 3).unwrap();
    let (b, t) = (2, 16);
    let ids: Vec<u32> = (0..b * t + 1).map(|i| (i * 29 % 500) as u32).collect();
    let tape = Tape::new();
    let leaves = model.watch(&tape);
    let loss = model.loss(&ids[..b * t], &ids[1..], b, t).unwrap();
    model.unwatch();
    let mut order = Vec::new();
    let mut reported: Vec<Option<Tensor>> = vec![None; leaves.len()];
    let grads = tape
        .backward_streaming(&loss, &leaves, &mut |i, g| {
            assert!(reported[i].is_none(), "parameter {i} reported twice");
            reported[i] = Some(g.clone());
            order.push(i);
            Ok(())
        })
        .unwrap();
    for (i, leaf) in leaves.iter().enumerate() {
        let reported = reported[i].as_ref().expect("every parameter is reported");
        assert_eq!(
            reported.to_vec::<f32>().unwrap(),
            grads.get(leaf).unwrap().to_vec::<f32>().unwrap(),
            "parameter {i}: the reported gradient is the final one"
        );
    }
    // The output head (last parameter) is final long before the embedding (first).
    let position = |i: usize| order.iter().position(|&j| j == i).unwrap();
    assert!(position(leaves.len() - 1) < position(0), "{order:?}");
    assert_eq!(*order.last().unwrap(), 0, "the embedding is final last");
}
