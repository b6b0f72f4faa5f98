//! The GPU paths of the primitive ops against their CPU paths: for each op, the forward values and the
//! gradient of every input (through a `Tape` over device tensors, with a fixed random weighting of the output
//! as the loss) are computed on the GPU and on the CPU from the same inputs, and compared: f32 and f64 to a
//! small fraction of the largest magnitude, bf16 to 1e-2 of it. Inputs are presented as strided views
//! (transposed, narrowed, broadcast) taken on the device, so the kernels read views and the view backwards
//! (zero padding, broadcast sums) run there too.
//!
//! Without a GPU (or without the `cuda` feature) every test but the last skips, saying why; with
//! `TAPEGRAD_REQUIRE_GPU=1` a missing GPU fails them instead.

mod common;

use tapegrad::ops::Rope;
use tapegrad::{DType, Device, Rng, Tape, Tensor};

/// f32: the kernels and the CPU differ in summation order and in the last bit of exp/log/pow.
const TOL_F32: f64 = 1e-5;
/// f64: the same differences at f64 precision.
const TOL_F64: f64 = 1e-12;
/// bf16: results rounded to bf16 (2⁻⁸ relative) may land one rounding step apart.
const TOL_BF16: f64 = 1e-2;

fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => TOL_F64,
        DType::F32 => TOL_F32,
        DType::BF16 | DType::F16 => TOL_BF16,
    }
}

/// Uniform values in `[low, high)` of `dtype`, seeded.
fn uniform(shape: &[usize], low: f64, high: f64, dtype: DType, seed: u64) -> Tensor {
    Tensor::uniform(shape, low, high, DType::F64, &mut Rng::new(seed))
        .to_dtype(dtype)
        .expect("cast")
}

/// `|gpu − cpu| ≤ tol · max |cpu|` elementwise (and equal shapes and dtypes).
fn assert_close(what: &str, gpu: &Tensor, cpu: &Tensor, tol: f64) {
    assert_eq!(gpu.shape(), cpu.shape(), "{what}: shapes differ");
    assert_eq!(gpu.dtype(), cpu.dtype(), "{what}: dtypes differ");
    assert_eq!(gpu.device(), Device::Cpu, "{what}: compare host copies");
    let (g, c) = (gpu.to_f64_vec(), cpu.to_f64_vec());
    let scale = c.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    for (i, (a, e)) in g.iter().zip(&c).enumerate() {
        assert!(
            (a - e).abs() <= tol * scale,
            "{what}: element {i}: gpu {a} vs cpu {e} (tolerance {tol} of {scale})"
        );
    }
}

/// The output of `f` at `inputs` (watched on a fresh tape on `device`) and the gradients of
/// `Σ f(inputs) ⊙ r` for fixed random `r`, all copied to the host. Covers `ops/device.rs`: each input is moved
/// to the device on the tape, so its gradient comes back through `to_device`'s backward.
fn run_on(
    device: Device,
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> tapegrad::Result<Tensor>,
) -> (Tensor, Vec<Option<Tensor>>) {
    let tape = Tape::new();
    let moved: Vec<Tensor> = inputs
        .iter()
        .map(|t| tape.watch(&t.to_device(device).expect("to_device")))
        .collect();
    let out = f(&moved).expect("forward");
    assert_eq!(out.device(), device, "the output stays on {device}");
    let r = uniform(out.shape(), -1.0, 1.0, out.dtype(), 0x5eed)
        .to_device(device)
        .expect("weights to device");
    let loss = out.mul(&r).and_then(|t| t.sum_all()).expect("loss");
    let grads = tape.backward(&loss).expect("backward");
    // Detached: the tape is consumed, and moving a tensor it recorded would be recorded on it.
    let host = |t: &Tensor| t.detach().to_device(Device::Cpu).expect("to host");
    let grads = moved
        .iter()
        .map(|t| {
            grads.get(t).map(|g| {
                assert_eq!(g.device(), device, "gradients stay on {device}");
                host(g)
            })
        })
        .collect();
    (host(&out), grads)
}

/// Runs `f` on `dev` and on the CPU from the same `inputs` and compares the outputs and the gradients.
fn check(
    what: &str,
    dev: Device,
    inputs: Vec<Tensor>,
    f: impl Fn(&[Tensor]) -> tapegrad::Result<Tensor>,
) {
    let tol = tolerance(inputs[0].dtype());
    check_within(what, dev, inputs, tol, f)
}

