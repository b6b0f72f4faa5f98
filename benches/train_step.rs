//! A whole training step (forward, backward, AdamW) of the `small` config (and `medium` with
//! `TAPEGRAD_BENCH_MEDIUM=1`), and fused attention forward + backward against the composed reference at
//! T = 256 and 1024. Tokens/s = B · T / step time; FLOPs per token are in `Config::train_flops_per_token`.
//!
//! `cargo bench --bench train_step`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tapegrad::llama::{Config, Llama};
use tapegrad::ops::attention_reference;
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

fn attention(c: &mut Criterion) {
    for t in [256usize, 1024] {
        let (b, h, d) = (4, 8, 32);
        let mut rng = Rng::new(2);
        let q = Tensor::randn(&[b, h, t, d], 1.0, DType::F32, &mut rng);
        let k = Tensor::randn(&[b, h, t, d], 1.0, DType::F32, &mut rng);
        let v = Tensor::randn(&[b, h, t, d], 1.0, DType::F32, &mut rng);
        let mut group = c.benchmark_group(format!("attention_fwd_bwd/T{t}"));
        group.sample_size(10);
        let run = |fused: bool| {
            let tape = Tape::new();
            let (q, k, v) = (tape.watch(&q), tape.watch(&k), tape.watch(&v));
            let out = if fused {
                q.attention(&k, &v)
            } else {
                attention_reference(&q, &k, &v)
            }
            .unwrap();
            tape.backward(&out.sum_all().unwrap()).unwrap()
        };
        group.bench_function("fused", |bench| bench.iter(|| run(true)));
        group.bench_function("composed", |bench| bench.iter(|| run(false)));
        group.finish();
    }
}

criterion_group!(benches, train_step, attention);
criterion_main!(benches);
