//! Tests of the packed GEMM against the reference product, and of each f32 kernel set against the portable
//! kernel.

use super::super::gemm_kernel::f32_kernel_sets;
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
fn packed_gemm_matches_reference_on_long_depth_and_wide_products() {
    // Depth split into uneven blocks (513 = 3 × 171), several packing phases (the packed operands of
    // 2100 rows pass the per-phase limit), partial panel groups, and B wider than one column block.
    for &(m, n, k) in &[
        (64, 72, 513),
        (300, 90, 1100),
        (2100, 20, 2100),
        (7, NC + 70, 3),
    ] {
        check(m, n, k, false, false, 0.0);
        check(m, n, k, true, false, 1.5);
        check(m, n, k, false, true, -1.0);
    }
}

#[test]
fn packed_gemm_accumulates_into_strided_c_and_never_reads_c_with_beta_zero() {
    let (m, n, k, ldc) = (50, 70, 600, 83);
    let mut rng = Rng::new(9);
    let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
    let view = |data, row_stride, col_stride| MatRef {
        data,
        offset: 0,
        row_stride,
        col_stride,
    };
    let (av, bv) = (view(&a, k, 1), view(&b, n, 1));
    // beta = 0 over C full of NaN: every element in the product is overwritten, the gaps keep their NaN.
    let mut c = vec![f32::NAN; m * ldc];
    gemm(m, n, k, 1.0, av, bv, 0.0, &mut c, ldc);
    let mut want = vec![0.0; m * ldc];
    gemm_reference(m, n, k, 1.0, av, bv, 0.0, &mut want, ldc);
    for i in 0..m {
        for j in 0..ldc {
            let (x, y) = (c[i * ldc + j], want[i * ldc + j]);
            if j < n {
                assert!(
                    (x - y).abs() <= 1e-3 * (1.0 + y.abs()),
                    "({i}, {j}): {x} vs {y}"
                );
            } else {
                assert!(x.is_nan(), "({i}, {j}) outside the product was written");
            }
        }
    }
    // Accumulating twice more with beta = 1: C = 3 · A · B.
    gemm(m, n, k, 2.0, av, bv, 1.0, &mut c, ldc);
    for i in 0..m {
        for j in 0..n {
            let (x, y) = (c[i * ldc + j], 3.0 * want[i * ldc + j]);
            assert!(
                (x - y).abs() <= 3e-3 * (1.0 + y.abs()),
                "({i}, {j}): {x} vs {y}"
            );
        }
    }
}