/// `check` with the tolerance `tol`.
fn check_within(
    what: &str,
    dev: Device,
    inputs: Vec<Tensor>,
    tol: f64,
    f: impl Fn(&[Tensor]) -> tapegrad::Result<Tensor>,
) {
    let (gpu_out, gpu_grads) = run_on(dev, &inputs, &f);
    let (cpu_out, cpu_grads) = run_on(Device::Cpu, &inputs, &f);
    assert_close(&format!("{what}: forward"), &gpu_out, &cpu_out, tol);
    for (i, (g, c)) in gpu_grads.iter().zip(&cpu_grads).enumerate() {
        match (g, c) {
            (Some(g), Some(c)) => {
                assert_close(&format!("{what}: gradient of input {i}"), g, c, tol)
            }
            (None, None) => {}
            _ => panic!("{what}: input {i} has a gradient on one device only"),
        }
    }
}

#[test]
fn cast_between_every_dtype() {
    let Some(dev) = common::gpu_or_skip("cast_between_every_dtype") else {
        return;
    };
    let dtypes = [DType::F32, DType::F64, DType::BF16, DType::F16];
    for from in dtypes {
        for to in dtypes {
            let x = uniform(&[5, 7], -3.0, 3.0, from, 1);
            // A transposed view cast to `to` and back: forward and gradient both convert on the device; the
            // values pass through `to`, so its tolerance applies.
            let tol = tolerance(from).max(tolerance(to));
            check_within(&format!("cast {from} -> {to}"), dev, vec![x], tol, |xs| {
                xs[0]
                    .transpose(0, 1)?
                    .to_dtype(to)?
                    .scale(2.0)?
                    .to_dtype(from)
            });
            // The conversion itself rounds as the CPU does: exactly, except that the CPU's half types (the
            // `half` crate) ignore the low 32 mantissa bits of an f64 when rounding to bf16/f16, so a value just
            // above a tie may land one step lower there; the GPU rounds correctly to nearest even.
            let x = uniform(&[5, 7], -3.0, 3.0, from, 2);
            let gpu = x
                .to_device(dev)
                .and_then(|t| t.transpose(0, 1))
                .and_then(|t| t.to_dtype(to))
                .and_then(|t| t.to_device(Device::Cpu))
                .expect("gpu cast");
            let cpu = x
                .transpose(0, 1)
                .and_then(|t| t.to_dtype(to))
                .expect("cpu cast");
            let step = match to {
                DType::BF16 => 2f64.powi(-7),
                DType::F16 => 2f64.powi(-10),
                _ => 0.0,
            };
            for (a, e) in gpu.to_f64_vec().iter().zip(cpu.to_f64_vec()) {
                assert!(
                    (a - e).abs() <= step * e.abs(),
                    "cast {from} -> {to}: gpu {a} vs cpu {e}"
                );
            }
        }
    }
}

#[test]
fn contiguous_cat_and_stack() {
    let Some(dev) = common::gpu_or_skip("contiguous_cat_and_stack") else {
        return;
    };
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let a = uniform(&[4, 6, 5], -1.0, 1.0, dtype, 3);
        let b = uniform(&[7, 5], -1.0, 1.0, dtype, 4);
        check(
            "contiguous of a permuted, narrowed view",
            dev,
            vec![a.clone()],
            |xs| xs[0].permute(&[2, 0, 1])?.narrow(1, 1, 2)?.contiguous(),
        );
        check("reshape of a transposed view", dev, vec![b.clone()], |xs| {
            xs[0].transpose(0, 1)?.reshape(&[35])
        });
        check(
            "cat of views along the middle dim",
            dev,
            vec![a.clone(), b.clone()],
            |xs| {
                let first = xs[0].narrow(0, 1, 2)?; // [2, 6, 5]
                let second = xs[1]
                    .narrow(0, 0, 6)?
                    .unsqueeze(0)?
                    .broadcast_to(&[2, 6, 5])?;
                let third = xs[0].narrow(0, 0, 2)?.narrow(1, 2, 3)?; // [2, 3, 5]
                Tensor::cat(&[first, second, third], 1)
            },
        );
        check("stack along the last dim", dev, vec![b.clone()], |xs| {
            let t = xs[0].transpose(0, 1)?; // [5, 7]
            Tensor::stack(&[t.clone(), t.scale(3.0)?], 2)
        });
    }
}

