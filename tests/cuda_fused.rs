//! The GPU paths of the matrix product (cuBLAS), the fused kernels (attention, RMSNorm, SwiGLU, the head fused
//! with the cross-entropy), products with quantized weights (every block format, f32 and bf16), AdamW and
//! training steps (dense, and LoRA over a quantized base) and benchmark scoring, each against the CPU on the same
//! inputs, forward and backward. They skip, saying why, on a machine without a GPU (and fail there under
//! `TAPEGRAD_REQUIRE_GPU=1`, as `scripts/gpu-check.sh` runs them).

mod common;

use common::{random_quant, QUANT_FORMATS};
use tapegrad::io::gguf::GgmlType;
use tapegrad::llama::{Config, Llama, LoraConfig};
use tapegrad::ops::with_gpu_bf16;
use tapegrad::optim::{AdamW, AdamWConfig};
use tapegrad::{DType, Device, Rng, Tape, Tensor};

/// Held exclusively by the test that counts the driver's allocations (a count for the whole process), and
/// shared by the long tests that allocate on the GPU meanwhile.
static DRIVER_COUNT: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// max |a − b| / max |b|; infinite when an element of one is NaN and not of the other (`f64::max` would drop it).
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    assert_eq!(a.len(), b.len());
    if a.iter().zip(&b).any(|(x, y)| x.is_nan() != y.is_nan()) {
        return f64::INFINITY;
    }
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    a.iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Output and input gradients of `f` on the CPU and on `dev` (seeded with `Σ out · w`).
fn both(
    dev: Device,
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> tapegrad::Result<Tensor>,
) -> [(Tensor, Vec<Tensor>); 2] {
    [Device::Cpu, dev].map(|device| {
        let tape = Tape::new();
        let xs: Vec<Tensor> = inputs
            .iter()
            .map(|x| tape.watch(&x.to_device(device).unwrap()))
            .collect();
        let out = f(&xs).unwrap();
        let mut rng = Rng::new(99);
        let w = Tensor::randn(out.shape(), 1.0, DType::F32, &mut rng)
            .to_dtype(out.dtype())
            .unwrap()
            .to_device(device)
            .unwrap();
        let loss = out.mul(&w).unwrap().sum_all().unwrap();
        let grads = tape.backward(&loss).unwrap();
        let g = xs
            .iter()
            .map(|x| {
                grads
                    .get(x)
                    .unwrap()
                    .detach()
                    .to_device(Device::Cpu)
                    .unwrap()
            })
            .collect();
        (out.detach().to_device(Device::Cpu).unwrap(), g)
    })
}

fn check(
    name: &str,
    dev: Device,
    inputs: &[Tensor],
    tol: f64,
    f: &dyn Fn(&[Tensor]) -> tapegrad::Result<Tensor>,
) {
    let [(out_cpu, g_cpu), (out_gpu, g_gpu)] = both(dev, inputs, f);
    let e = rel_err(&out_gpu, &out_cpu);
    assert!(e <= tol, "{name}: output error {e:.2e} > {tol:.0e}");
    for (i, (a, b)) in g_gpu.iter().zip(&g_cpu).enumerate() {
        let e = rel_err(a, b);
        assert!(e <= tol, "{name}: gradient {i} error {e:.2e} > {tol:.0e}");
    }
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, DType::F32, &mut Rng::new(seed))
}

#[test]
fn matmul_in_f32_and_with_bf16_mixed_precision() {
    let Some(dev) = common::gpu_or_skip("matmul_in_f32_and_with_bf16_mixed_precision") else {
        return;
    };
    let (a, b) = (randn(&[3, 33, 70], 1), randn(&[70, 45], 2));
    let bt = randn(&[3, 45, 70], 3);
    with_gpu_bf16(false, || {
        check("matmul f32", dev, &[a.clone(), b.clone()], 1e-5, &|x| {
            x[0].matmul(&x[1])
        });
        check(
            "matmul f32, transposed rhs",
            dev,
            &[a.clone(), bt.clone()],
            1e-5,
            &|x| x[0].matmul(&x[1].transpose(1, 2)?),
        );
        check(
            "linear f32",
            dev,
            &[a.clone(), randn(&[45, 70], 4)],
            1e-5,
            &|x| x[0].linear(&x[1]),
        );
    });
    check("matmul bf16 autocast", dev, &[a, b], 1e-2, &|x| {
        x[0].matmul(&x[1])
    });
}

