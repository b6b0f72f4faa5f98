//! Decoding products over quantized weights: `y[1, N] = x[1, K] · Wᵀ` with W in Q4_1, Q4_0, Q8_0, Q5_0, Q5_1,
//! Q4_K, Q5_K and Q6_K (the integer path: 8-bit activations dotted with the blocks; Q5_0, Q5_1 and the K formats
//! from random blocks with small scales, as no quantizer here writes them; the K formats on the shapes whose rows
//! are whole super-blocks), against the same product over W dequantized to f32, on SmolLM2-135M's shapes (`[1536, 576]`: gate and up; `[576, 1536]`: down; `[49152, 576]`: the output
//! head). Both read W once per product, so the throughput in weights per second says how near the memory the
//! kernels run: the blocks are 4.5 to 8.5 bits a weight, the f32 copy 32.
//!
//! The kernel alone on one thread (no threads to start, no output to assemble) shows what the product's
//! parallel frame costs.
//!
//! `cargo bench --bench quant_matvec`; criterion reports time per product and weights (multiply-adds) per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tapegrad::backend::cpu::quant_dot::{self, Q8Row};
use tapegrad::io::gguf::GgmlType;
use tapegrad::{DType, QuantMatrix, Rng, Tensor};

fn bench(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    for (n, k) in [(1536, 576), (576, 1536), (49152, 576)] {
        let values: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32 * 0.05).collect();
        let x = Tensor::uniform(&[1, k], -1.0, 1.0, DType::F32, &mut rng);
        let mut group = c.benchmark_group(format!("quant_matvec/{n}x{k}"));
        group.throughput(Throughput::Elements((n * k) as u64));
        group.sample_size(20);
        let xq = Q8Row::quantize(&x.to_vec::<f32>().unwrap());
        for ty in [
            GgmlType::Q4_1,
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            if k % ty.block_layout().unwrap().0 != 0 {
                continue; // the K formats need rows of whole super-blocks of 256
            }
            let w = matrix(ty, &values, n, k, &mut rng);
            group.bench_function(BenchmarkId::new("blocks", ty), |b| {
                b.iter(|| x.linear_quantized(&w).unwrap())
            });
            // The kernel alone on one thread: every row of W dotted in turn.
            let rows: Vec<&[u8]> = (0..n).map(|r| w.row(r)).collect();
            group.bench_function(BenchmarkId::new("kernel, one thread", ty), |b| {
                b.iter(|| rows.iter().map(|r| quant_dot::dot(ty, r, &xq)).sum::<f32>())
            });
        }
        let dense = Tensor::from_vec(values, &[n, k]).unwrap();
        group.bench_function(BenchmarkId::new("dense", "f32"), |b| {
            b.iter(|| x.linear(&dense).unwrap())
        });
        group.finish();
    }
}

/// `values` as an `[n, k]` matrix of `ty`: quantized, or for Q5_0, Q5_1 and the K formats random blocks whose f16
/// scales (at the offsets of each format) are about 0.01.
fn matrix(ty: GgmlType, values: &[f32], n: usize, k: usize, rng: &mut Rng) -> QuantMatrix {
    let scales: &[usize] = match ty {
        GgmlType::Q5_0 => &[0],
        GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => return QuantMatrix::quantize(values, n, k, ty).unwrap(),
    };
    let (elements, bytes) = ty.block_layout().unwrap();
    let mut data: Vec<u8> = (0..n * k / elements * bytes)
        .map(|_| rng.below(256) as u8)
        .collect();
    for block in data.chunks_exact_mut(bytes) {
        for &at in scales {
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
    }
    QuantMatrix::from_blocks(ty, n, k, data).unwrap()
}

criterion_group!(benches, bench);
criterion_main!(benches);