#[test]
fn unary_ops_forward_and_backward() {
    let Some(dev) = common::gpu_or_skip("unary_ops_forward_and_backward") else {
        return;
    };
    type Op = fn(&Tensor) -> tapegrad::Result<Tensor>;
    let ops: [(&str, Op, f64, f64); 10] = [
        ("neg", |x| x.neg(), -3.0, 3.0),
        ("exp", |x| x.exp(), -3.0, 3.0),
        ("log", |x| x.log(), 0.1, 4.0),
        ("sqrt", |x| x.sqrt(), 0.1, 4.0),
        ("rsqrt", |x| x.rsqrt(), 0.1, 4.0),
        ("powf", |x| x.powf(1.7), 0.1, 4.0),
        ("silu", |x| x.silu(), -6.0, 6.0),
        ("sigmoid", |x| x.sigmoid(), -6.0, 6.0),
        ("scale", |x| x.scale(-0.37), -3.0, 3.0),
        ("add_scalar", |x| x.add_scalar(1.25), -3.0, 3.0),
    ];
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        for (i, (name, op, low, high)) in ops.iter().enumerate() {
            let x = uniform(&[6, 9, 4], *low, *high, dtype, 10 + i as u64);
            check(
                &format!("{name} {dtype} of a transposed view"),
                dev,
                vec![x],
                |xs| op(&xs[0].transpose(0, 2)?),
            );
        }
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    let Some(dev) = common::gpu_or_skip("binary_ops_with_broadcasting") else {
        return;
    };
    type Op = fn(&Tensor, &Tensor) -> tapegrad::Result<Tensor>;
    let ops: [(&str, Op); 4] = [
        ("add", |a, b| a.add(b)),
        ("sub", |a, b| a.sub(b)),
        ("mul", |a, b| a.mul(b)),
        ("div", |a, b| a.div(b)),
    ];
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        for (name, op) in ops {
            let a = uniform(&[5, 3, 1], -2.0, 2.0, dtype, 20);
            let b = uniform(&[4, 5], 0.5, 2.0, dtype, 21);
            // [3, 1, 5] (a permuted view) against [4, 5]: output [3, 4, 5], both operands broadcast.
            check(
                &format!("{name} {dtype} broadcast"),
                dev,
                vec![a, b.clone()],
                |xs| op(&xs[0].permute(&[1, 2, 0])?, &xs[1]),
            );
            // A narrowed operand against a scalar-like [1].
            let c = uniform(&[1], 0.5, 2.0, dtype, 22);
            check(
                &format!("{name} {dtype} against [1]"),
                dev,
                vec![b, c],
                |xs| op(&xs[0].narrow(0, 1, 3)?, &xs[1]),
            );
        }
    }
}

#[test]
fn sum_mean_and_max_over_axes() {
    let Some(dev) = common::gpu_or_skip("sum_mean_and_max_over_axes") else {
        return;
    };
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        let x = uniform(&[4, 6, 5, 3], -2.0, 2.0, dtype, 30);
        for keepdim in [false, true] {
            for axes in [vec![0isize], vec![1, 3], vec![-1], vec![0, 1, 2, 3], vec![]] {
                let what = format!("{dtype} axes {axes:?} keepdim {keepdim}");
                check(&format!("sum {what}"), dev, vec![x.clone()], |xs| {
                    xs[0].permute(&[2, 0, 3, 1])?.sum(&axes, keepdim)
                });
                check(&format!("mean {what}"), dev, vec![x.clone()], |xs| {
                    xs[0].narrow(1, 1, 4)?.mean(&axes, keepdim)
                });
                check(&format!("max {what}"), dev, vec![x.clone()], |xs| {
                    xs[0].transpose(1, 2)?.max(&axes, keepdim)
                });
            }
        }
        // Few, long groups take the one-block-per-output kernel.
        let long = uniform(&[3, 5000], -2.0, 2.0, dtype, 31);
        check(
            &format!("sum {dtype} of long rows"),
            dev,
            vec![long.clone()],
            |xs| xs[0].sum(&[1], false),
        );
        check(
            &format!("max {dtype} of long columns"),
            dev,
            vec![long.clone()],
            |xs| xs[0].transpose(0, 1)?.max(&[0], true),
        );
        check(&format!("sum_all {dtype}"), dev, vec![long], |xs| {
            xs[0].sum_all()
        });
    }
    // Ties go to the first maximal element, as on the CPU.
    let tied =
        Tensor::from_vec(vec![1.0f32, 3.0, 3.0, 2.0, 5.0, 5.0, 5.0, 0.0], &[2, 4]).expect("tied");
    check("max with ties", dev, vec![tied], |xs| {
        xs[0].max(&[1], false)
    });
}

