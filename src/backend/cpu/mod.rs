//! The CPU backend: typed host buffers, the packed GEMM, and the strided loops the elementwise kernels share.

pub mod attention;
pub mod elementwise;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
pub mod gemm_avx512;
pub mod gemm_bf16;
pub mod gemm_format;
pub mod gemm_kernel;
mod gemm_panels;
pub mod parallel;
pub mod quant_dot;
pub mod quant_matmul;
pub mod recycle;
pub mod simd;

/// A dot product in eight independent lanes, so the compiler vectorizes it (a single running sum would
/// serialize on the add latency).
#[inline(always)]
pub fn dot<T: crate::dtype::Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let mut lanes = [T::ZERO; 8];
    let (a8, b8) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let (ta, tb) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (&x, &y) in ta.iter().zip(tb) {
        s += x * y;
    }
    s
}

/// `Σ a ⊙ b ⊙ c` in eight independent lanes, combined as in [`dot`].
#[inline(always)]
pub fn dot3<T: crate::dtype::Float>(a: &[T], b: &[T], c: &[T]) -> T {
    let n = a.len().min(b.len()).min(c.len());
    let mut lanes = [T::ZERO; 8];
    let (a8, b8, c8) = (
        a[..n].chunks_exact(8),
        b[..n].chunks_exact(8),
        c[..n].chunks_exact(8),
    );
    let (ta, tb, tc) = (a8.remainder(), b8.remainder(), c8.remainder());
    for ((x, y), z) in a8.zip(b8).zip(c8) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l] * z[l];
        }
    }
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for ((&x, &y), &z) in ta.iter().zip(tb).zip(tc) {
        s += x * y * z;
    }
    s
}

/// Below this many elements an elementwise kernel runs on one thread (rayon's overhead would dominate).
pub const PARALLEL_THRESHOLD: usize = 1 << 15;

/// Asks glibc's allocator to keep freed memory for reuse instead of returning large blocks to the kernel, so
/// buffers that `recycle` does not keep (below its size, or beyond its limit, and every non-tensor vector)
/// are not fresh mappings whose pages fault in one by one. (Before `recycle`, page faults from op outputs were
/// about 8% of a training step in a profile.) A no-op on other platforms.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes allocator tuning parameters; both values are within glibc's limits
        // (the mmap threshold's maximum is 32 MiB on 64-bit).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}

/// Returns the heap memory freed so far to the system (glibc's `malloc_trim`; nothing elsewhere): after
/// loading a model, the parsed file metadata and other temporaries stop counting toward the resident set.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
        unsafe {
            malloc_trim(0);
        }
    }
}
