//! GPU kernels (`--features cuda`, run by `scripts/gpu-check.sh` on a GPU machine): causal flash attention
//! forward, backward and both, bf16, head dims 64 and 128, T = 512 … 8192 at 16k tokens per batch and 2048
//! model width; RMSNorm and SwiGLU forward and backward; and the device-to-device copy they are measured
//! against; a 7B-sized projection over quantized weights (expanded by `kernels/dequant.cu`, then cuBLAS) against
//! the same product over a dense bf16 weight. Each benchmark's work (FLOPs as in the FlashAttention-2 paper — forward 4·T²·D·H·B halved for
//! causal, backward 2.5× forward — or bytes read + written once) goes to `target/gpu-bench-work.json`, so the
//! summary turns criterion's times into TFLOP/s and GB/s. Without a GPU it prints why and measures nothing.
//!
//! `cargo bench --features cuda --bench gpu`

use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::BTreeMap;
use std::time::Duration;
use tapegrad::backend::cuda;
use tapegrad::io::gguf::GgmlType;
use tapegrad::{DType, Device, QuantMatrix, Rng, Tape, Tensor};

fn randn(shape: &[usize], dtype: DType, dev: Device, seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, DType::F32, &mut Rng::new(seed))
        .to_dtype(dtype)
        .and_then(|t| t.to_device(dev))
        .expect("upload")
}

