//! Packed, cache-blocked GEMM in the BLIS shape: `C = alpha · A · B + beta · C`.
//!
//! For each block of `KC` columns of A (rows of B) and `NC` columns of B, both operands are packed into
//! contiguous micro-panels (`MR` rows of A, `NR` columns of B, zero-padded at the edges); a register-blocked
//! micro-kernel then computes each `MR × NR` tile of C over the `KC` depth. Packing reads any row and column
//! strides, so transposed operands cost nothing but the packing. Tiles of C (`MC` rows × `NT` columns) are spread
//! over the rayon pool; each tile keeps its A block in L2 and one B micro-panel in L1.
//!
//! f32 uses an AVX2 + FMA micro-kernel (6 × 16, twelve ymm accumulators) when the CPU has them (runtime
//! detection), and a portable one otherwise; f64 uses the portable one.

use crate::dtype::Float;
use rayon::prelude::*;

/// Rows of A per micro-panel.
pub const MR: usize = 6;
/// Columns of B per micro-panel.
pub const NR: usize = 16;
/// Depth of one packed block.
const KC: usize = 256;
/// Rows of C per parallel tile.
const MC: usize = 96;
/// Columns of C per parallel tile.
const NT: usize = 256;
/// Columns of B packed at once.
const NC: usize = 4096;
/// The most elements of A packed at once (16 MiB of f32): deeper products are packed in several phases.
const PACKED_A_LIMIT: usize = 1 << 22;
/// Below this many multiply-adds the GEMM runs on the calling thread.
const PARALLEL_WORK: usize = 1 << 18;

/// A read-only strided matrix view: element `(i, j)` is `data[offset + i · row_stride + j · col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<T: Copy> MatRef<'_, T> {
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> T {
        self.data[self.offset + i * self.row_stride + j * self.col_stride]
    }
}

/// The element types the GEMM runs on, each with its micro-kernel.
pub trait GemmFloat: Float {
    /// `out[MR × NR] = Σ_p a[p · MR + i] · b[p · NR + j]` over `kc` steps.
    fn micro_kernel(kc: usize, a: &[Self], b: &[Self], out: &mut [Self; MR * NR]) {
        portable_kernel(kc, a, b, out)
    }

    /// Runs `f` with packing buffers of at least `len_a` and `len_b` elements, reused across calls.
    fn with_scratch<R>(
        len_a: usize,
        len_b: usize,
        f: impl FnOnce(&mut [Self], &mut [Self]) -> R,
    ) -> R;
}

/// Runs `f` with two scratch buffers of at least `len_a` and `len_b` elements from `cell`, kept for the next
/// call on this thread (fresh multi-megabyte buffers would fault their pages in on every product). A nested
/// call on the same thread, which finds the cell borrowed, allocates its own.
fn with_cell_scratch<T: Float, R>(
    cell: &std::cell::RefCell<(Vec<T>, Vec<T>)>,
    len_a: usize,
    len_b: usize,
    f: impl FnOnce(&mut [T], &mut [T]) -> R,
) -> R {
    match cell.try_borrow_mut() {
        Ok(mut buffers) => {
            let (a, b) = &mut *buffers;
            if a.len() < len_a {
                a.resize(len_a, T::ZERO);
            }
            if b.len() < len_b {
                b.resize(len_b, T::ZERO);
            }
            f(&mut a[..len_a], &mut b[..len_b])
        }
        Err(_) => f(&mut vec![T::ZERO; len_a], &mut vec![T::ZERO; len_b]),
    }
}

