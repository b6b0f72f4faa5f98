//! Strided elementwise loops shared by the pointwise ops: each reads its inputs through their layouts (views are
//! never copied first) and writes a fresh contiguous output, in parallel above `PARALLEL_THRESHOLD` elements,
//! with each task's loop compiled for AVX2 + FMA where the CPU has them (`simd::vectorized`).

use super::recycle;
use super::simd::vectorized;
use super::PARALLEL_THRESHOLD;
use crate::backend::StorageElement;
use crate::shape::Layout;
use rayon::prelude::*;

/// Rows handled per parallel task: about `PARALLEL_THRESHOLD / 4` elements.
fn rows_per_task(row_len: usize) -> usize {
    (PARALLEL_THRESHOLD / 4 / row_len.max(1)).max(1)
}

/// Runs `f(row, out_row)` over the rows (all dims but the last) of a contiguous output of `shape`. Mark `f`
/// `#[inline(always)]`, so it is compiled into the AVX2 copy of the loop (`simd::vectorized`).
pub fn for_each_row<T: Send>(out: &mut [T], shape: &[usize], f: impl Fn(usize, &mut [T]) + Sync) {
    let row_len = shape.last().copied().unwrap_or(1).max(1);
    if out.is_empty() {
        return;
    }
    if out.len() >= PARALLEL_THRESHOLD {
        let per = rows_per_task(row_len);
        out.par_chunks_mut(row_len * per)
            .enumerate()
            .for_each(|(chunk, rows)| {
                vectorized(|| {
                    for (i, row) in rows.chunks_mut(row_len).enumerate() {
                        f(chunk * per + i, row);
                    }
                })
            });
    } else {
        vectorized(|| {
            for (r, row) in out.chunks_mut(row_len).enumerate() {
                f(r, row);
            }
        })
    }
}

/// `out[i] = f(x[i])` over the logical elements of `x`.
pub fn unary<T: StorageElement>(x: &[T], layout: &Layout, f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let n = layout.numel();
    let mut out = recycle::buffer::<T>(n);
    if layout.is_contiguous() {
        let src = &x[layout.offset..layout.offset + n];
        if n >= PARALLEL_THRESHOLD {
            out.par_chunks_mut(PARALLEL_THRESHOLD / 4)
                .zip(src.par_chunks(PARALLEL_THRESHOLD / 4))
                .for_each(|(o, s)| {
                    vectorized(|| o.iter_mut().zip(s).for_each(|(o, &s)| *o = f(s)))
                });
        } else {
            vectorized(|| out.iter_mut().zip(src).for_each(|(o, &s)| *o = f(s)));
        }
        return out;
    }
    let stride = *layout.strides.last().unwrap_or(&1);
    for_each_row(
        &mut out,
        &layout.shape,
        #[inline(always)]
        |r, row| {
            let base = layout.row_offset(r);
            for (j, o) in row.iter_mut().enumerate() {
                *o = f(x[base + j * stride]);
            }
        },
    );
    out
}

/// `out[i] = f(a[i], b[i])` where both layouts already have the output's shape (broadcast dims have stride 0).
pub fn binary<T: StorageElement>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    debug_assert_eq!(la.shape, lb.shape);
    let n = la.numel();
    let mut out = recycle::buffer::<T>(n);
    let sa = *la.strides.last().unwrap_or(&1);
    let sb = *lb.strides.last().unwrap_or(&1);
    for_each_row(
        &mut out,
        &la.shape,
        #[inline(always)]
        |r, row| {
            let (oa, ob) = (la.row_offset(r), lb.row_offset(r));
            let len = row.len();
            match (sa, sb) {
                (1, 1) => {
                    for ((o, &x), &y) in row.iter_mut().zip(&a[oa..oa + len]).zip(&b[ob..ob + len])
                    {
                        *o = f(x, y);
                    }
                }
                (1, 0) => {
                    let y = b[ob];
                    for (o, &x) in row.iter_mut().zip(&a[oa..oa + len]) {
                        *o = f(x, y);
                    }
                }
                (0, 1) => {
                    let x = a[oa];
                    for (o, &y) in row.iter_mut().zip(&b[ob..ob + len]) {
                        *o = f(x, y);
                    }
                }
                _ => {
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = f(a[oa + j * sa], b[ob + j * sb]);
                    }
                }
            }
        },
    );
    out
}

/// A contiguous copy of the logical elements of `x`.
pub fn gather<T: StorageElement>(x: &[T], layout: &Layout) -> Vec<T> {
    unary(x, layout, |v| v)
}
