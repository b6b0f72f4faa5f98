//! Every fused op agrees with its composed reference built from primitive ops (`attention_reference`,
//! `cross_entropy_reference`, `rms_norm_reference`, `swiglu_reference`, `rope_reference`): the forward values
//! and the gradient of every input (a vector-Jacobian product with a random seed through
//! `Tape::backward_with_seed`), in f64 and f32, on LLaMA-like shapes whose sequence lengths (37, 130) are not
//! multiples of the attention tiles (32 query rows, 64 keys). rms_norm and swiglu are also checked in bf16,
//! which the ops compute in f32: the bf16 results must be the f32 results up to bf16 rounding.

mod common;

use common::values;
use tapegrad::ops::{
    attention_reference, cross_entropy_reference, linear_cross_entropy_reference,
    rms_norm_reference, rope_reference, swiglu_reference, Rope,
};
use tapegrad::{DType, Rng, Tape, Tensor};

/// Batch, query heads, key/value heads, head dim, model width, vocabulary: a scaled-down LLaMA.
const B: usize = 2;
const H: usize = 4;
const HKV: usize = 2;
const D: usize = 16;
const C: usize = 64;
const V: usize = 50;
/// The MLP width (about 8/3 · C, as in LLaMA).
const F: usize = 172;
/// Sequence lengths: one inside the first tiles, one spanning three query tiles and three key tiles.
const LENGTHS: [usize; 2] = [37, 130];

/// Tolerance in f64: the longest accumulations here are 260-row sums (the rms_norm gain gradient, B·T rows)
/// and 130-key softmax sums, of terms below ~10 in size, so the forward-error bound n·u·Σ|terms| with
/// u = 1.1e-16 stays near 1e-12 even in the worst case (measured: below 5e-15). A wrong formula errs by O(1).
const TOL_F64: f64 = 1e-10;
/// Tolerance in f32: the same bound with u = 6e-8 is ~1e-5 worst case, and rounding errors grow like √n in
/// practice (measured: below 2e-6), so 1e-4 leaves margin over rounding while still catching any real error.
const TOL_F32: f64 = 1e-4;

fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => TOL_F64,
        DType::F32 => TOL_F32,
        other => unreachable!("no reference tolerance for {other}"),
    }
}

/// `|actual − expected| ≤ tol · (1 + |expected|)` elementwise: relative above 1, absolute below.
fn assert_close(what: &str, actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(a.is_finite(), "{what}: element {i} is {a}");
        assert!(
            (a - e).abs() <= tol * (1.0 + e.abs()),
            "{what}: element {i}: {a} vs reference {e} (tolerance {tol})"
        );
    }
}

/// The output and every input's gradient (as f64) of `f` at `inputs` cast to `dtype`, recorded on a fresh tape
/// and back-propagated from `seed` cast to `dtype`.
fn run(
    inputs: &[Tensor],
    seed: &Tensor,
    dtype: DType,
    f: &dyn Fn(&[Tensor]) -> tapegrad::Result<Tensor>,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let tape = Tape::new();
    let tracked: Vec<Tensor> = inputs
        .iter()
        .map(|t| tape.watch(&t.to_dtype(dtype).unwrap()))
        .collect();
    let out = f(&tracked).unwrap();
    assert_eq!(out.dtype(), dtype);
    assert_eq!(out.shape(), seed.shape());
    let grads = tape
        .backward_with_seed(&out, seed.to_dtype(dtype).unwrap())
        .unwrap();
    let grads = tracked
        .iter()
        .map(|t| {
            let g = grads.get(t).expect("every input gets a gradient");
            assert_eq!(g.dtype(), dtype);
            assert_eq!(g.shape(), t.shape());
            g.to_f64_vec()
        })
        .collect();
    (out.to_f64_vec(), grads)
}

/// Checks `fused` against `reference` at `inputs` (f64 values), forward and backward, in f64 and in f32.
fn check_fused(
    name: &str,
    inputs: &[Tensor],
    seed: &Tensor,
    fused: &dyn Fn(&[Tensor]) -> tapegrad::Result<Tensor>,
    reference: &dyn Fn(&[Tensor]) -> tapegrad::Result<Tensor>,
) {
    for dtype in [DType::F64, DType::F32] {
        let tol = tolerance(dtype);
        let (out, grads) = run(inputs, seed, dtype, fused);
        let (ref_out, ref_grads) = run(inputs, seed, dtype, reference);
        assert_close(&format!("{name} {dtype} forward"), &out, &ref_out, tol);
        for (i, (g, r)) in grads.iter().zip(&ref_grads).enumerate() {
            assert_close(&format!("{name} {dtype} gradient of input {i}"), g, r, tol);
        }
    }
}

