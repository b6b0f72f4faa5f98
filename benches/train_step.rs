//! A whole training step (forward, backward, AdamW) of the `small` config (and `medium` with
//! `TAPEGRAD_BENCH_MEDIUM=1`). Tokens/s = B · T / step time; FLOPs per token are in
//! `Config::train_flops_per_token`.
//!
//! `cargo bench --bench train_step`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tapegrad::llama::{Config, Llama};
use tapegrad::optim::{AdamW, AdamWConfig};
use tapegrad::{DType, Rng, Tape, Tensor};

fn train_step(c: &mut Criterion) {
    tapegrad::backend::cpu::keep_freed_memory();
    let mut names = vec!["small"];
    if std::env::var_os("TAPEGRAD_BENCH_MEDIUM").is_some() {
        names.push("medium");
    }
    for name in names {
        let preset = Config::preset(name).unwrap();
        let (t, b) = (
            preset.config.max_seq_len,
            preset.batch_tokens / preset.config.max_seq_len,
        );
        let vocab = preset.config.vocab_size as u64;
        let mut model = Llama::new(preset.config, DType::F32, 0).unwrap();
        let mut rng = Rng::new(1);
        let ids: Vec<u32> = (0..b * t + 1).map(|_| rng.below(vocab) as u32).collect();
        let mut sizes = Vec::new();
        model.visit(&mut |_, p| sizes.push(p.numel()));
        let mut opt = AdamW::new(AdamWConfig::default(), &sizes);
        let mut group = c.benchmark_group(format!("train_step/{name}"));
        group.throughput(Throughput::Elements((b * t) as u64));
        group.sample_size(10);
        group.bench_function("tokens", |bench| {
            bench.iter(|| {
                let tape = Tape::new();
                let leaves = model.watch(&tape);
                let loss = model.loss(&ids[..b * t], &ids[1..], b, t).unwrap();
                model.unwatch();
                let mut grads = tape.backward(&loss).unwrap();
                let grads: Vec<Tensor> = leaves.iter().map(|l| grads.remove(l).unwrap()).collect();
                drop(leaves);
                opt.step(&mut model.params_mut(), &grads, 1e-4).unwrap();
            })
        });
        group.finish();
    }
}

criterion_group!(benches, train_step);
criterion_main!(benches);
