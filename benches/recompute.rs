//! Training step time and memory under each recomputation mode (`none`, `selective`, `full`) for `small`, and
//! with `TAPEGRAD_BENCH_LARGE=1` also `medium` and a long-context config (dim 512, 8 layers, seq 2048,
//! batch 2). Before timing, each mode prints the bytes the tape holds for backward (whole model and per
//! layer) and the peak bytes of live tensors over one step.
//!
//! `cargo bench --bench recompute`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tapegrad::llama::{Config, Llama, Recompute};
use tapegrad::memory::{memory_stats, reset_peak};
use tapegrad::optim::{AdamW, AdamWConfig};
use tapegrad::{DType, Rng, Tape, Tensor};

struct Setup {
    name: &'static str,
    config: Config,
    batch: usize,
    seq: usize,
}

fn setups() -> Vec<Setup> {
    let preset = |name: &'static str| {
        let p = Config::preset(name).unwrap();
        let seq = p.config.max_seq_len;
        Setup {
            name,
            batch: p.batch_tokens / seq,
            seq,
            config: p.config,
        }
    };
    let mut out = vec![preset("small")];
    if std::env::var_os("TAPEGRAD_BENCH_LARGE").is_some() {
        out.push(preset("medium"));
        let mut long = Config::preset("medium").unwrap().config;
        long.max_seq_len = 2048;
        out.push(Setup {
            name: "long-2048",
            config: long,
            batch: 2,
            seq: 2048,
        });
    }
    out
}

/// Forward (and backward when `opt` is given) of one step; returns the tape's peak saved bytes.
fn step(model: &mut Llama, ids: &[u32], b: usize, t: usize, opt: Option<&mut AdamW>) -> usize {
    let tape = Tape::new();
    let leaves = model.watch(&tape);
    let loss = model.loss(&ids[..b * t], &ids[1..=b * t], b, t).unwrap();
    model.unwatch();
    let saved = tape.saved_bytes().peak;
    if let Some(opt) = opt {
        let mut grads = tape.backward(&loss).unwrap();
        let grads: Vec<Tensor> = leaves.iter().map(|l| grads.remove(l).unwrap()).collect();
        drop(leaves);
        opt.step(&mut model.params_mut(), &grads, 1e-4).unwrap();
    }
    saved
}

fn saved_per_layer(config: &Config, mode: Recompute, ids: &[u32], b: usize, t: usize) -> usize {
    let at = |layers: usize| {
        let mut c = config.clone();
        c.n_layers = layers;
        let mut model = Llama::new(c, DType::F32, 0).unwrap();
        model.recompute = mode;
        step(&mut model, ids, b, t, None)
    };
    at(2) - at(1)
}

fn recompute(c: &mut Criterion) {
    tapegrad::backend::cpu::keep_freed_memory();
    for setup in setups() {
        let (b, t) = (setup.batch, setup.seq);
        let mut rng = Rng::new(1);
        let vocab = setup.config.vocab_size as u64;
        let ids: Vec<u32> = (0..b * t + 1).map(|_| rng.below(vocab) as u32).collect();
        let mut group = c.benchmark_group(format!("recompute/{}", setup.name));
        group.throughput(Throughput::Elements((b * t) as u64));
        group.sample_size(10);
        for mode in [Recompute::None, Recompute::Selective, Recompute::Full] {
            let per_layer = saved_per_layer(&setup.config, mode, &ids, b, t);
            let mut model = Llama::new(setup.config.clone(), DType::F32, 0).unwrap();
            model.recompute = mode;
            let mut sizes = Vec::new();
            model.visit(&mut |_, p| sizes.push(p.numel()));
            let mut opt = AdamW::new(AdamWConfig::default(), &sizes);
            step(&mut model, &ids, b, t, Some(&mut opt));
            reset_peak();
            let saved = step(&mut model, &ids, b, t, Some(&mut opt));
            println!(
                "{} {mode}: tape holds {:.1} MB ({:.2} MB per layer); live tensors peak {:.1} MB",
                setup.name,
                saved as f64 / 1e6,
                per_layer as f64 / 1e6,
                memory_stats().peak_bytes as f64 / 1e6
            );
            group.bench_function(mode.to_string(), |bench| {
                bench.iter(|| step(&mut model, &ids, b, t, Some(&mut opt)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, recompute);
criterion_main!(benches);