#[test]
fn attention_matches_reference() {
    for t in LENGTHS {
        // q arrives as in the model: a [B, T, H, D] projection seen as [B, H, T, D] through a permute.
        let inputs = [
            values(&[B, t, H, D], -2.0, 2.0, 1),
            values(&[B, HKV, t, D], -2.0, 2.0, 2),
            values(&[B, HKV, t, D], -1.0, 1.0, 3),
        ];
        let seed = values(&[B, H, t, D], -1.0, 1.0, 4);
        check_fused(
            &format!("attention T={t}"),
            &inputs,
            &seed,
            &|xs| xs[0].permute(&[0, 2, 1, 3])?.attention(&xs[1], &xs[2]),
            &|xs| attention_reference(&xs[0].permute(&[0, 2, 1, 3])?, &xs[1], &xs[2]),
        );
    }
}

#[test]
fn attention_over_a_longer_key_cache_matches_reference() {
    // 37 new queries over 130 keys: query i attends keys up to i + 93, so the diagonal cuts tiles unevenly.
    let (tq, tk) = (37, 130);
    let inputs = [
        values(&[B, H, tq, D], -2.0, 2.0, 5),
        values(&[B, HKV, tk, D], -2.0, 2.0, 6),
        values(&[B, HKV, tk, D], -1.0, 1.0, 7),
    ];
    let seed = values(&[B, H, tq, D], -1.0, 1.0, 8);
    check_fused(
        "attention Tq=37 Tk=130",
        &inputs,
        &seed,
        &|xs| xs[0].attention(&xs[1], &xs[2]),
        &|xs| attention_reference(&xs[0], &xs[1], &xs[2]),
    );
}

#[test]
fn attention_of_a_few_rows_over_a_long_key_cache_matches_reference() {
    // Decoding: one to four new queries over 130 cached keys take the row path instead of the tiles.
    for tq in [1, 3, 4] {
        let tk = 130;
        let inputs = [
            values(&[B, H, tq, D], -2.0, 2.0, 15),
            values(&[B, HKV, tk, D], -2.0, 2.0, 16),
            values(&[B, HKV, tk, D], -1.0, 1.0, 17),
        ];
        let seed = values(&[B, H, tq, D], -1.0, 1.0, 18);
        check_fused(
            &format!("attention Tq={tq} Tk={tk}"),
            &inputs,
            &seed,
            &|xs| xs[0].attention(&xs[1], &xs[2]),
            &|xs| attention_reference(&xs[0], &xs[1], &xs[2]),
        );
    }
}

/// Random targets in `0..V`, with every fifth replaced by `ignore` when given.
fn targets(n: usize, ignore: Option<u32>, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| match ignore {
            Some(ig) if i % 5 == 2 => ig,
            _ => rng.below(V as u64) as u32,
        })
        .collect()
}

#[test]
fn cross_entropy_matches_reference() {
    for t in LENGTHS {
        // An ignore index inside the vocabulary (a padding id), one outside it, and none.
        for ignore in [None, Some(0), Some(u32::MAX)] {
            let ts = targets(B * t, ignore, 9 + t as u64);
            let logits = values(&[B, t, V], -4.0, 4.0, 10);
            let seed = values(&[], 0.5, 2.0, 11);
            check_fused(
                &format!("cross_entropy T={t} ignore={ignore:?}"),
                &[logits],
                &seed,
                &|xs| xs[0].cross_entropy(&ts, ignore),
                &|xs| cross_entropy_reference(&xs[0], &ts, ignore),
            );
        }
    }
}

#[test]
fn linear_cross_entropy_matches_reference() {
    for t in LENGTHS {
        for ignore in [None, Some(0)] {
            let ts = targets(B * t, ignore, 12 + t as u64);
            let inputs = [
                values(&[B, t, C], -1.0, 1.0, 13),
                values(&[V, C], -0.5, 0.5, 14),
            ];
            let seed = values(&[], 0.5, 2.0, 15);
            // The default chunk (every row at once here), chunks that split the rows unevenly, and rows
            // one at a time.
            for chunk in [usize::MAX, 7, 1] {
                check_fused(
                    &format!("linear_cross_entropy T={t} ignore={ignore:?} chunk={chunk}"),
                    &inputs,
                    &seed,
                    &|xs| xs[0].linear_cross_entropy_in_chunks(&xs[1], &ts, ignore, chunk),
                    &|xs| linear_cross_entropy_reference(&xs[0], &xs[1], &ts, ignore),
                );
            }
        }
    }
}

#[test]
fn linear_cross_entropy_keeps_only_what_the_tracked_inputs_need() {
    let ts = targets(B * 37, None, 16);
    let (x, w) = (
        values(&[B, 37, C], -1.0, 1.0, 17),
        values(&[V, C], -0.5, 0.5, 18),
    );
    let expected = linear_cross_entropy_reference(&x, &w, &ts, None)
        .unwrap()
        .item()
        .unwrap();
    // Untracked: the loss alone.
    let loss = x.linear_cross_entropy(&w, &ts, None).unwrap();
    assert!((loss.item().unwrap() - expected).abs() < 1e-12);
    // A frozen head: the input's gradient only, kept at the input's size.
    let tape = Tape::new();
    let xt = tape.watch(&x);
    let loss = xt.linear_cross_entropy(&w, &ts, None).unwrap();
    let kept = tape.saved_bytes().now;
    assert_eq!(kept, x.numel() * 8, "dx alone is kept, not the logits");
    let grads = tape.backward(&loss).unwrap();
    let gx = grads.get(&xt).unwrap().to_vec::<f64>().unwrap();
    let tape = Tape::new();
    let xr = tape.watch(&x);
    let reference = linear_cross_entropy_reference(&xr, &w, &ts, None).unwrap();
    let rx = tape
        .backward(&reference)
        .unwrap()
        .get(&xr)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert_close("frozen head dx", &gx, &rx, TOL_F64);
}