#[test]
fn the_fused_head_and_cross_entropy_on_the_gpu() {
    let Some(dev) = common::gpu_or_skip("the_fused_head_and_cross_entropy_on_the_gpu") else {
        return;
    };
    let (x, w) = (
        randn(&[2, 19, 48], 9),
        randn(&[101, 48], 10).scale(0.2).unwrap(),
    );
    let targets: Vec<u32> = (0..38).map(|i| (i * 7 % 101) as u32).collect();
    for (chunk, ignore) in [(usize::MAX, None), (5, Some(14))] {
        check(
            &format!("linear_cross_entropy chunk {chunk}"),
            dev,
            &[x.clone(), w.clone()],
            1e-5,
            &|xs| xs[0].linear_cross_entropy_in_chunks(&xs[1], &targets, ignore, chunk),
        );
    }
}

#[test]
fn fused_rms_norm_and_swiglu_in_f32_and_bf16() {
    let Some(dev) = common::gpu_or_skip("fused_rms_norm_and_swiglu_in_f32_and_bf16") else {
        return;
    };
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
        let cast = |t: Tensor| t.to_dtype(dtype).unwrap();
        let (x, w) = (cast(randn(&[5, 7, 96], 5)), cast(randn(&[96], 6)));
        check("rms_norm", dev, &[x, w], tol, &|x| {
            x[0].rms_norm(&x[1], 1e-6)
        });
        let (a, b) = (cast(randn(&[4, 200], 7)), cast(randn(&[4, 200], 8)));
        check("swiglu", dev, &[a, b], tol, &|x| x[0].swiglu(&x[1]));
    }
}

#[test]
fn flash_attention_against_the_cpu_kernel() {
    let Some(dev) = common::gpu_or_skip("flash_attention_against_the_cpu_kernel") else {
        return;
    };
    // Grouped heads, a tail tile (T = 100), queries after a cached prefix (Tq < Tk), head dims 32, 64, 128.
    for (b, h, hkv, tq, tk, d) in [
        (2, 4, 2, 100, 100, 64),
        (1, 4, 1, 37, 130, 128),
        (2, 8, 8, 70, 70, 32),
        (1, 2, 2, 20, 20, 80), // no kernel for 80: the CPU kernel, moved both ways
    ] {
        let bf = |t: Tensor| t.to_dtype(DType::BF16).unwrap();
        let q = bf(randn(&[b, h, tq, d], 9));
        let k = bf(randn(&[b, hkv, tk, d], 10));
        let v = bf(randn(&[b, hkv, tk, d], 11));
        check("attention", dev, &[q, k, v], 2e-2, &|x| {
            x[0].attention(&x[1], &x[2])
        });
    }
}

#[test]
fn adamw_on_the_gpu_matches_the_host_update() {
    let Some(dev) = common::gpu_or_skip("adamw_on_the_gpu_matches_the_host_update") else {
        return;
    };
    let (p0, g) = (
        randn(&[64, 33], 12),
        randn(&[64, 33], 13).scale(5.0).unwrap(),
    );
    let mut host = [p0.clone()];
    let mut gpu = [p0.to_device(dev).unwrap()];
    let mut opt_host = AdamW::new(AdamWConfig::default(), &[p0.numel()]);
    let mut opt_gpu = AdamW::new(AdamWConfig::default(), &[p0.numel()]);
    for _ in 0..3 {
        let a = opt_host
            .step(
                &mut host.iter_mut().collect::<Vec<_>>(),
                std::slice::from_ref(&g),
                1e-2,
            )
            .unwrap();
        let b = opt_gpu
            .step(
                &mut gpu.iter_mut().collect::<Vec<_>>(),
                &[g.to_device(dev).unwrap()],
                1e-2,
            )
            .unwrap();
        assert!((a.grad_norm - b.grad_norm).abs() <= 1e-5 * a.grad_norm);
    }
    assert!(rel_err(&gpu[0], &host[0]) <= 1e-5);
    opt_gpu.to_host().unwrap();
    for (gpu, host) in [(&opt_gpu.m, &opt_host.m), (&opt_gpu.v, &opt_host.v)] {
        assert!(gpu[0]
            .iter()
            .zip(&host[0])
            .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs())));
    }
    // A non-finite gradient skips the update on the GPU too: parameters, moments and step count stay.
    let before = gpu[0].to_vec::<f32>().unwrap();
    let mut bad = g.to_vec::<f32>().unwrap();
    bad[7] = f32::INFINITY;
    let bad = Tensor::from_vec(bad, g.shape())
        .unwrap()
        .to_device(dev)
        .unwrap();
    let info = opt_gpu
        .step(&mut gpu.iter_mut().collect::<Vec<_>>(), &[bad], 1e-2)
        .unwrap();
    assert!(info.skipped && !info.grad_norm.is_finite(), "{info:?}");
    assert_eq!(gpu[0].to_vec::<f32>().unwrap(), before);
    assert_eq!(opt_gpu.step, 3);
}