fn gpu_benches(c: &mut Criterion) {
    if let Some(why) = cuda::unavailable() {
        eprintln!("gpu benches skipped: {why}");
        return;
    }
    let dev = Device::Cuda(0);
    let gpu = cuda::gpu(0).expect("gpu");
    let sync = || gpu.synchronize().expect("synchronize");
    let mut work: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut group = c.benchmark_group("gpu");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));

    for d in [64usize, 128] {
        let heads = 2048 / d;
        for t in [512usize, 1024, 2048, 4096, 8192] {
            let b = 16384 / t;
            let q = randn(&[b, t, heads, d], DType::BF16, dev, 1)
                .permute(&[0, 2, 1, 3])
                .unwrap();
            let k = randn(&[b, t, heads, d], DType::BF16, dev, 2)
                .permute(&[0, 2, 1, 3])
                .unwrap();
            let v = randn(&[b, t, heads, d], DType::BF16, dev, 3)
                .permute(&[0, 2, 1, 3])
                .unwrap();
            let fwd_flops = 4.0 * (t * t * d * heads * b) as f64 / 2.0;
            let id = |pass: &str| format!("attention_{pass}/d{d}/T{t}");
            work.insert(id("fwd"), (fwd_flops, 0.0));
            work.insert(id("bwd"), (2.5 * fwd_flops, 0.0));
            work.insert(id("fwd_bwd"), (3.5 * fwd_flops, 0.0));
            group.bench_function(id("fwd"), |bench| {
                bench.iter(|| {
                    let o = q.attention(&k, &v).unwrap();
                    sync();
                    o
                })
            });
            let step = |with_backward: bool| {
                let tape = Tape::new();
                let (q, k, v) = (tape.watch(&q), tape.watch(&k), tape.watch(&v));
                let o = q.attention(&k, &v).unwrap();
                sync();
                let seed = Tensor::ones(o.shape(), DType::BF16).to_device(dev).unwrap();
                let start = std::time::Instant::now();
                if with_backward {
                    let grads = tape.backward_with_seed(&o, seed).unwrap();
                    sync();
                    drop(grads);
                }
                start.elapsed()
            };
            group.bench_function(id("bwd"), |bench| {
                bench.iter_custom(|iters| (0..iters).map(|_| step(true)).sum())
            });
            group.bench_function(id("fwd_bwd"), |bench| {
                bench.iter(|| {
                    let tape = Tape::new();
                    let (q, k, v) = (tape.watch(&q), tape.watch(&k), tape.watch(&v));
                    let o = q.attention(&k, &v).unwrap();
                    let seed = Tensor::ones(o.shape(), DType::BF16).to_device(dev).unwrap();
                    let grads = tape.backward_with_seed(&o, seed).unwrap();
                    sync();
                    grads.len()
                })
            });
        }
    }

    let (rows, cols) = (16384usize, 4096usize);
    for dtype in [DType::F32, DType::BF16] {
        let size = dtype.size_in_bytes() as f64;
        let n = (rows * cols) as f64;
        let x = randn(&[rows, cols], dtype, dev, 4);
        let w = randn(&[cols], dtype, dev, 5);
        let a = randn(&[rows, cols], dtype, dev, 6);
        let name = |what: &str| format!("{what}/{dtype}/{rows}x{cols}");
        // Bytes: each input read once, each output written once (rstd and the weight are negligible).
        work.insert(name("copy"), (0.0, 2.0 * n * size));
        work.insert(name("rmsnorm_fwd"), (0.0, 2.0 * n * size));
        work.insert(name("rmsnorm_bwd"), (0.0, 3.0 * n * size));
        work.insert(name("swiglu_fwd"), (0.0, 3.0 * n * size));
        work.insert(name("swiglu_bwd"), (0.0, 5.0 * n * size));
        let buffer = gpu.alloc(dtype, rows * cols).expect("alloc");
        group.bench_function(name("copy"), |bench| {
            bench.iter(|| {
                let copy = buffer.try_clone().unwrap();
                sync();
                copy
            })
        });
        group.bench_function(name("rmsnorm_fwd"), |bench| {
            bench.iter(|| {
                let y = x.rms_norm(&w, 1e-6).unwrap();
                sync();
                y
            })
        });
        group.bench_function(name("swiglu_fwd"), |bench| {
            bench.iter(|| {
                let y = x.swiglu(&a).unwrap();
                sync();
                y
            })
        });
        for (op, f) in [
            ("rmsnorm_bwd", &|x: &Tensor, y: &Tensor| {
                x.rms_norm(y, 1e-6) as _
            }),
            ("swiglu_bwd", &|x: &Tensor, y: &Tensor| x.swiglu(y)),
        ]
            as [(&str, &dyn Fn(&Tensor, &Tensor) -> tapegrad::Result<Tensor>); 2]
        {
            let other = if op == "rmsnorm_bwd" { &w } else { &a };
            group.bench_function(name(op), |bench| {
                bench.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let tape = Tape::new();
                            let (xt, ot) = (tape.watch(&x), tape.watch(other));
                            let y = f(&xt, &ot).unwrap();
                            let seed = Tensor::ones(y.shape(), dtype).to_device(dev).unwrap();
                            sync();
                            let start = std::time::Instant::now();
                            let grads = tape.backward_with_seed(&y, seed).unwrap();
                            sync();
                            let elapsed = start.elapsed();
                            drop(grads);
                            elapsed
                        })
                        .sum()
                })
            });
        }
    }
    // A 7B-sized projection over a frozen quantized weight (QLoRA's base): the blocks expanded to bf16 by
    // `kernels/dequant.cu` then cuBLAS, against the same product over a dense bf16 weight.
    let (m, n, k) = (4096usize, 11008, 4096);
    let values: Vec<f32> = {
        let mut rng = Rng::new(7);
        (0..n * k).map(|_| rng.normal() as f32 * 0.02).collect()
    };
    let x = randn(&[m, k], DType::BF16, dev, 8);
    let dense = Tensor::from_vec(values.clone(), &[n, k])
        .and_then(|w| w.to_dtype(DType::BF16))
        .and_then(|w| w.to_device(dev))
        .expect("dense weight");
    let flops = 2.0 * (m * n * k) as f64;
    let shape = format!("{m}x{n}x{k}");
    work.insert(format!("linear/bf16/{shape}"), (flops, 0.0));
    group.bench_function(format!("linear/bf16/{shape}"), |bench| {
        bench.iter(|| {
            let y = x.linear(&dense).unwrap();
            sync();
            y
        })
    });
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let w = QuantMatrix::quantize(&values, n, k, ty).expect("quantized weight");
        let name = format!("quant_linear/{ty}/{shape}");
        work.insert(name.clone(), (flops, 0.0));
        group.bench_function(name, |bench| {
            bench.iter(|| {
                let y = x.linear_quantized(&w).unwrap();
                sync();
                y
            })
        });
    }
    group.finish();
    let json: serde_json::Value = work
        .into_iter()
        .map(|(k, (flops, bytes))| {
            (
                format!("gpu/{k}"),
                serde_json::json!({"flops": flops, "bytes": bytes}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let path = std::path::Path::new("target").join("gpu-bench-work.json");
    let _ = std::fs::create_dir_all("target");
    std::fs::write(&path, json.to_string()).expect("write the work file");
}

criterion_group!(benches, gpu_benches);
criterion_main!(benches);