#[test]
fn rms_norm_matches_reference() {
    for t in LENGTHS {
        let inputs = [
            values(&[B, t, C], -2.0, 2.0, 12),
            values(&[C], 0.5, 1.5, 13),
        ];
        let seed = values(&[B, t, C], -1.0, 1.0, 14);
        check_fused(
            &format!("rms_norm T={t}"),
            &inputs,
            &seed,
            &|xs| xs[0].rms_norm(&xs[1], 1e-5),
            &|xs| rms_norm_reference(&xs[0], &xs[1], 1e-5),
        );
    }
}

#[test]
fn swiglu_matches_reference() {
    for t in LENGTHS {
        let inputs = [
            values(&[B, t, F], -4.0, 4.0, 15),
            values(&[B, t, F], -2.0, 2.0, 16),
        ];
        let seed = values(&[B, t, F], -1.0, 1.0, 17);
        check_fused(
            &format!("swiglu T={t}"),
            &inputs,
            &seed,
            &|xs| xs[0].swiglu(&xs[1]),
            &|xs| swiglu_reference(&xs[0], &xs[1]),
        );
    }
}

#[test]
fn rope_matches_reference() {
    let rope = Rope::new(D, 256, 10000.0).unwrap();
    for t in LENGTHS {
        for start in [0, 7] {
            let x = values(&[B, t, H, D], -1.0, 1.0, 18);
            let seed = values(&[B, t, H, D], -1.0, 1.0, 19);
            check_fused(
                &format!("rope T={t} start={start}"),
                &[x],
                &seed,
                &|xs| xs[0].rope(&rope, start),
                &|xs| rope_reference(&xs[0], &rope, start),
            );
        }
        // Keys as a strided view: the base is [B, H, T, D] and the op sees [B, T, H, D].
        let x = values(&[B, HKV, t, D], -1.0, 1.0, 20);
        let seed = values(&[B, t, HKV, D], -1.0, 1.0, 21);
        check_fused(
            &format!("rope T={t} transposed"),
            &[x],
            &seed,
            &|xs| xs[0].transpose(1, 2)?.rope(&rope, 3),
            &|xs| rope_reference(&xs[0].transpose(1, 2)?, &rope, 3),
        );
    }
}

/// Checks that `f` in bf16 gives the f32 result up to bf16 rounding, forward and backward. Inputs and seed
/// are rounded to bf16 first and both runs see exactly those values.
fn check_bf16(
    name: &str,
    inputs: &[Tensor],
    seed: &Tensor,
    f: &dyn Fn(&[Tensor]) -> tapegrad::Result<Tensor>,
) {
    let round = |t: &Tensor| {
        t.to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    let inputs: Vec<Tensor> = inputs.iter().map(round).collect();
    let seed = round(seed);
    let (out, grads) = run(&inputs, &seed, DType::BF16, f);
    let (ref_out, ref_grads) = run(&inputs, &seed, DType::F32, f);
    // bf16 keeps 8 significant bits, so one rounding of the f32 result is off by at most 2⁻⁸ ≈ 3.9e-3
    // relative (measured: 3.9e-3); 1e-2 relative (no absolute floor: the error is purely relative) allows that
    // with margin, and would catch a kernel that computed in bf16 (errors compounding over a row) or a lost
    // cast.
    let tol = 1e-2;
    let check = |what: String, a: &[f64], e: &[f64]| {
        assert_eq!(a.len(), e.len());
        for (i, (a, e)) in a.iter().zip(e).enumerate() {
            assert!(
                (a - e).abs() <= tol * e.abs(),
                "{what}: element {i}: bf16 {a} vs f32 {e}"
            );
        }
    };
    check(format!("{name} bf16 forward"), &out, &ref_out);
    for (i, (g, r)) in grads.iter().zip(&ref_grads).enumerate() {
        check(format!("{name} bf16 gradient of input {i}"), g, r);
    }
}

#[test]
fn rms_norm_and_swiglu_in_bf16() {
    let t = LENGTHS[0];
    check_bf16(
        "rms_norm",
        &[
            values(&[B, t, C], -2.0, 2.0, 22),
            values(&[C], 0.5, 1.5, 23),
        ],
        &values(&[B, t, C], -1.0, 1.0, 24),
        &|xs| xs[0].rms_norm(&xs[1], 1e-5),
    );
    check_bf16(
        "swiglu",
        &[
            values(&[B, t, F], -4.0, 4.0, 25),
            values(&[B, t, F], -2.0, 2.0, 26),
        ],
        &values(&[B, t, F], -1.0, 1.0, 27),
        &|xs| xs[0].swiglu(&xs[1]),
    );
}