/// The `tiny` preset at width 128 with two heads of 64 (the flash kernels' head size) and `ffn_dim` 192.
fn small_config() -> Config {
    let mut config: Config = Config::preset("tiny").unwrap().config;
    config.dim = 128;
    config.n_heads = 2;
    config.n_kv_heads = 2;
    config.ffn_dim = 192; // whole blocks of 32, so the projections can be quantized
    config
}

/// `steps` AdamW steps of `model` at `lr` on one fixed batch of 2 × 32 tokens (on a GPU with bf16 activations,
/// as `train_llama` runs there), calling `after_step` after each; the losses.
fn train(model: &mut Llama, steps: usize, lr: f64, mut after_step: impl FnMut()) -> Vec<f64> {
    let (b, t) = (2, 32);
    let ids: Vec<u32> = (0..b * t + 1).map(|i| (i * 37 % 300) as u32).collect();
    if model.device() != Device::Cpu {
        model.activations = Some(DType::BF16);
    }
    let mut sizes = Vec::new();
    model.visit(&mut |_, p| sizes.push(p.numel()));
    let mut opt = AdamW::new(AdamWConfig::default(), &sizes);
    (0..steps)
        .map(|_| {
            let tape = Tape::new();
            let leaves = model.watch(&tape);
            let loss = model.loss(&ids[..b * t], &ids[1..], b, t).unwrap();
            model.unwatch();
            let mut grads = tape.backward(&loss).unwrap();
            let grads: Vec<Tensor> = leaves.iter().map(|l| grads.remove(l).unwrap()).collect();
            opt.step(&mut model.params_mut(), &grads, lr).unwrap();
            let loss = loss.item().unwrap();
            drop((tape, leaves, grads));
            after_step();
            loss
        })
        .collect()
}

/// The GPU run learns, and its losses agree with the CPU's to about 1% (bf16 products and attention).
fn agree(cpu: &[f64], gpu: &[f64]) {
    assert!(gpu[gpu.len() - 1] < gpu[0], "the GPU run learns: {gpu:?}");
    for (a, b) in gpu.iter().zip(cpu) {
        assert!(
            (a - b).abs() <= 0.02 * b.abs(),
            "GPU {gpu:?} vs CPU {cpu:?}"
        );
    }
}

#[test]
fn a_tiny_llama_trains_on_the_gpu_like_on_the_cpu() {
    let Some(dev) = common::gpu_or_skip("a_tiny_llama_trains_on_the_gpu_like_on_the_cpu") else {
        return;
    };
    let _alone = DRIVER_COUNT.write().unwrap_or_else(|e| e.into_inner());
    let losses = [Device::Cpu, dev].map(|device| {
        let mut model = Llama::new(small_config(), DType::F32, 3).unwrap();
        model.to_device(device).unwrap();
        let mut driver_allocations = Vec::new();
        let losses = train(&mut model, 5, 3e-3, || {
            if device != Device::Cpu {
                driver_allocations.extend(common::gpu_driver_allocations());
            }
        });
        // The pool serves every step after the second from its cache: no new driver allocation.
        if let [.., second, _, _, last] = driver_allocations[..] {
            assert_eq!(
                second, last,
                "driver allocations after each step: {driver_allocations:?}"
            );
        }
        losses
    });
    agree(&losses[0], &losses[1]);
}

#[test]
fn moving_to_an_absent_or_unbuilt_gpu_is_a_clear_error() {
    if common::gpu_or_skip_quiet().is_some() {
        return;
    }
    let err = Tensor::ones(&[2], DType::F32)
        .to_device(Device::Cuda(0))
        .expect_err("no GPU here")
        .to_string();
    assert!(err.contains("cuda"), "{err}");
}

