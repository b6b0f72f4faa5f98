//! End to end through the tape: a tiny 2-layer LLaMA-style decoder built only from the public ops, in f64
//! (embedding → per layer: rms_norm → q/k/v linear → rope → grouped-query causal attention → output projection
//! → residual → rms_norm → SwiGLU MLP → residual; then a final rms_norm, the output projection and
//! cross-entropy with an ignored padding target). Every element of every parameter gets a tape gradient that
//! matches central finite differences, and the stack built from the fused ops matches the same stack built
//! from their composed references, forward and backward.

mod common;

use common::{check_op, values};
use tapegrad::ops::{
    attention_reference, cross_entropy_reference, rms_norm_reference, rope_reference,
    swiglu_reference, Rope,
};
use tapegrad::{Rng, Tape, Tensor};

const V: usize = 11;
const C: usize = 8;
const H: usize = 2;
const HKV: usize = 1;
const D: usize = 4;
const F: usize = 12;
const T: usize = 5;
const B: usize = 2;
const LAYERS: usize = 2;
const EPS: f64 = 1e-5;
/// A target id outside the vocabulary, ignored by the loss (like a padding position).
const PAD: u32 = V as u32;
/// Parameters per layer: attention norm, wq, wk, wv, wo, MLP norm, w_gate, w_up, w_down.
const PER_LAYER: usize = 9;

/// The parameters, in the order `forward` reads them, with values at the scale of a trained small model.
fn parameters() -> Vec<Tensor> {
    let mut seed = 100;
    let mut next = |shape: &[usize], low: f64, high: f64| {
        seed += 1;
        values(shape, low, high, seed)
    };
    let mut params = vec![next(&[V, C], -1.0, 1.0)];
    for _ in 0..LAYERS {
        params.push(next(&[C], 0.5, 1.5));
        params.push(next(&[H * D, C], -0.5, 0.5));
        params.push(next(&[HKV * D, C], -0.5, 0.5));
        params.push(next(&[HKV * D, C], -0.5, 0.5));
        params.push(next(&[C, H * D], -0.5, 0.5));
        params.push(next(&[C], 0.5, 1.5));
        params.push(next(&[F, C], -0.5, 0.5));
        params.push(next(&[F, C], -0.5, 0.5));
        params.push(next(&[C, F], -0.4, 0.4));
    }
    params.push(next(&[C], 0.5, 1.5));
    params.push(next(&[V, C], -0.5, 0.5));
    params
}

/// Token ids and next-token targets, two targets being the ignored padding id.
fn batch() -> (Vec<u32>, Vec<u32>) {
    let mut rng = Rng::new(7);
    let ids: Vec<u32> = (0..B * T).map(|_| rng.below(V as u64) as u32).collect();
    let mut targets: Vec<u32> = (0..B * T).map(|_| rng.below(V as u64) as u32).collect();
    targets[T - 1] = PAD;
    targets[B * T - 1] = PAD;
    (ids, targets)
}

