//! Quantized weights: `linear_quantized` against dequantize-then-`linear` for every block format, forward and
//! `dx` (odd row counts, panels that end mid-way, several panels), quantization round trips, and corrupt or
//! mis-sized blocks as errors or NaN, never panics.

mod common;

use common::{random_quant, values, QUANT_FORMATS};
use proptest::prelude::*;
use tapegrad::backend::cpu::{quant_dot, quant_matmul::ROW_PATH_MAX};
use tapegrad::io::gguf::GgmlType;
use tapegrad::ops::linear_quantized_reference;
use tapegrad::{DType, QuantMatrix, Rng, Tape, Tensor};

/// Forward and `dx` of `x · Wᵀ` straight from the blocks against the dequantized weight, in `dtype` (f32 rows
/// decoded in integers: within the activations' rounding).
fn check_against_dequantized(w: &QuantMatrix, lead: &[usize], dtype: DType, tol: f64) {
    let k = w.shape()[1];
    let mut shape = lead.to_vec();
    shape.push(k);
    let x = values(&shape, -1.0, 1.0, 7).to_dtype(dtype).unwrap();
    let tape = Tape::new();
    let (xq, xr) = (tape.watch(&x), tape.watch(&x));
    let (yq, yr) = (
        xq.linear_quantized(w).unwrap(),
        linear_quantized_reference(&xr, w).unwrap(),
    );
    assert_eq!(yq.shape(), yr.shape());
    assert_eq!(yq.dtype(), dtype);
    let close = |a: &[f64], b: &[f64], what: &str| {
        let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            assert!(
                (p - q).abs() <= tol * scale,
                "{w:?} {what} element {i}: {p} vs {q}"
            );
        }
    };
    let rows = x.numel() / k;
    if dtype == DType::F32 && rows <= ROW_PATH_MAX && quant_dot::supports(w.ggml_type()) {
        // Decoding in integers: each activation rounds to a step of `max|x| / 127` of its block of 32, so
        // element `(i, n)` may move by up to `Σ_j |W[n, j]| · step(i, j) / 2` (plus f32 rounding).
        let (dense, xs) = (w.dequantize(), x.to_f64_vec());
        let steps: Vec<f64> = xs
            .chunks(32)
            .map(|b| b.iter().fold(0f64, |m, v| m.max(v.abs())) / 127.0)
            .collect();
        let (yq, yr) = (yq.to_f64_vec(), yr.to_f64_vec());
        let n = w.shape()[0];
        for (e, (p, q)) in yq.iter().zip(&yr).enumerate() {
            let (i, row) = (e / n, &dense[(e % n) * k..(e % n + 1) * k]);
            let bound: f64 = row
                .iter()
                .enumerate()
                .map(|(j, &v)| v.abs() as f64 * steps[(i * k + j) / 32] / 2.0)
                .sum();
            assert!(
                (p - q).abs() <= bound * 1.001 + 1e-4 * q.abs().max(1.0),
                "{w:?} forward element {e}: {p} vs {q} (bound {bound})"
            );
        }
    } else {
        close(&yq.to_f64_vec(), &yr.to_f64_vec(), "forward");
    }
    let r = values(yq.shape(), -1.0, 1.0, 9).to_dtype(dtype).unwrap();
    let loss = yq
        .mul(&r)
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&yr.mul(&r).unwrap().sum_all().unwrap())
        .unwrap();
    let grads = tape.backward(&loss).unwrap();
    let (gq, gr) = (grads.get(&xq).unwrap(), grads.get(&xr).unwrap());
    close(&gq.to_f64_vec(), &gr.to_f64_vec(), "dx");
}

#[test]
fn every_format_matches_its_dequantized_weight_forward_and_backward() {
    for (i, &(ty, _)) in QUANT_FORMATS.iter().enumerate() {
        let block = ty.block_layout().unwrap().0;
        // One and three rows of x take the row path (decoding), six the panels and the GEMM.
        for (rows, blocks, lead) in [
            (1, 1, vec![1]),
            (17, 2, vec![3]),
            (5, 1, vec![2, 3]),
            (70, 1, vec![2]),
        ] {
            let w = random_quant(ty, rows, blocks * block, i as u64 * 31 + rows as u64);
            // f64 sums the same exact products in another order than the reference's GEMM: rounding only.
            check_against_dequantized(&w, &lead, DType::F64, 1e-12);
            check_against_dequantized(&w, &lead, DType::F32, 1e-5);
        }
    }
}

#[test]
fn weights_spanning_several_panels_match() {
    // 2048 columns make panels of 128 rows: 300 rows are two whole panels and a partial one.
    for ty in [GgmlType::Q8_0, GgmlType::Q4_K] {
        let w = random_quant(ty, 300, 2048, 5);
        check_against_dequantized(&w, &[9], DType::F32, 1e-5);
        check_against_dequantized(&w, &[1], DType::F32, 1e-5);
    }
}

#[test]
fn half_inputs_compute_in_f32_and_come_back_in_their_dtype() {
    let w = random_quant(GgmlType::Q4_1, 8, 64, 3);
    check_against_dequantized(&w, &[2, 3], DType::BF16, 1e-2);
}

