//! GEMM throughput: tapegrad's packed GEMM against the `gemm` crate (candle's) and `matrixmultiply` in the same
//! run, on square sizes and the LLaMA `small` shapes (forward `[4096 × 256] · [256 × 768]`, and the weight
//! gradient `[256 × 4096] · [4096 × 768]` with a transposed operand).
//!
//! `cargo bench --bench gemm`; criterion reports time per product and throughput in elements, where one
//! "element" is one multiply-add: GFLOP/s = 2 × Melem/s / 1000.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tapegrad::backend::cpu::gemm::{gemm, MatRef};

struct Case {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    /// A is stored `[k × m]` and read transposed.
    transpose_a: bool,
}

fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = [256, 512, 1024, 2048]
        .iter()
        .map(|&s| Case {
            name: "square",
            m: s,
            n: s,
            k: s,
            transpose_a: false,
        })
        .collect();
    v.push(Case {
        name: "small-fwd",
        m: 4096,
        n: 768,
        k: 256,
        transpose_a: false,
    });
    v.push(Case {
        name: "small-wgrad-At",
        m: 256,
        n: 768,
        k: 4096,
        transpose_a: true,
    });
    v
}

fn bench(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    for case in cases() {
        let (m, n, k) = (case.m, case.n, case.k);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 13.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 11.0)
            .collect();
        let mut out = vec![0.0f32; m * n];
        let (rsa, csa) = if case.transpose_a { (1, m) } else { (k, 1) };
        let mut group = c.benchmark_group(format!("gemm/{}/{m}x{n}x{k}", case.name));
        group.throughput(Throughput::Elements((m * n * k) as u64));
        group.sample_size(10);
        group.bench_function(BenchmarkId::new("tapegrad", threads), |bench| {
            bench.iter(|| {
                let av = MatRef {
                    data: &a,
                    offset: 0,
                    row_stride: rsa,
                    col_stride: csa,
                };
                let bv = MatRef {
                    data: &b,
                    offset: 0,
                    row_stride: n,
                    col_stride: 1,
                };
                gemm(m, n, k, 1.0, av, bv, 0.0, &mut out, n)
            })
        });
        group.bench_function(BenchmarkId::new("gemm-crate", threads), |bench| {
            bench.iter(|| unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    csa as isize,
                    rsa as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                )
            })
        });
        group.bench_function(BenchmarkId::new("matrixmultiply", threads), |bench| {
            bench.iter(|| unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    rsa as isize,
                    csa as isize,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                )
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