#[test]
fn softmax_and_log_softmax() {
    let Some(dev) = common::gpu_or_skip("softmax_and_log_softmax") else {
        return;
    };
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        for n in [7usize, 33, 1500] {
            let x = uniform(&[3, 4, n], -4.0, 4.0, dtype, 40 + n as u64);
            check(
                &format!("softmax {dtype} rows of {n}"),
                dev,
                vec![x.clone()],
                |xs| xs[0].softmax(),
            );
            check(
                &format!("log_softmax {dtype} rows of {n}"),
                dev,
                vec![x],
                |xs| xs[0].log_softmax(),
            );
        }
        let x = uniform(&[9, 5], -4.0, 4.0, dtype, 49);
        check(
            &format!("softmax {dtype} of a transposed view"),
            dev,
            vec![x],
            |xs| xs[0].transpose(0, 1)?.softmax(),
        );
    }
}

#[test]
fn embedding_gather_and_scatter_add() {
    let Some(dev) = common::gpu_or_skip("embedding_gather_and_scatter_add") else {
        return;
    };
    // Repeated ids accumulate in the backward; ids 2 and 8 never occur (zero rows).
    let ids = [3u32, 0, 7, 3, 9, 1, 3, 0, 6, 5, 4, 7];
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        let w = uniform(&[10, 6], -1.0, 1.0, dtype, 50);
        check(&format!("embedding {dtype}"), dev, vec![w.clone()], |xs| {
            xs[0].embedding(&ids, &[3, 4])
        });
        // A transposed table (a contiguous copy on the device first).
        let wt = uniform(&[6, 10], -1.0, 1.0, dtype, 51);
        check(
            &format!("embedding {dtype} of a transposed table"),
            dev,
            vec![wt],
            |xs| xs[0].transpose(0, 1)?.embedding(&ids, &[12]),
        );
    }
    // The scatter-add is deterministic and sums in the CPU's order: bit-identical in f32.
    let w = uniform(&[10, 6], -1.0, 1.0, DType::F32, 52);
    let (gpu_out, gpu_grads) = run_on(dev, std::slice::from_ref(&w), &|xs| {
        xs[0].embedding(&ids, &[12])
    });
    let (cpu_out, cpu_grads) = run_on(Device::Cpu, &[w], &|xs| xs[0].embedding(&ids, &[12]));
    assert_eq!(gpu_out.to_f64_vec(), cpu_out.to_f64_vec());
    let (g, c) = (
        gpu_grads[0].as_ref().expect("grad"),
        cpu_grads[0].as_ref().expect("grad"),
    );
    assert_eq!(
        g.to_f64_vec(),
        c.to_f64_vec(),
        "embedding scatter-add differs from the CPU's"
    );
}

#[test]
fn cross_entropy_with_ignore_index() {
    let Some(dev) = common::gpu_or_skip("cross_entropy_with_ignore_index") else {
        return;
    };
    let targets = [2u32, 10, 99, 0, 5, 99, 7, 1];
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        let x = uniform(&[2, 4, 11], -3.0, 3.0, dtype, 60);
        check(
            &format!("cross_entropy {dtype} ignoring 99"),
            dev,
            vec![x.clone()],
            |xs| xs[0].cross_entropy(&targets, Some(99)),
        );
        // The ignore index supervised finetuning uses (u32::MAX: -1 to an i32 kernel argument).
        let sft = u32::MAX;
        check(
            &format!("cross_entropy {dtype} ignoring u32::MAX"),
            dev,
            vec![x.clone()],
            |xs| xs[0].cross_entropy(&[sft, 10, sft, 0, 5, sft, 7, 1], Some(sft)),
        );
        check(
            &format!("cross_entropy {dtype} no ignore"),
            dev,
            vec![x.clone()],
            |xs| xs[0].cross_entropy(&[2, 10, 3, 0, 5, 4, 7, 1], None),
        );
        let xt = uniform(&[11, 8], -3.0, 3.0, dtype, 61);
        check(
            &format!("cross_entropy {dtype} of a transposed view"),
            dev,
            vec![xt],
            |xs| xs[0].transpose(0, 1)?.cross_entropy(&targets, Some(99)),
        );
        let wide = uniform(&[3, 2000], -3.0, 3.0, dtype, 62);
        check(
            &format!("cross_entropy {dtype} wide rows"),
            dev,
            vec![wide],
            |xs| xs[0].cross_entropy(&[1999, 0, 1234], None),
        );
    }
    // Every row ignored: the loss is 0 and so is the gradient.
    let x = uniform(&[3, 4], -1.0, 1.0, DType::F32, 63);
    check("cross_entropy all ignored", dev, vec![x], |xs| {
        xs[0].cross_entropy(&[7, 7, 7], Some(7))
    });
}