/// The mean cross-entropy of the stack on `ids` against `targets`, with the fused ops or their references.
fn forward(
    params: &[Tensor],
    ids: &[u32],
    targets: &[u32],
    rope: &Rope,
    fused: bool,
) -> tapegrad::Result<Tensor> {
    assert_eq!(params.len(), 1 + PER_LAYER * LAYERS + 2);
    let norm = |x: &Tensor, w: &Tensor| {
        if fused {
            x.rms_norm(w, EPS)
        } else {
            rms_norm_reference(x, w, EPS)
        }
    };
    let rotate = |x: &Tensor| {
        if fused {
            x.rope(rope, 0)
        } else {
            rope_reference(x, rope, 0)
        }
    };
    let heads = [0, 2, 1, 3];
    let mut x = params[0].embedding(ids, &[B, T])?;
    for layer in params[1..1 + PER_LAYER * LAYERS].chunks(PER_LAYER) {
        let [attn_norm, wq, wk, wv, wo, mlp_norm, w_gate, w_up, w_down] = layer else {
            unreachable!("chunks of PER_LAYER")
        };
        let h = norm(&x, attn_norm)?;
        let q = rotate(&h.linear(wq)?.reshape(&[B, T, H, D])?)?.permute(&heads)?;
        let k = rotate(&h.linear(wk)?.reshape(&[B, T, HKV, D])?)?.permute(&heads)?;
        let v = h.linear(wv)?.reshape(&[B, T, HKV, D])?.permute(&heads)?;
        let a = if fused {
            q.attention(&k, &v)?
        } else {
            attention_reference(&q, &k, &v)?
        };
        let a = a.permute(&heads)?.reshape(&[B, T, H * D])?;
        x = x.add(&a.linear(wo)?)?;
        let h = norm(&x, mlp_norm)?;
        let (gate, up) = (h.linear(w_gate)?, h.linear(w_up)?);
        let m = if fused {
            gate.swiglu(&up)?
        } else {
            swiglu_reference(&gate, &up)?
        };
        x = x.add(&m.linear(w_down)?)?;
    }
    let n = params.len();
    let logits = norm(&x, &params[n - 2])?.linear(&params[n - 1])?;
    assert_eq!(logits.shape(), [B, T, V]);
    if fused {
        logits.cross_entropy(targets, Some(PAD))
    } else {
        cross_entropy_reference(&logits, targets, Some(PAD))
    }
}

#[test]
fn every_parameter_gradient_matches_finite_differences() {
    let params = parameters();
    let numel: usize = params.iter().map(Tensor::numel).sum();
    assert_eq!(
        numel,
        V * C + LAYERS * (2 * C + 2 * (H + HKV) * D * C + 3 * C * F) + C + V * C
    );
    let (ids, targets) = batch();
    let rope = Rope::new(D, T, 10000.0).unwrap();
    let loss = forward(&params, &ids, &targets, &rope, true).unwrap();
    // A sane starting loss: near log(V) for a random model, far from a degenerate 0 or a blow-up.
    let l = loss.item().unwrap();
    assert!(l > 0.5 && l < 10.0, "loss {l}");
    // check_op watches every parameter, compares the fused forward with the composed one (1e-9), and checks
    // every element of every parameter's tape gradient against central differences (h = 1e-5, 1e-6·(1+|g|)).
    let reference = |xs: &[Tensor]| forward(xs, &ids, &targets, &rope, false);
    check_op(
        &params,
        |xs| forward(xs, &ids, &targets, &rope, true),
        Some(&reference),
    );
}

#[test]
fn fused_and_composed_stacks_have_the_same_gradients() {
    let params = parameters();
    let (ids, targets) = batch();
    let rope = Rope::new(D, T, 10000.0).unwrap();
    let gradients = |fused: bool| {
        let tape = Tape::new();
        let tracked: Vec<Tensor> = params.iter().map(|p| tape.watch(p)).collect();
        let loss = forward(&tracked, &ids, &targets, &rope, fused).unwrap();
        let grads = tape.backward(&loss).unwrap();
        assert_eq!(grads.len(), params.len(), "every parameter gets a gradient");
        let out: Vec<Vec<f64>> = tracked
            .iter()
            .map(|t| grads.get(t).unwrap().to_f64_vec())
            .collect();
        (loss.item().unwrap(), out)
    };
    let (fused_loss, fused) = gradients(true);
    let (ref_loss, reference) = gradients(false);
    // Both are f64 and differ only in summation order over a few dozen terms: 1e-12 is far above rounding.
    assert!((fused_loss - ref_loss).abs() <= 1e-12 * ref_loss.abs());
    for (p, (g, r)) in fused.iter().zip(&reference).enumerate() {
        assert!(
            g.iter().any(|&v| v != 0.0),
            "parameter {p} has an all-zero gradient"
        );
        for (e, (a, b)) in g.iter().zip(r).enumerate() {
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "parameter {p} element {e}: fused {a} vs composed {b}"
            );
        }
    }
}