macro_rules! scratch {
    ($t:ty) => {
        fn with_scratch<R>(len_a: usize, len_b: usize, f: impl FnOnce(&mut [$t], &mut [$t]) -> R) -> R {
            thread_local! {
                static SCRATCH: std::cell::RefCell<(Vec<$t>, Vec<$t>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
            }
            SCRATCH.with(|cell| with_cell_scratch(cell, len_a, len_b, f))
        }
    };
}

impl GemmFloat for f64 {
    scratch!(f64);
}

impl GemmFloat for f32 {
    scratch!(f32);

    fn micro_kernel(kc: usize, a: &[f32], b: &[f32], out: &mut [f32; MR * NR]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            assert!(a.len() >= kc * MR && b.len() >= kc * NR);
            // SAFETY: the features were detected above and the slices hold kc steps of both panels.
            unsafe { avx2::kernel_6x16(kc, a.as_ptr(), b.as_ptr(), out) };
            return;
        }
        portable_kernel(kc, a, b, out)
    }
}

/// The portable micro-kernel (and the reference the AVX2 one is tested against).
pub fn portable_kernel<T: Float>(kc: usize, a: &[T], b: &[T], out: &mut [T; MR * NR]) {
    let mut acc = [[T::ZERO; NR]; MR];
    for p in 0..kc {
        let ap = &a[p * MR..p * MR + MR];
        let bp = &b[p * NR..p * NR + NR];
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] += ap[i] * bp[j];
            }
        }
    }
    for i in 0..MR {
        out[i * NR..i * NR + NR].copy_from_slice(&acc[i]);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` must hold `kc · MR` and `b` `kc · NR` floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_6x16(
        kc: usize,
        mut a: *const f32,
        mut b: *const f32,
        out: &mut [f32; MR * NR],
    ) {
        let mut c = [_mm256_setzero_ps(); 12];
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            macro_rules! row {
                ($i:expr) => {
                    let ai = _mm256_broadcast_ss(&*a.add($i));
                    c[2 * $i] = _mm256_fmadd_ps(ai, b0, c[2 * $i]);
                    c[2 * $i + 1] = _mm256_fmadd_ps(ai, b1, c[2 * $i + 1]);
                };
            }
            row!(0);
            row!(1);
            row!(2);
            row!(3);
            row!(4);
            row!(5);
            a = a.add(MR);
            b = b.add(NR);
        }
        for (i, acc) in c.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(i * 8), *acc);
        }
    }
}

/// A raw pointer to C shared by tiles that write disjoint regions.
#[derive(Clone, Copy)]
struct SharedOut<T>(*mut T);
// SAFETY: every tile writes a disjoint rectangle of C; see `gemm`.
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    fn ptr(&self) -> *mut T {
        self.0
    }
}

/// `C = alpha · A · B + beta · C` with `A: [m × k]`, `B: [k × n]` (any strides) and `C: [m × n]` row-major with
/// row stride `ldc`. With `beta == 0` C is only written, never read (so it may hold garbage or NaN).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: GemmFloat>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldc >= n && c.len() >= (m - 1) * ldc + n,
        "gemm: C of {} elements cannot hold [{m} x {n}] with row stride {ldc}",
        c.len()
    );
    if k == 0 {
        scale_c(m, n, beta, c, ldc);
        return;
    }
    if m <= SKINNY_ROWS {
        skinny(m, n, k, alpha, a, b, beta, c, ldc);
        return;
    }
    let parallel = m * n * k >= PARALLEL_WORK;
    let out = SharedOut(c.as_mut_ptr());
    let m_panels = m.div_ceil(MR);
    // Depth packed per parallel phase: all of it unless the packed A would pass PACKED_A_LIMIT elements.
    let depth = (PACKED_A_LIMIT / (m_panels * MR)).max(KC) / KC * KC;
    let depth = depth.min(k.div_ceil(KC) * KC);
    let b_panels_max = NC.min(n).div_ceil(NR);
    T::with_scratch(
        m_panels * MR * depth,
        b_panels_max * NR * depth,
        |packed_a, packed_b| {
            for jc in (0..n).step_by(NC) {
                let nc = NC.min(n - jc);
                let b_panels = nc.div_ceil(NR);
                for pg in (0..k).step_by(depth) {
                    // Blocks of KC depth in this phase; block `q` covers `pg + q·KC ..`, and its panels start at
                    // `q · panels · unit · KC` (the last block may be shorter; its panels are packed `kc` deep).
                    let blocks: Vec<(usize, usize)> = (pg..(pg + depth).min(k))
                        .step_by(KC)
                        .map(|pc| (pc, KC.min(k - pc)))
                        .collect();
                    let pa_len = m_panels * MR * KC;
                    let pb_len = b_panels * NR * KC;
                    let pack_b_panel = |(idx, panel): (usize, &mut [T])| {
                        let ((pc, kc), jr) = (blocks[idx / b_panels], idx % b_panels);
                        pack_b(b, pc, kc, jc + jr * NR, n, &mut panel[..NR * kc]);
                    };
                    let pack_a_panel = |(idx, panel): (usize, &mut [T])| {
                        let ((pc, kc), ir) = (blocks[idx / m_panels], idx % m_panels);
                        pack_a(a, ir * MR, m, pc, kc, &mut panel[..MR * kc]);
                    };
                    let pb_all = &mut packed_b[..blocks.len() * pb_len];
                    let pa_all = &mut packed_a[..blocks.len() * pa_len];
                    if parallel {
                        rayon::join(
                            || {
                                pb_all
                                    .par_chunks_mut(NR * KC)
                                    .enumerate()
                                    .for_each(pack_b_panel)
                            },
                            || {
                                pa_all
                                    .par_chunks_mut(MR * KC)
                                    .enumerate()
                                    .for_each(pack_a_panel)
                            },
                        );
                    } else {
                        pb_all
                            .chunks_mut(NR * KC)
                            .enumerate()
                            .for_each(pack_b_panel);
                        pa_all
                            .chunks_mut(MR * KC)
                            .enumerate()
                            .for_each(pack_a_panel);
                    }
                    let (pa_all, pb_all) = (&*pa_all, &*pb_all);
                    let (mc, nt) = if parallel {
                        tile_sizes(m, nc)
                    } else {
                        (MC, NT)
                    };
                    let (tiles_m, tiles_n) = (m.div_ceil(mc), nc.div_ceil(nt));
                    let run_tile = |t: usize| {
                        let (ti, tj) = (t / tiles_n, t % tiles_n);
                        let rows = ti * mc..(ti * mc + mc).min(m);
                        let cols = tj * nt..(tj * nt + nt).min(nc);
                        let mut acc = [T::ZERO; MR * NR];
                        for (q, &(pc, kc)) in blocks.iter().enumerate() {
                            let beta_now = if pc == 0 { beta } else { T::ONE };
                            let (pa, pb) = (&pa_all[q * pa_len..], &pb_all[q * pb_len..]);
                            for j0 in cols.clone().step_by(NR) {
                                let b_panel = &pb[(j0 / NR) * NR * KC..][..NR * kc];
                                let nr = NR.min(cols.end - j0);
                                for i0 in rows.clone().step_by(MR) {
                                    let a_panel = &pa[(i0 / MR) * MR * KC..][..MR * kc];
                                    let mr = MR.min(m - i0);
                                    T::micro_kernel(kc, a_panel, b_panel, &mut acc);
                                    for i in 0..mr {
                                        // SAFETY: rows i0..i0+mr and columns jc+j0..jc+j0+nr of C belong to this tile
                                        // only, and lie inside C (checked by the assert at the top).
                                        let row = unsafe {
                                            std::slice::from_raw_parts_mut(
                                                out.ptr().add((i0 + i) * ldc + jc + j0),
                                                nr,
                                            )
                                        };
                                        let acc_row = &acc[i * NR..i * NR + nr];
                                        if beta_now == T::ZERO {
                                            for (c, &v) in row.iter_mut().zip(acc_row) {
                                                *c = alpha * v;
                                            }
                                        } else {
                                            for (c, &v) in row.iter_mut().zip(acc_row) {
                                                *c = alpha * v + beta_now * *c;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    };
                    if parallel {
                        (0..tiles_m * tiles_n).into_par_iter().for_each(run_tile);
                    } else {
                        (0..tiles_m * tiles_n).for_each(run_tile);
                    }
                }
            }
        },
    )
}

/// Tile sizes for `m` rows and `nc` columns: the largest (`MC × NT`) that still gives every thread about six
/// tiles, so that small products keep both cores busy and the last tiles do not leave one idle. Halving keeps
/// `mc` a multiple of `MR` and `nt` of `NR`.
fn tile_sizes(m: usize, nc: usize) -> (usize, usize) {
    let target = 6 * rayon::current_num_threads();
    let (mut mc, mut nt) = (MC, NT);
    while m.div_ceil(mc) * nc.div_ceil(nt) < target {
        if nt > 4 * NR && nt >= mc {
            nt /= 2;
        } else if mc > 4 * MR {
            mc /= 2;
        } else {
            break;
        }
    }
    (mc, nt)
}

/// Products with at most this many rows (one token at a time in generation) skip packing: packing B would
/// read and write all of it once more, doubling the memory traffic of what is a matrix-vector product.
const SKINNY_ROWS: usize = 4;

/// `C = alpha · A · B + beta · C` for few rows: dot products along B's columns when they are contiguous (a
/// transposed weight), otherwise rows of B accumulated in order. Parallel over column blocks.
#[allow(clippy::too_many_arguments)]
fn skinny<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    const COLUMNS: usize = 64;
    for i in 0..m {
        let row: Vec<T> = (0..k).map(|p| a.at(i, p)).collect();
        let out = &mut c[i * ldc..i * ldc + n];
        let block = |(jb, out): (usize, &mut [T])| {
            let j0 = jb * COLUMNS;
            if b.row_stride == 1 {
                for (jj, o) in out.iter_mut().enumerate() {
                    let start = b.offset + (j0 + jj) * b.col_stride;
                    let v = alpha * super::dot(&row, &b.data[start..start + k]);
                    *o = if beta == T::ZERO { v } else { v + beta * *o };
                }
            } else {
                let mut acc = vec![T::ZERO; out.len()];
                for (p, &x) in row.iter().enumerate() {
                    for (jj, acc) in acc.iter_mut().enumerate() {
                        *acc += x * b.at(p, j0 + jj);
                    }
                }
                for (o, v) in out.iter_mut().zip(acc) {
                    *o = if beta == T::ZERO {
                        alpha * v
                    } else {
                        alpha * v + beta * *o
                    };
                }
            }
        };
        if n * k >= PARALLEL_WORK {
            out.par_chunks_mut(COLUMNS).enumerate().for_each(block);
        } else {
            out.chunks_mut(COLUMNS).enumerate().for_each(block);
        }
    }
}

fn scale_c<T: Float>(m: usize, n: usize, beta: T, c: &mut [T], ldc: usize) {
    for i in 0..m {
        for v in &mut c[i * ldc..i * ldc + n] {
            *v = if beta == T::ZERO { T::ZERO } else { beta * *v };
        }
    }
}

/// Packs rows `i0..i0+MR` (zero past `m`) and depth `pc..pc+kc` of A as `panel[p · MR + i]`.
fn pack_a<T: Float>(a: MatRef<'_, T>, i0: usize, m: usize, pc: usize, kc: usize, panel: &mut [T]) {
    let rows = MR.min(m - i0);
    if a.col_stride == 1 {
        for i in 0..rows {
            let start = a.offset + (i0 + i) * a.row_stride + pc;
            for (p, &v) in a.data[start..start + kc].iter().enumerate() {
                panel[p * MR + i] = v;
            }
        }
    } else if a.row_stride == 1 {
        // A transposed (column-major): each depth step is a contiguous run of rows.
        for (p, dst) in panel.chunks_exact_mut(MR).take(kc).enumerate() {
            let start = a.offset + (pc + p) * a.col_stride + i0;
            dst[..rows].copy_from_slice(&a.data[start..start + rows]);
        }
    } else {
        for p in 0..kc {
            for i in 0..rows {
                panel[p * MR + i] = a.at(i0 + i, pc + p);
            }
        }
    }
    for p in 0..kc {
        for i in rows..MR {
            panel[p * MR + i] = T::ZERO;
        }
    }
}

/// Packs columns `j0..j0+NR` (zero past `n`) and depth `pc..pc+kc` of B as `panel[p · NR + j]`.
fn pack_b<T: Float>(b: MatRef<'_, T>, pc: usize, kc: usize, j0: usize, n: usize, panel: &mut [T]) {
    let cols = NR.min(n - j0);
    if b.row_stride == 1 && b.col_stride != 1 {
        // B transposed (a weight read as Wᵀ): each column is a contiguous run of depth.
        for j in 0..cols {
            let start = b.offset + (j0 + j) * b.col_stride + pc;
            for (p, &v) in b.data[start..start + kc].iter().enumerate() {
                panel[p * NR + j] = v;
            }
        }
        for p in 0..kc {
            panel[p * NR + cols..p * NR + NR].fill(T::ZERO);
        }
        return;
    }
    for p in 0..kc {
        let dst = &mut panel[p * NR..p * NR + NR];
        if b.col_stride == 1 {
            let start = b.offset + (pc + p) * b.row_stride + j0;
            dst[..cols].copy_from_slice(&b.data[start..start + cols]);
        } else {
            for (j, d) in dst[..cols].iter_mut().enumerate() {
                *d = b.at(pc + p, j0 + j);
            }
        }
        for d in &mut dst[cols..] {
            *d = T::ZERO;
        }
    }
}

/// The textbook triple loop, the reference the packed GEMM is tested against.
#[allow(clippy::too_many_arguments)]
pub fn gemm_reference<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = T::ZERO;
            for p in 0..k {
                s += a.at(i, p) * b.at(p, j);
            }
            let old = if beta == T::ZERO {
                T::ZERO
            } else {
                beta * c[i * ldc + j]
            };
            c[i * ldc + j] = alpha * s + old;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn check(m: usize, n: usize, k: usize, transpose_a: bool, transpose_b: bool, beta: f32) {
        let mut rng = Rng::new((m * 31 + n * 7 + k) as u64);
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
        let c0: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
        let (ars, acs) = if transpose_a { (1, m) } else { (k, 1) };
        let (brs, bcs) = if transpose_b { (1, k) } else { (n, 1) };
        let av = MatRef {
            data: &a,
            offset: 0,
            row_stride: ars,
            col_stride: acs,
        };
        let bv = MatRef {
            data: &b,
            offset: 0,
            row_stride: brs,
            col_stride: bcs,
        };
        let mut fast = c0.clone();
        let mut slow = c0.clone();
        gemm(m, n, k, 0.5, av, bv, beta, &mut fast, n);
        gemm_reference(m, n, k, 0.5, av, bv, beta, &mut slow, n);
        for (x, y) in fast.iter().zip(&slow) {
            // f32 sums of k products in a different order: error grows like sqrt(k) · eps · |terms|.
            assert!(
                (x - y).abs() <= 1e-4 * (k as f32).sqrt() * (1.0 + y.abs()),
                "{m}x{n}x{k}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn packed_gemm_matches_reference_on_odd_shapes_and_strides() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 17, 5),
            (13, 33, 300),
            (100, 70, 513),
            (6, 16, 256),
            (97, 300, 40),
        ] {
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                check(m, n, k, ta, tb, 0.0);
                check(m, n, k, ta, tb, 1.5);
            }
        }
    }

    #[test]
    fn avx2_kernel_matches_portable_kernel() {
        let mut rng = Rng::new(3);
        let kc = 37;
        let a: Vec<f32> = (0..kc * MR).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..kc * NR).map(|_| rng.normal() as f32).collect();
        let mut fast = [0.0; MR * NR];
        let mut slow = [0.0; MR * NR];
        f32::micro_kernel(kc, &a, &b, &mut fast);
        portable_kernel(kc, &a, &b, &mut slow);
        for (x, y) in fast.iter().zip(&slow) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
}