#[test]
fn rope_forward_and_backward() {
    let Some(dev) = common::gpu_or_skip("rope_forward_and_backward") else {
        return;
    };
    let rope = Rope::new(8, 32, 10000.0).expect("rope tables");
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        for start_pos in [0usize, 5] {
            let x = uniform(&[2, 7, 3, 8], -2.0, 2.0, dtype, 70);
            check(
                &format!("rope {dtype} from {start_pos}"),
                dev,
                vec![x],
                |xs| xs[0].rope(&rope, start_pos),
            );
        }
        // A permuted view ([B, H, T, D] stored, [B, T, H, D] seen).
        let x = uniform(&[2, 3, 7, 8], -2.0, 2.0, dtype, 71);
        check(
            &format!("rope {dtype} of a permuted view"),
            dev,
            vec![x],
            |xs| xs[0].permute(&[0, 2, 1, 3])?.rope(&rope, 1),
        );
    }
    // A second table of the same shape must not be served the first one's cached device copy.
    let other = Rope::new(8, 32, 500.0).expect("rope tables");
    let x = uniform(&[1, 4, 2, 8], -2.0, 2.0, DType::F32, 72);
    check("rope with another table", dev, vec![x], |xs| {
        xs[0].rope(&other, 3)
    });
}

#[test]
fn zeros_and_full_on_a_device() {
    let Some(dev) = common::gpu_or_skip("zeros_and_full_on_a_device") else {
        return;
    };
    for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
        let t = Tensor::full_on(&[3, 5], 1.0 / 3.0, dtype, dev).expect("full_on");
        assert_eq!(t.device(), dev);
        let host = t.to_device(Device::Cpu).expect("to host");
        assert_eq!(
            host.to_f64_vec(),
            Tensor::full(&[3, 5], 1.0 / 3.0, dtype).to_f64_vec()
        );
        let z = Tensor::zeros_on(&[4], dtype, dev).expect("zeros_on");
        assert_eq!(
            z.to_device(Device::Cpu).expect("to host").to_f64_vec(),
            vec![0.0; 4]
        );
    }
    let empty = Tensor::zeros_on(&[0, 3], DType::F32, dev).expect("empty zeros_on");
    assert_eq!(empty.numel(), 0);
}

#[test]
fn a_small_block_of_ops_end_to_end() {
    let Some(dev) = common::gpu_or_skip("a_small_block_of_ops_end_to_end") else {
        return;
    };
    // An MLP-like chain with fan-in (x used twice), broadcasting and a reduction, in f32 and bf16.
    for dtype in [DType::F32, DType::BF16] {
        let x = uniform(&[4, 6], -1.0, 1.0, dtype, 80);
        let w = uniform(&[6], 0.5, 1.5, dtype, 81);
        check(&format!("chain {dtype}"), dev, vec![x, w], |xs| {
            let h = xs[0].mul(&xs[1])?.silu()?;
            let s = h.softmax()?.add(&xs[0])?;
            s.sub(&s.mean(&[-1], true)?)?.powf(2.0)?.sum(&[0], false)
        });
    }
}

