//! The machine's f32 FMA peak: every rayon thread runs twelve independent chains of fused multiply-adds at
//! once (enough to cover the FMA latency on two pipes), with AVX2 (8 lanes) and, where the CPU has it, AVX-512
//! (16 lanes). The GEMM's efficiency is quoted against this figure.
//!
//! `cargo bench --bench fma_peak`; prints GFLOP/s per thread and in all (one FMA = 2 FLOP).

use rayon::prelude::*;
use std::time::Instant;

/// Steps of twelve FMAs each thread runs per measurement.
const STEPS: usize = 100_000_000;

#[cfg(target_arch = "x86_64")]
mod chains {
    use std::arch::x86_64::*;

    /// Twelve chains of `steps` AVX2 FMAs; returns a value that depends on all of them.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(steps: usize) -> f32 {
        // Opaque starting values, so that the compiler cannot merge or fold any chain.
        let start = std::hint::black_box([0.5f32; 14]);
        let mut acc: [__m256; 12] = std::array::from_fn(|i| _mm256_set1_ps(start[i]));
        let (m, c) = (_mm256_set1_ps(start[12]), _mm256_set1_ps(start[13]));
        for _ in 0..steps {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, m, c);
            }
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(
            out.as_mut_ptr(),
            acc.iter().fold(c, |s, a| _mm256_add_ps(s, *a)),
        );
        out.iter().sum()
    }

    /// As [`avx2`] with 512-bit vectors.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(steps: usize) -> f32 {
        let start = std::hint::black_box([0.5f32; 14]);
        let mut acc: [__m512; 12] = std::array::from_fn(|i| _mm512_set1_ps(start[i]));
        let (m, c) = (_mm512_set1_ps(start[12]), _mm512_set1_ps(start[13]));
        for _ in 0..steps {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, m, c);
            }
        }
        _mm512_reduce_add_ps(acc.iter().fold(c, |s, a| _mm512_add_ps(s, *a)))
    }
}

/// Runs `chain(steps)` on every rayon thread at once; returns GFLOP/s in all.
fn measure(lanes: usize, steps: usize, chain: fn(usize) -> f32) -> f64 {
    let threads = rayon::current_num_threads();
    let start = Instant::now();
    let sums: Vec<f32> = (0..threads).into_par_iter().map(|_| chain(steps)).collect();
    let secs = start.elapsed().as_secs_f64();
    assert!(sums.iter().all(|s| s.is_finite()));
    (threads * steps * 12 * lanes * 2) as f64 / secs / 1e9
}

fn main() {
    let threads = rayon::current_num_threads();
    #[cfg(target_arch = "x86_64")]
    {
        // (name, lanes, chains)
        type Set = (&'static str, usize, fn(usize) -> f32);
        let mut sets: Vec<Set> = Vec::new();
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected.
            sets.push(("avx2", 8, |s| unsafe { chains::avx2(s) }));
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected.
            sets.push(("avx512", 16, |s| unsafe { chains::avx512(s) }));
        }
        for (name, lanes, chain) in sets {
            measure(lanes, STEPS / 10, chain);
            let best = (0..3)
                .map(|_| measure(lanes, STEPS / lanes * 8, chain))
                .fold(0.0, f64::max);
            println!(
                "{name}: {best:.1} GFLOP/s on {threads} threads ({:.1} per thread), best of 3",
                best / threads as f64
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("no FMA peak measurement for this architecture ({threads} threads)");
}
