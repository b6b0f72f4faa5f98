//! Loops compiled for AVX2 + FMA when the CPU has them.
//!
//! The crate is built for baseline x86-64, so a plain loop over `f32` vectorizes four lanes wide with SSE2.
//! [`vectorized`] runs a closure through a function compiled with AVX2 and FMA enabled; the closure is inlined
//! there and compiled eight lanes wide. Whatever it calls must be inlined too to benefit: kernels are
//! `#[inline(always)]`, and so are the row closures handed to `elementwise::for_each_row` (the compiler does not
//! inline a large closure called from two places on its own; the disassembly of every `avx2_fma` copy shows no
//! call into a kernel). Elsewhere it just calls the closure.
//!
//! Both paths give the same bits: the compiler never fuses a separate multiply and add into an FMA, and the
//! kernels' reductions run in a fixed lane order whatever the vector width.

/// Whether this CPU has AVX2 and FMA (detected once; later calls read a cached flag).
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[allow(unreachable_code)]
    false
}

/// Runs `f`, compiled for AVX2 + FMA when the CPU has them. Call it around a whole loop (a row, a chunk), not
/// per element: the check and the call cost a few nanoseconds.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features `avx2_fma` is compiled for.
        return unsafe { avx2_fma(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
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
    fn the_vectorized_path_gives_the_same_bits() {
        let x: Vec<f32> = (0..4099)
            .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 7.0)
            .collect();
        let plain: Vec<f32> = x.iter().map(|v| v.fast_exp() / (1.0 + v * v)).collect();
        let fast: Vec<f32> =
            vectorized(|| x.iter().map(|v| v.fast_exp() / (1.0 + v * v)).collect());
        assert!(plain
            .iter()
            .zip(&fast)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(
            lane_sum(&x).to_bits(),
            vectorized(|| lane_sum(&x)).to_bits()
        );
    }
}
