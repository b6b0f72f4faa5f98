//! Products with a quantized weight `W: [N, K]` (a `QuantMatrix`), straight from its blocks: panels of rows of
//! W are dequantized into one reused buffer (about a megabyte, so it stays in cache) and multiplied by the
//! packed GEMM, so no full f32 copy of W ever exists and the multiply-adds run in the GEMM's FMA micro-kernels.
//! The dequantization is `N · K` work against the product's `M · N · K`.
//!
//! - `forward`: `y[M, N] = x[M, K] · Wᵀ`, each panel writing its columns of `y`. Up to `ROW_PATH_MAX` rows of
//!   `x` (decoding a token at a time) it goes row by row of W instead: each row is dequantized into a buffer
//!   that stays in L1 and dotted with every row of `x` (32 lanes, fixed order), so W is read once per token
//!   and nothing larger than a row is written; the rows are spread over the threads. In f32 over Q8_0, Q4_0,
//!   Q4_1, Q4_K, Q5_K and Q6_K, `x` is quantized to 8 bits instead and the rows dotted in integers
//!   (`quant_dot`, llama.cpp's scheme).
//! - `backward`: `dx[M, K] = dy[M, N] · W`, the panels accumulating in depth order (the first overwrites).
//!
//! Both are generic over the GEMM's element types (f32, and f64 for the finite-difference tests: the blocks'
//! values are exact in either).

use super::gemm::{gemm, GemmFloat, MatRef};
use super::gemm_panels::SharedOut;
use super::parallel::run_tasks;
use super::quant_dot::{self, Q8Row};
use super::simd::{prefetch, vectorized};
use crate::backend::QuantMatrix;
use crate::dtype::{DType, Float};

/// Up to this many rows of `x`, `forward` goes row by row of W.
pub const ROW_PATH_MAX: usize = 4;
/// Rows of W per parallel task on the row path.
const ROWS_PER_TASK: usize = 64;

/// On the integer path, the pair of rows of W this many rows ahead is prefetched while a pair is dotted:
/// the weights of a whole model stream from the last-level cache or memory at every token, and the hint
/// raised decoding from 70–74 to 84–93 tokens/s with 2 rows ahead, to 87–108 with 4 (8 measured the same).
const PREFETCH_AHEAD: usize = 4;

/// Elements of W dequantized per panel (1 MiB of f32).
const PANEL_ELEMENTS: usize = 1 << 18;

/// Rows of W per panel: a multiple of the GEMM's 16-column micro-panel, at least one micro-panel.
fn panel_rows(n: usize, k: usize) -> usize {
    (PANEL_ELEMENTS / k.max(1) / 16 * 16).max(16).min(n.max(1))
}

/// Rows `rows` of `w` dequantized into `out` as `T`.
fn dequantize_panel<T: Float>(
    w: &QuantMatrix,
    rows: std::ops::Range<usize>,
    out: &mut [T],
    f32s: &mut Vec<f32>,
) {
    if T::DTYPE == DType::F32 {
        w.dequantize_rows(rows, bytemuck::cast_slice_mut(out));
    } else {
        f32s.resize(out.len(), 0.0);
        w.dequantize_rows(rows, f32s);
        for (o, &v) in out.iter_mut().zip(f32s.iter()) {
            *o = T::from_f32(v);
        }
    }
}

/// Calls `f(n0, panel)` for each panel of rows `n0..n0 + panel.len() / K` of `w`, dequantized to `T`, in row
/// order; one buffer serves every panel.
fn for_each_panel<T: Float>(w: &QuantMatrix, mut f: impl FnMut(usize, &[T])) {
    let [n, k] = w.shape();
    let rows = panel_rows(n, k);
    let (mut panel, mut f32s) = (vec![T::ZERO; rows * k], Vec::new());
    for n0 in (0..n).step_by(rows) {
        let nb = rows.min(n - n0);
        let panel = &mut panel[..nb * k];
        dequantize_panel(w, n0..n0 + nb, panel, &mut f32s);
        f(n0, panel);
    }
}

/// `y = x · Wᵀ` with `x: [m, K]` and `y: [m, N]`, both row-major.
pub fn forward<T: GemmFloat>(x: &[T], m: usize, w: &QuantMatrix, y: &mut [T]) {
    let [n, k] = w.shape();
    assert!(
        x.len() == m * k && y.len() == m * n,
        "internal: quantized linear of [{m}, {k}] ({} elements) into [{m}, {n}] ({} elements)",
        x.len(),
        y.len()
    );
    if m <= ROW_PATH_MAX {
        return forward_by_rows(x, m, w, y);
    }
    let a = MatRef {
        data: x,
        offset: 0,
        row_stride: k,
        col_stride: 1,
    };
    for_each_panel(w, |n0, panel: &[T]| {
        // The panel read as its transpose: B[p, j] = W[n0 + j, p].
        let b = MatRef {
            data: panel,
            offset: 0,
            row_stride: 1,
            col_stride: k,
        };
        gemm(
            m,
            panel.len() / k,
            k,
            T::ONE,
            a,
            b,
            T::ZERO,
            &mut y[n0..],
            n,
        );
    });
}

