//! GEMM throughput: tapegrad's packed GEMM against the `gemm` crate (candle's) and `matrixmultiply` in the same
//! run, on square sizes and the LLaMA `small` shapes (forward `[4096 × 256] · [256 × 768]`, and the weight
//! gradient `[256 × 4096] · [4096 × 768]` with a transposed operand).
//!
//! `cargo bench --bench gemm`; criterion reports time per product and throughput in elements, where one
//! "element" is one multiply-add: GFLOP/s = 2 × Melem/s / 1000. For ratios on a noisy machine prefer
//! `cargo bench --bench gemm_paired`, which interleaves the libraries round by round.

#[path = "common/gemm_cases.rs"]
mod common;

use common::{cases, Lib, Operands};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    for case in cases() {
        let mut ops = Operands::new(&case);
        let mut group = c.benchmark_group(format!(
            "gemm/{}/{}x{}x{}",
            case.name, case.m, case.n, case.k
        ));
        group.throughput(Throughput::Elements((case.m * case.n * case.k) as u64));
        group.sample_size(10);
        for lib in Lib::ALL {
            group.bench_function(BenchmarkId::new(lib.name(), threads), |bench| {
                bench.iter(|| ops.run(&case, lib, threads))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