#[test]
fn f64_gemm_matches_reference() {
    let (m, n, k) = (37, 45, 300);
    let mut rng = Rng::new(5);
    let a: Vec<f64> = (0..m * k).map(|_| rng.normal()).collect();
    let b: Vec<f64> = (0..k * n).map(|_| rng.normal()).collect();
    let c0: Vec<f64> = (0..m * n).map(|_| rng.normal()).collect();
    let av = MatRef {
        data: &a,
        offset: 0,
        row_stride: 1,
        col_stride: m,
    };
    let bv = MatRef {
        data: &b,
        offset: 0,
        row_stride: n,
        col_stride: 1,
    };
    let (mut fast, mut slow) = (c0.clone(), c0);
    gemm(m, n, k, 0.5, av, bv, 2.0, &mut fast, n);
    gemm_reference(m, n, k, 0.5, av, bv, 2.0, &mut slow, n);
    for (x, y) in fast.iter().zip(&slow) {
        assert!((x - y).abs() <= 1e-10 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn f32_tile_reading_a_in_place_matches_packed_tile() {
    // Row-major A with an offset and a row stride wider than the depth; full and edge tiles, beta = 0 over
    // NaN and accumulation.
    let mut rng = Rng::new(8);
    let (kc, pc, lda, ldc) = (37, 5, 50, 21);
    let a: Vec<f32> = (0..3 + 2 * MR * lda).map(|_| rng.normal() as f32).collect();
    let av = MatRef {
        data: &a,
        offset: 3,
        row_stride: lda,
        col_stride: 1,
    };
    let b: Vec<f32> = (0..kc * NR).map(|_| rng.normal() as f32).collect();
    assert!(f32::reads_a_in_place(av) || !cfg!(target_arch = "x86_64"));
    // Every kernel set this CPU runs, and the portable path.
    let sets = f32_kernel_sets().into_iter().map(Some).chain([None]);
    for (set, &(i0, mr, nr)) in sets.flat_map(|s| {
        [(0, MR, NR), (MR, MR, 5), (2, 3, NR), (7, 1, 1)]
            .iter()
            .map(move |t| (s, t))
    }) {
        let mut panel = vec![0.0; MR * kc];
        pack_a(av, i0, i0 + mr, pc, kc, &mut panel);
        for &(beta, fill) in &[(0.0, f32::NAN), (1.0, 0.25), (-0.5, 2.0)] {
            let (mut direct, mut packed) = (vec![fill; MR * ldc], vec![fill; MR * ldc]);
            unsafe {
                let c = direct.as_mut_ptr();
                f32_tile_direct_a(set, kc, av, (i0, pc), &b, c, ldc, (mr, nr), 0.5, beta);
                let c = packed.as_mut_ptr();
                f32_tile(set, kc, &panel, &b, c, ldc, (mr, nr), 0.5, beta);
            }
            for (idx, (x, y)) in direct.iter().zip(&packed).enumerate() {
                let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-4 * (1.0 + y.abs());
                assert!(
                    same,
                    "{}: rows {i0}+{mr}, {nr} cols, beta {beta}, at {idx}: {x} vs {y}",
                    set.map_or("portable", |k| k.name)
                );
            }
            let inside = |idx: usize| idx / ldc < mr && idx % ldc < nr;
            if fill.is_nan() {
                // With beta = 0 the tile is written, never read; nothing outside it is touched.
                assert!(direct
                    .iter()
                    .enumerate()
                    .all(|(i, v)| inside(i) != v.is_nan()));
            }
        }
    }
}

#[test]
fn f32_interleave_rows_matches_portable() {
    let mut rng = Rng::new(4);
    for kc in [1, 7, 8, 9, 16, 37] {
        let rows: Vec<Vec<f32>> = (0..MR)
            .map(|_| (0..kc + 3).map(|_| rng.normal() as f32).collect())
            .collect();
        let views: [&[f32]; MR] = std::array::from_fn(|i| &rows[i][..kc]);
        let (mut fast, mut slow) = (vec![0.0; kc * MR + 5], vec![0.0; kc * MR + 5]);
        f32::interleave_rows(views, &mut fast[..kc * MR]);
        interleave_rows(views, &mut slow[..kc * MR]);
        assert_eq!(fast, slow, "kc {kc}");
    }
}

#[test]
fn f32_pack_b_of_a_transposed_b_matches_portable() {
    let mut rng = Rng::new(5);
    // Columns of B are rows of W ([n x k] row-major, k + 3 wide): full panels, a partial one, depth tails.
    for (n, kc, pc, count) in [
        (16, 8, 0, 1),
        (48, 37, 2, 3),
        (40, 9, 1, 3),
        (35, 16, 0, 3),
        (16, 1, 4, 1),
    ] {
        let k = pc + kc + 3;
        let w: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32).collect();
        let b = MatRef {
            data: &w,
            offset: 0,
            row_stride: 1,
            col_stride: k,
        };
        let stride = kc * NR + 4;
        let (mut fast, mut slow) = (vec![-1.0; count * stride], vec![-1.0; count * stride]);
        <f32 as GemmFloat>::pack_b(b, pc, kc, 0, n, count, &mut fast, stride);
        pack_b(b, pc, kc, 0, n, count, &mut slow, stride);
        assert_eq!(fast, slow, "n {n} kc {kc} pc {pc}");
    }
}

#[test]
fn f32_tile_matches_portable_kernel() {
    let mut rng = Rng::new(3);
    let (kc, ldc) = (37, 21);
    let a: Vec<f32> = (0..kc * MR).map(|_| rng.normal() as f32).collect();
    let b: Vec<f32> = (0..kc * NR).map(|_| rng.normal() as f32).collect();
    let c0: Vec<f32> = (0..MR * ldc).map(|_| rng.normal() as f32).collect();
    let mut acc = [0.0; MR * NR];
    portable_kernel(kc, &a, &b, &mut acc);
    // Full tiles (written from registers) and edge tiles, overwriting and accumulating.
    let sets = f32_kernel_sets();
    assert!(!sets.is_empty() || !std::is_x86_feature_detected!("avx2"));
    for (set, &(mr, nr)) in sets.iter().flat_map(|s| {
        [(MR, NR), (MR, 5), (2, NR), (1, 1)]
            .iter()
            .map(move |t| (*s, t))
    }) {
        for &beta in &[0.0, 1.0, -0.5] {
            let mut c = c0.clone();
            unsafe {
                f32_tile(
                    Some(set),
                    kc,
                    &a,
                    &b,
                    c.as_mut_ptr(),
                    ldc,
                    (mr, nr),
                    0.5,
                    beta,
                )
            };
            for i in 0..MR {
                for j in 0..ldc {
                    let (x, old) = (c[i * ldc + j], c0[i * ldc + j]);
                    let want = if i < mr && j < nr {
                        0.5 * acc[i * NR + j] + beta * old
                    } else {
                        old
                    };
                    assert!(
                        (x - want).abs() < 1e-4,
                        "{}: {mr}x{nr} beta {beta}: {x} vs {want}",
                        set.name
                    );
                }
            }
        }
    }
}

#[test]
fn f32_kernel_sets_give_the_same_bits() {
    // Each output element is one chain of fused multiply-adds in depth order whatever the vector width: every
    // kernel set gives the bits of that chain, computed here one element at a time (the wide AVX-512 format is
    // compared with the AVX2 set below), and the packed and in-place paths agree: a checkpoint resumes
    // identically on any CPU.
    let sets = f32_kernel_sets();
    let mut rng = Rng::new(11);
    let (kc, lda, ldc) = (300, 310, 20);
    let a: Vec<f32> = (0..MR * lda).map(|_| rng.normal() as f32).collect();
    let b: Vec<f32> = (0..kc * NR).map(|_| rng.normal() as f32).collect();
    let mut panel = vec![0.0; MR * kc];
    let av = MatRef {
        data: &a,
        offset: 0,
        row_stride: lda,
        col_stride: 1,
    };
    pack_a(av, 0, MR, 0, kc, &mut panel);
    let run = |set: &F32Kernels, direct: bool, (mr, nr): (usize, usize), alpha: f32, beta: f32| {
        let mut c = vec![0.5f32; MR * ldc];
        unsafe {
            let cp = c.as_mut_ptr();
            if direct {
                f32_tile_direct_a(
                    Some(set),
                    kc,
                    av,
                    (0, 0),
                    &b,
                    cp,
                    ldc,
                    (mr, nr),
                    alpha,
                    beta,
                );
            } else {
                f32_tile(Some(set), kc, &panel, &b, cp, ldc, (mr, nr), alpha, beta);
            }
        }
        c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let chain = |i: usize, j: usize| {
        (0..kc).fold(0f32, |acc, p| a[i * lda + p].mul_add(b[p * NR + j], acc))
    };
    for set in &sets {
        for (mr, nr) in [(MR, NR), (MR, 7), (3, NR)] {
            let want: Vec<u32> = (0..MR * ldc)
                .map(|x| {
                    let (i, j) = (x / ldc, x % ldc);
                    if i < mr && j < nr { chain(i, j) } else { 0.5 }.to_bits()
                })
                .collect();
            for direct in [false, true] {
                let got = run(set, direct, (mr, nr), 1.0, 0.0);
                assert_eq!(got, want, "{} {mr}x{nr} direct {direct}", set.name);
            }
            // With alpha and beta, the packed and the in-place paths agree.
            let scaled = |direct| run(set, direct, (mr, nr), 1.5, 0.25);
            assert_eq!(scaled(false), scaled(true), "{} {mr}x{nr}", set.name);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_wide_format_gives_the_bits_of_the_16_column_kernels() {
    use super::super::gemm_avx512::Wide;
    if !super::super::simd::testable(
        "the_wide_format_gives_the_bits_of_the_16_column_kernels",
        Wide::available(),
    ) {
        return;
    }
    // Edges in both directions (a wide edge tile over a full 16-column tile: n % 32 ≥ 16), A read in place
    // (row-major) and packed (transposed), transposed B, one depth step, and depths past one block.
    for (m, n, k, transpose_a, transpose_b) in [
        (7, 45, 33, false, false),
        (6, 32, 1, false, false),
        (6, 24, 600, false, false),
        (20, 56, 700, true, false),
        (13, 100, 70, false, true),
        (50, 200, 600, true, false),
        (650, 96, 1100, false, true),
    ] {
        let mut rng = Rng::new((m + n + k) as u64);
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
        let c0: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
        let (ars, acs) = if transpose_a { (1, m) } else { (k, 1) };
        let (brs, bcs) = if transpose_b { (1, k) } else { (n, 1) };
        let view = |data, row_stride, col_stride| MatRef {
            data,
            offset: 0,
            row_stride,
            col_stride,
        };
        for (alpha, beta) in [(1.0, 0.0), (1.0, 0.75), (0.3, 0.0), (0.3, 0.7)] {
            let p = Product {
                m,
                n,
                k,
                alpha,
                a: view(&a, ars, acs),
                b: view(&b, brs, bcs),
                beta,
            };
            let (mut wide, mut plain) = (c0.clone(), c0.clone());
            drive(&Wide, p, &mut wide, n);
            drive(&Plain, p, &mut plain, n);
            let bits = |c: &[f32]| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&wide),
                bits(&plain),
                "{m}x{n}x{k} alpha {alpha} beta {beta}"
            );
        }
    }
}