/// `dx = dy · W` with `dy: [m, N]` and `dx: [m, K]`, both row-major.
pub fn backward<T: GemmFloat>(dy: &[T], m: usize, w: &QuantMatrix, dx: &mut [T]) {
    let [n, k] = w.shape();
    assert!(
        dy.len() == m * n && dx.len() == m * k,
        "internal: quantized linear backward of [{m}, {n}] ({} elements) into [{m}, {k}] ({} elements)",
        dy.len(),
        dx.len()
    );
    if n == 0 {
        dx.fill(T::ZERO);
        return;
    }
    for_each_panel(w, |n0, panel: &[T]| {
        let a = MatRef {
            data: dy,
            offset: n0,
            row_stride: n,
            col_stride: 1,
        };
        let b = MatRef {
            data: panel,
            offset: 0,
            row_stride: k,
            col_stride: 1,
        };
        let beta = if n0 == 0 { T::ZERO } else { T::ONE };
        gemm(m, k, panel.len() / k, T::ONE, a, b, beta, dx, k);
    });
}

/// `forward` for a few rows of `x`: row by row of W. In f32 over Q8_0, Q4_0, Q4_1 and the K formats the rows of `x` are
/// quantized to 8 bits and dotted with W's blocks in integers (`quant_dot`); otherwise each row of W is
/// dequantized into an L1 buffer and dotted in floats. Tasks of `ROWS_PER_TASK` rows of W run on every core
/// with the calling thread taking part (`run_tasks`: a product takes tens of microseconds, about what waking a
/// sleeping pool would cost).
fn forward_by_rows<T: Float>(x: &[T], m: usize, w: &QuantMatrix, y: &mut [T]) {
    let [n, k] = w.shape();
    let ty = w.ggml_type();
    let int8 = (T::DTYPE == DType::F32 && quant_dot::supports(ty)).then(|| {
        let x: &[f32] = bytemuck::cast_slice(x);
        x.chunks_exact(k).map(Q8Row::quantize).collect::<Vec<_>>()
    });
    let out = SharedOut(y.as_mut_ptr());
    let task = |task: usize| {
        let rows = task * ROWS_PER_TASK..((task + 1) * ROWS_PER_TASK).min(n);
        // SAFETY: `y` is `[m, n]` (checked by `forward`), and this task alone writes its columns `rows`.
        let put = |i: usize, r: usize, v: T| unsafe { *out.ptr().add(i * n + r) = v };
        if let Some(xq) = &int8 {
            // Rows of W in pairs: two streams from memory at once.
            for r in rows.clone().step_by(2) {
                let ahead =
                    (r + PREFETCH_AHEAD).min(rows.end)..(r + PREFETCH_AHEAD + 2).min(rows.end);
                for a in ahead {
                    prefetch(w.row(a));
                }
                for (i, xq) in xq.iter().enumerate() {
                    if r + 1 < rows.end {
                        let pair = [w.row(r), w.row(r + 1)];
                        let [a, b] = quant_dot::dots(ty, pair, xq);
                        put(i, r, T::from_f32(a));
                        put(i, r + 1, T::from_f32(b));
                    } else {
                        put(i, r, T::from_f32(quant_dot::dot(ty, w.row(r), xq)));
                    }
                }
            }
            return;
        }
        let mut row = vec![0f32; k];
        vectorized(
            #[inline(always)]
            || {
                for r in rows {
                    w.dequantize_row_inline(r, &mut row);
                    for i in 0..m {
                        put(i, r, dot(&x[i * k..(i + 1) * k], &row));
                    }
                }
            },
        );
    };
    run_tasks(
        n.div_ceil(ROWS_PER_TASK),
        rayon::current_num_threads(),
        &task,
    );
}

/// `Σ x·w` in 32 lanes (four independent vector chains, so the adds overlap) summed in a fixed order.
#[inline(always)]
fn dot<T: Float>(x: &[T], w: &[f32]) -> T {
    let mut lanes = [T::ZERO; 32];
    let (xc, wc) = (x.chunks_exact(32), w.chunks_exact(32));
    let (xt, wt) = (xc.remainder(), wc.remainder());
    for (a, b) in xc.zip(wc) {
        for l in 0..32 {
            lanes[l] += a[l] * T::from_f32(b[l]);
        }
    }
    for (l, (&a, &b)) in xt.iter().zip(wt).enumerate() {
        lanes[l] += a * T::from_f32(b);
    }
    let mut eight = [T::ZERO; 8];
    for (l, e) in eight.iter_mut().enumerate() {
        *e = (lanes[l] + lanes[l + 8]) + (lanes[l + 16] + lanes[l + 24]);
    }
    let (mut lo, mut hi) = (T::ZERO, T::ZERO);
    for l in 0..4 {
        lo += eight[l];
        hi += eight[l + 4];
    }
    lo + hi
}