#[test]
fn quantized_weights_expand_and_multiply_on_the_gpu_as_on_the_cpu() {
    let Some(dev) =
        common::gpu_or_skip("quantized_weights_expand_and_multiply_on_the_gpu_as_on_the_cpu")
    else {
        return;
    };
    let _shared = DRIVER_COUNT.read().unwrap_or_else(|e| e.into_inner());
    for (i, &(ty, _)) in QUANT_FORMATS.iter().enumerate() {
        let k = 2 * ty.block_layout().unwrap().0;
        let n = 5;
        let w = random_quant(ty, n, k, 40 + i as u64);
        let dense = w.dequantize();
        // I · Wᵀ is Wᵀ exactly (one non-zero product in each sum): the kernels' values, bit for bit, in f32
        // and rounded once to bf16.
        let mut eye = vec![0f32; k * k];
        for j in 0..k {
            eye[j * k + j] = 1.0;
        }
        let eye = Tensor::from_vec(eye, &[k, k])
            .unwrap()
            .to_device(dev)
            .unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let eye = eye.to_dtype(dtype).unwrap();
            let wt = with_gpu_bf16(false, || eye.linear_quantized(&w)).unwrap();
            let got = wt.to_device(Device::Cpu).unwrap().to_f64_vec();
            for (e, &g) in got.iter().enumerate() {
                let v = dense[(e % n) * k + e / n];
                let want = if dtype == DType::BF16 {
                    half::bf16::from_f32(v).to_f32()
                } else {
                    v
                };
                // Equal values (a sum turns a −0 into +0).
                assert_eq!(g, want as f64, "{ty} {dtype} element {e}");
            }
        }
        // Forward and dx against the CPU's panels (6 rows: the exact f32 path there).
        let x = randn(&[6, k], 7 + i as u64);
        check(&format!("quantized linear {ty}"), dev, &[x], 1e-5, &|xs| {
            with_gpu_bf16(false, || xs[0].linear_quantized(&w))
        });
    }
    // Rows reordered (as q and k are when a GGUF file loads): the upload follows the order.
    let w = random_quant(GgmlType::Q4_0, 5, 64, 9)
        .select_rows(&[4, 0, 2, 1, 3])
        .unwrap();
    check(
        "quantized linear, reordered rows",
        dev,
        &[randn(&[6, 64], 4)],
        1e-5,
        &|xs| with_gpu_bf16(false, || xs[0].linear_quantized(&w)),
    );
    // Mixed precision (the default): f32 activations multiply in bf16, the weight expanded to bf16, products
    // accumulated in f32.
    let w = random_quant(GgmlType::Q4_K, 64, 256, 3);
    let x = randn(&[2, 3, 256], 5);
    check(
        "quantized linear, mixed precision",
        dev,
        &[x],
        2e-2,
        &|xs| with_gpu_bf16(true, || xs[0].linear_quantized(&w)),
    );
}

#[test]
fn lora_over_a_quantized_base_trains_on_the_gpu_like_on_the_cpu() {
    let Some(dev) =
        common::gpu_or_skip("lora_over_a_quantized_base_trains_on_the_gpu_like_on_the_cpu")
    else {
        return;
    };
    let _shared = DRIVER_COUNT.read().unwrap_or_else(|e| e.into_inner());
    let losses = [Device::Cpu, dev].map(|device| {
        let mut model = Llama::new(small_config(), DType::F32, 3).unwrap();
        model.quantize_projections(GgmlType::Q8_0).unwrap();
        model.add_lora(&LoraConfig::new(4), 11).unwrap();
        model.to_device(device).unwrap();
        assert_eq!(model.device(), device);
        train(&mut model, 4, 1e-2, || {})
    });
    agree(&losses[0], &losses[1]);
}

#[test]
fn benchmark_requests_score_on_the_gpu_as_on_the_cpu() {
    use tapegrad::llama::pretrained::TextTokenizer;
    use tapegrad::llama::tasks::score::{encode, score_batched, PrefixScorer};
    let Some(dev) = common::gpu_or_skip("benchmark_requests_score_on_the_gpu_as_on_the_cpu") else {
        return;
    };
    let _shared = DRIVER_COUNT.read().unwrap_or_else(|e| e.into_inner());
    let tokenizer =
        TextTokenizer::Ours(tapegrad::data::Tokenizer::train(&[b"abcd".as_slice()], 258).unwrap());
    let docs = [
        (
            "Question: Which is hot?\nAnswer:",
            vec![" the sun", " ice", " snow on a hill"],
        ),
        ("so the cat", vec![" slept.", " ran far away."]),
    ];
    let requests: Vec<Vec<_>> = docs
        .iter()
        .map(|(context, choices)| {
            choices
                .iter()
                .map(|c| encode(&tokenizer, context, c, 64).unwrap())
                .collect()
        })
        .collect();
    let cpu = Llama::new(small_config(), DType::F32, 5).unwrap();
    let mut scorer = PrefixScorer::new(&cpu, 4);
    let on_cpu: Vec<_> = requests
        .iter()
        .flat_map(|r| scorer.score(r).unwrap())
        .collect();
    let mut gpu = Llama::new(small_config(), DType::F32, 5).unwrap();
    gpu.to_device(dev).unwrap();
    let flat: Vec<_> = requests.into_iter().flatten().collect();
    let on_gpu = score_batched(&gpu, &flat, 3).unwrap().0;
    for (c, g) in on_cpu.iter().zip(&on_gpu) {
        assert!(
            (c.log_likelihood - g.log_likelihood).abs() <= 1e-3 * c.log_likelihood.abs().max(1.0),
            "CPU {c:?} vs GPU {g:?}"
        );
    }
}
