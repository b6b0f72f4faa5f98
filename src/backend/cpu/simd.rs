//! Loops compiled for AVX-512 or AVX2 + FMA when the CPU has them.
//!
//! The crate is built for baseline x86-64, so a plain loop over `f32` vectorizes four lanes wide with SSE2.
//! [`vectorized`] runs a closure through a function compiled with AVX-512 (F, BW, DQ, VL) or with AVX2 and FMA
//! enabled, whichever is the widest the CPU has; the closure is inlined there and compiled sixteen or eight
//! lanes wide. Whatever it calls must be inlined too to benefit: kernels are `#[inline(always)]`, and so are
//! the row closures handed to `elementwise::for_each_row` (the compiler does not inline a large closure called
//! from two places on its own; the disassembly of every `avx2_fma` copy shows no call into a kernel).
//! Elsewhere it just calls the closure.
//!
//! Every path gives the same bits: the compiler never fuses a separate multiply and add into an FMA, and the
//! kernels' reductions run in a fixed lane order whatever the vector width.
//!
//! `TAPEGRAD_SIMD=avx2` (or `portable`) caps the level, for measuring the paths of CPUs without AVX-512 on one
//! that has it; the GEMM's micro-kernel follows the same cap.

/// The widest vector instructions the CPU loops use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Baseline x86-64 (SSE2), or another architecture.
    Portable,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F, BW, DQ and VL (with AVX2 and FMA).
    Avx512,
}

/// What this CPU has, capped by `TAPEGRAD_SIMD` (`avx2` or `portable`; detected once).
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("TAPEGRAD_SIMD").as_deref() {
            Ok("portable") => Level::Portable,
            Ok("avx2") => Level::Avx2,
            _ => Level::Avx512,
        };
        detected().min(cap)
    })
}

/// The level this CPU has.
fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        if !(has!("avx2") && has!("fma")) {
            return Level::Portable;
        }
        if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
            return Level::Avx512;
        }
        return Level::Avx2;
    }
    #[allow(unreachable_code)]
    Level::Portable
}

/// Whether the loops may use AVX2 and FMA.
pub fn has_avx2_fma() -> bool {
    level() >= Level::Avx2
}

/// Runs `f`, compiled for the widest level the CPU has. Call it around a whole loop (a row, a chunk), not
/// per element: the check and the call cost a few nanoseconds.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match level() {
        // SAFETY: the CPU has the features `avx512` is compiled for.
        Level::Avx512 => return unsafe { avx512(f) },
        // SAFETY: the CPU has the features `avx2_fma` is compiled for.
        Level::Avx2 => return unsafe { avx2_fma(f) },
        Level::Portable => {}
    }
    f()
}

/// As [`vectorized`] at a given level at most (the tests compare the levels).
#[cfg(test)]
fn vectorized_at<R>(at: Level, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match at.min(level()) {
        // SAFETY: the CPU has the features `avx512` is compiled for.
        Level::Avx512 => return unsafe { avx512(f) },
        // SAFETY: the CPU has the features `avx2_fma` is compiled for.
        Level::Avx2 => return unsafe { avx2_fma(f) },
        Level::Portable => {}
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Whether a test of a vector path can run here (`present`: this CPU has it, within the `TAPEGRAD_SIMD` cap).
/// Without it the test says so and passes, unless `TAPEGRAD_REQUIRE_AVX512=1` (set where the CPU has AVX-512
/// with BF16, so that these tests never skip unnoticed there), which makes it fail.
#[cfg(test)]
pub(crate) fn testable(test: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(
        std::env::var("TAPEGRAD_REQUIRE_AVX512").as_deref() != Ok("1"),
        "{test}: TAPEGRAD_REQUIRE_AVX512=1 but this CPU (or the TAPEGRAD_SIMD cap) lacks the path it tests"
    );
    eprintln!("{test} skipped: this CPU (or the TAPEGRAD_SIMD cap) lacks the vector path it tests");
    false
}

/// Asks the CPU to bring the cache lines of `bytes` into L1 (a hint: no effect on results).
#[inline(always)]
pub(crate) fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for at in (0..bytes.len())
        .step_by(64)
        .chain(bytes.len().checked_sub(1))
    {
        // SAFETY: a prefetch never faults and reads nothing; the address lies in `bytes`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                bytes.as_ptr().add(at) as *const i8,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Float;

    /// A sum in eight lanes of `fast_exp`, the shape of the softmax kernels' loops.
    fn lane_sum(x: &[f32]) -> f32 {
        let mut lanes = [0.0f32; 8];
        for c in x.chunks_exact(8) {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += v.fast_exp() * 0.5 + v * v;
            }
        }
        lanes.iter().sum()
    }

    #[test]
    fn every_vectorized_level_gives_the_same_bits() {
        let x: Vec<f32> = (0..4099)
            .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 7.0)
            .collect();
        let plain: Vec<f32> = x.iter().map(|v| v.fast_exp() / (1.0 + v * v)).collect();
        for at in [Level::Avx2, Level::Avx512] {
            let fast: Vec<f32> = vectorized_at(at, || {
                x.iter().map(|v| v.fast_exp() / (1.0 + v * v)).collect()
            });
            assert!(plain
                .iter()
                .zip(&fast)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            assert_eq!(
                lane_sum(&x).to_bits(),
                vectorized_at(at, || lane_sum(&x)).to_bits()
            );
        }
    }
}