#[test]
fn max_treats_nan_as_the_largest_value_like_the_cpu() {
    let Some(dev) = common::gpu_or_skip("max_treats_nan_as_the_largest_value_like_the_cpu") else {
        return;
    };
    // Rows of 40 (warp kernel) and of 5000 (block kernel), with a NaN first, in the middle, twice, or not at all.
    for cols in [40usize, 5000] {
        let mut v: Vec<f32> = (0..4 * cols).map(|i| ((i * 7919) % 1000) as f32).collect();
        v[0] = f32::NAN;
        v[cols + cols / 2] = f32::NAN;
        v[2 * cols + 3] = f32::NAN;
        v[2 * cols + cols - 1] = f32::NAN;
        let x = Tensor::from_vec(v, &[4, cols]).unwrap();
        let run = |device: Device| {
            let tape = Tape::new();
            let xd = tape.watch(&x.to_device(device).unwrap());
            let m = xd.max(&[1], false).unwrap();
            let grads = tape.backward(&m.sum_all().unwrap()).unwrap();
            let grad = grads
                .get(&xd)
                .unwrap()
                .detach()
                .to_device(Device::Cpu)
                .unwrap();
            (
                m.detach()
                    .to_device(Device::Cpu)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap(),
                grad.to_vec::<f32>().unwrap(),
            )
        };
        let (cpu, gpu) = (run(Device::Cpu), run(dev));
        let nan: Vec<bool> = cpu.0.iter().map(|v| v.is_nan()).collect();
        assert_eq!(
            nan,
            [true, true, true, false],
            "{cols} columns: {:?}",
            cpu.0
        );
        assert_eq!(gpu.0.iter().map(|v| v.is_nan()).collect::<Vec<_>>(), nan);
        assert_eq!(gpu.0[3], cpu.0[3]);
        // The gradient goes to the first NaN, or to the first maximum.
        let at = |g: &[f32]| -> Vec<usize> {
            g.iter()
                .enumerate()
                .filter(|(_, &v)| v != 0.0)
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(at(&cpu.1)[..3], [0, cols + cols / 2, 2 * cols + 3]);
        assert_eq!(at(&gpu.1), at(&cpu.1), "{cols} columns");
    }
}

#[test]
fn a_launch_past_the_device_limits_is_a_clear_error() {
    let Some(dev) = common::gpu_or_skip("a_launch_past_the_device_limits_is_a_clear_error") else {
        return;
    };
    // RMSNorm keeps a row in shared memory: 70,000 f32 are more than any block may hold (227 KiB on an H100).
    let x = Tensor::full_on(&[1, 70_000], 1.0, DType::F32, dev).unwrap();
    let w = Tensor::full_on(&[70_000], 1.0, DType::F32, dev).unwrap();
    let text = x.rms_norm(&w, 1e-6).unwrap_err().to_string();
    assert!(
        text.contains("rmsnorm/rmsnorm_fwd_f32: 280000 bytes of shared memory exceed"),
        "{text}"
    );
    // The device still works afterwards.
    let t = Tensor::full_on(&[3], 2.0, DType::F32, dev).unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), [2.0; 3]);
}

#[test]
fn running_out_of_device_memory_is_a_clear_error() {
    let Some(dev) = common::gpu_or_skip("running_out_of_device_memory_is_a_clear_error") else {
        return;
    };
    // 256 GiB: more than any GPU has (and than the emulated device's limit).
    let elements = 64usize << 30;
    let error = Tensor::zeros_on(&[elements], DType::F32, dev).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("out of device memory asking for 274877906944 bytes"),
        "{text}"
    );
    // The device still works afterwards.
    let t = Tensor::full_on(&[3], 2.0, DType::F32, dev).unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), [2.0; 3]);
}

/// In the `cuda` build this always runs: where the GPU tests above skipped, it proves they skipped for want of
/// a driver or a GPU, not for a broken backend.
#[cfg(feature = "cuda-backend")]
#[test]
fn gpu_tests_skip_only_for_want_of_a_gpu() {
    match tapegrad::backend::cuda::unavailable() {
        None => {
            // A GPU is here: the tests above ran. Using it must work too.
            let t = Tensor::zeros_on(&[2], DType::F32, Device::Cuda(0)).expect("a working GPU");
            assert_eq!(t.device(), Device::Cuda(0));
        }
        Some(why) => {
            let lower = why.to_lowercase();
            assert!(
                lower.contains("driver") || lower.contains("gpu"),
                "the GPU tests skipped for a reason that is not a missing driver or GPU: {why}"
            );
        }
    }
}