#[test]
fn quantizing_a_weight_keeps_it_close() {
    let (rows, cols) = (6, 64);
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 997) as f32 / 997.0 - 0.5) * 0.2)
        .collect();
    for (ty, step) in [
        (GgmlType::Q8_0, 0.1 / 127.0),
        (GgmlType::Q4_0, 0.1 / 4.0),
        (GgmlType::Q4_1, 0.2 / 15.0),
    ] {
        let w = QuantMatrix::quantize(&v, rows, cols, ty).unwrap();
        assert_eq!(w.shape(), [rows, cols]);
        assert_eq!(w.ggml_type(), ty);
        assert_eq!(
            w.byte_len(),
            rows * cols / 32 * ty.block_layout().unwrap().1
        );
        for (a, b) in v.iter().zip(w.dequantize()) {
            assert!(
                (a - b).abs() <= step * 0.51 + 1e-4,
                "{ty}: {a} came back as {b}"
            );
        }
    }
    let err = QuantMatrix::quantize(&v, rows, cols, GgmlType::Q6_K)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot quantize to Q6_K"), "{err}");
}

#[test]
fn mis_sized_blocks_wrong_shapes_and_plain_types_are_errors() {
    let err = QuantMatrix::from_blocks(GgmlType::Q8_0, 2, 64, vec![0; 4 * 34 - 1])
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2, 64]") && err.contains("135"), "{err}");
    let err = QuantMatrix::from_blocks(GgmlType::Q8_0, 2, 48, vec![0; 68])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not whole Q8_0 blocks of 32"), "{err}");
    let err = QuantMatrix::from_blocks(GgmlType::Q8_0, 2, 0, vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not whole Q8_0 blocks"), "{err}");
    let err = QuantMatrix::from_blocks(GgmlType::F16, 2, 32, vec![0; 128])
        .unwrap_err()
        .to_string();
    assert!(err.contains("F16 is not a block format"), "{err}");
    let err = QuantMatrix::quantize(&[0.0; 64], 3, 32, GgmlType::Q8_0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("64 values are not [3, 32]"), "{err}");
    let w = random_quant(GgmlType::Q4_0, 4, 32, 1);
    let err = Tensor::zeros(&[2, 31], DType::F32)
        .linear_quantized(&w)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[2, 31]") && err.contains("Q4_0 [4, 32]"),
        "{err}"
    );
    let err = w.select_rows(&[0, 4]).unwrap_err().to_string();
    assert!(err.contains("row 4 of a matrix of 4 rows"), "{err}");
}

#[test]
fn selected_rows_are_those_rows() {
    let w = random_quant(GgmlType::Q5_K, 5, 256, 2);
    let picked = w.select_rows(&[4, 0, 0, 2]).unwrap();
    let (all, got) = (w.dequantize(), picked.dequantize());
    for (i, &r) in [4usize, 0, 0, 2].iter().enumerate() {
        assert_eq!(got[i * 256..(i + 1) * 256], all[r * 256..(r + 1) * 256]);
        assert_eq!(picked.row(i), w.row(r));
    }
    // Selections compose (rows looked up through both orders, the blocks shared), and the reordered blocks
    // read back in the new order.
    let again = picked.select_rows(&[3, 0]).unwrap();
    assert_eq!((again.row(0), again.row(1)), (w.row(2), w.row(4)));
    assert_eq!(again.blocks().len(), again.byte_len());
    assert_eq!(again.blocks()[..again.byte_len() / 2], *w.row(2));
    assert!(picked.select_rows(&[4]).is_err());
    // Many rows: dequantized in parallel through the order as well.
    let tall = random_quant(GgmlType::Q8_0, 300, 256, 3);
    let order: Vec<usize> = (0..300).rev().collect();
    let (flipped, all) = (
        tall.select_rows(&order).unwrap().dequantize(),
        tall.dequantize(),
    );
    for r in 0..300 {
        assert_eq!(
            flipped[r * 256..(r + 1) * 256],
            all[(299 - r) * 256..(300 - r) * 256]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any bytes of the right length are a matrix: NaN or infinite scales give NaN or infinite outputs, never a
    /// panic, in the forward and the backward pass.
    #[test]
    fn corrupt_blocks_never_panic(format in 0usize..8, rows in 1usize..4, seed: u64) {
        let ty = QUANT_FORMATS[format].0;
        let (block, bytes) = ty.block_layout().unwrap();
        let mut rng = Rng::new(seed);
        let data: Vec<u8> = (0..rows * bytes).map(|_| rng.below(256) as u8).collect();
        let w = QuantMatrix::from_blocks(ty, rows, block, data).unwrap();
        let tape = Tape::new();
        let x = tape.watch(&values(&[2, block], -1.0, 1.0, seed).to_dtype(DType::F32).unwrap());
        let y = x.linear_quantized(&w).unwrap();
        prop_assert_eq!(y.shape(), &[2, rows][..]);
        let grads = tape.backward(&y.sum_all().unwrap()).unwrap();
        prop_assert_eq!(grads.get(&x).unwrap().shape(), &[2, block][..]);
    }
}
