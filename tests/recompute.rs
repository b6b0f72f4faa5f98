//! Recomputation hints: save policies and checkpoint regions give the gradients of the plain tape, and the
//! tape's ledger counts exactly the tensors it keeps.

use proptest::prelude::*;
use tapegrad::llama::{Config, Llama, Recompute};
use tapegrad::{checkpoint, with_save_policy, DType, Rng, SavePolicy, Tape, Tensor};

/// One op of a random chain over a `[4, 6]` state.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Silu,
    Sigmoid,
    MulParam,
    AddParam,
    Linear,
    RmsNorm,
    Swiglu,
    Softmax,
    Square,
    Residual,
}

const KINDS: [Kind; 10] = [
    Kind::Silu,
    Kind::Sigmoid,
    Kind::MulParam,
    Kind::AddParam,
    Kind::Linear,
    Kind::RmsNorm,
    Kind::Swiglu,
    Kind::Softmax,
    Kind::Square,
    Kind::Residual,
];

const POLICIES: [SavePolicy; 3] = [
    SavePolicy::All,
    SavePolicy::Selective,
    SavePolicy::Recompute,
];

#[derive(Clone, Debug)]
enum Step {
    Op(Kind, SavePolicy),
    Region(Vec<Step>),
}

#[derive(Clone)]
struct Params {
    p: Tensor,
    w: Tensor,
    g: Tensor,
}

fn apply(kind: Kind, x: &Tensor, ps: &Params) -> tapegrad::Result<Tensor> {
    match kind {
        Kind::Silu => x.silu(),
        Kind::Sigmoid => x.sigmoid(),
        Kind::MulParam => x.mul(&ps.p),
        Kind::AddParam => x.add(&ps.p),
        Kind::Linear => x.linear(&ps.w),
        Kind::RmsNorm => x.rms_norm(&ps.g, 1e-6),
        Kind::Swiglu => x.swiglu(&x.linear(&ps.w)?),
        Kind::Softmax => x.softmax(),
        Kind::Square => x.mul(x),
        Kind::Residual => x.add(&x.silu()?),
    }
}

/// Runs `steps` with their hints: each op under its policy, each region as a checkpoint.
fn run_hinted(steps: &[Step], x: Tensor, ps: &Params) -> tapegrad::Result<Tensor> {
    let mut x = x;
    for step in steps {
        x = match step {
            Step::Op(kind, policy) => with_save_policy(*policy, || apply(*kind, &x, ps))?,
            Step::Region(inner) => {
                let (inner, input, ps) = (inner.clone(), x.clone(), ps.clone());
                checkpoint(move || run_hinted(&inner, input.clone(), &ps))?
            }
        };
    }
    Ok(x)
}

/// Runs the same ops on the plain tape.
fn run_plain(steps: &[Step], x: Tensor, ps: &Params) -> tapegrad::Result<Tensor> {
    let mut x = x;
    for step in steps {
        x = match step {
            Step::Op(kind, _) => apply(*kind, &x, ps)?,
            Step::Region(inner) => run_plain(inner, x, ps)?,
        };
    }
    Ok(x)
}

type Runner = fn(&[Step], Tensor, &Params) -> tapegrad::Result<Tensor>;

/// Gradients of `Σ chain(x) · weights` for the input and every parameter.
fn gradients(steps: &[Step], seed: u64, run: Runner) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let x = Tensor::randn(&[4, 6], 1.0, DType::F64, &mut rng);
    let p = Tensor::randn(&[6], 1.0, DType::F64, &mut rng);
    let w = Tensor::randn(&[6, 6], 0.4, DType::F64, &mut rng);
    let g = Tensor::uniform(&[6], 0.5, 1.5, DType::F64, &mut rng);
    let weights = Tensor::randn(&[4, 6], 1.0, DType::F64, &mut rng);
    let tape = Tape::new();
    let (x, p, w, g) = (
        tape.watch(&x),
        tape.watch(&p),
        tape.watch(&w),
        tape.watch(&g),
    );
    let ps = Params {
        p: p.clone(),
        w: w.clone(),
        g: g.clone(),
    };
    let out = run(steps, x.clone(), &ps).unwrap();
    let loss = out.mul(&weights).unwrap().sum(&[0, 1], false).unwrap();
    let grads = tape.backward(&loss).unwrap();
    [&x, &p, &w, &g]
        .iter()
        .map(|t| {
            grads
                .get(t)
                .map_or(vec![0.0; t.numel()], |g| g.to_f64_vec())
        })
        .collect()
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let op = (0..KINDS.len(), 0..POLICIES.len()).prop_map(|(k, p)| Step::Op(KINDS[k], POLICIES[p]));
    op.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            2 => inner.clone(),
            1 => prop::collection::vec(inner, 1..5).prop_map(Step::Region),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random checkpoint regions (nested) and random per-op policies over a random chain of ops give every
    /// gradient of the unhinted tape. Only the order in which a parameter's contributions are summed can
    /// differ (a region returns the sum of its own contributions at once), hence the 1e-10 tolerance in f64.
    #[test]
    fn hinted_chains_match_the_plain_tape(steps in prop::collection::vec(step_strategy(), 1..7), seed in 0u64..1000) {
        let hinted = gradients(&steps, seed, run_hinted);
        let plain = gradients(&steps, seed, run_plain);
        for (h, p) in hinted.iter().zip(&plain) {
            for (a, b) in h.iter().zip(p) {
                prop_assert!((a - b).abs() <= 1e-10 * (1.0 + b.abs()), "{a} vs {b} in {steps:?}");
            }
        }
    }
}

fn tiny_grads(recompute: Recompute) -> (f64, Vec<(String, Vec<f32>)>) {
    let config: Config = Config::preset("tiny").unwrap().config;
    let mut model = Llama::new(config, DType::F32, 7).unwrap();
    model.recompute = recompute;
    let (b, t) = (2, 24);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 131 % 499) as u32).collect();
    let out = model.causal_lm(&ids, b, t, true).unwrap();
    let grads = out
        .grads
        .unwrap()
        .into_iter()
        .map(|(n, g)| (n, g.to_vec::<f32>().unwrap()))
        .collect();
    (out.loss, grads)
}

/// Selective and full recomputation rerun the very same kernels on the very same inputs, and each parameter
/// receives its gradient from one op, so the gradients are bit-identical to keeping everything.
#[test]
fn tiny_gradients_are_identical_under_every_recompute_mode() {
    let (loss, none) = tiny_grads(Recompute::None);
    for mode in [Recompute::Selective, Recompute::Full] {
        let (l, grads) = tiny_grads(mode);
        assert_eq!(l.to_bits(), loss.to_bits(), "{mode}");
        for ((name, a), (_, b)) in none.iter().zip(&grads) {
            assert!(a == b, "{mode}: gradient of {name} differs");
        }
    }
}

/// Bytes of a `[4, 8]` f64 tensor.
const BUF: usize = 4 * 8 * 8;

fn known_chain(tape: &Tape) -> (Tensor, Tensor) {
    let mut rng = Rng::new(3);
    let x = tape.watch(&Tensor::randn(&[4, 8], 1.0, DType::F64, &mut rng));
    let c = Tensor::randn(&[8], 1.0, DType::F64, &mut rng);
    // scale keeps nothing; exp keeps its input y; mul keeps both operands (z and the constant c).
    let y = x.scale(2.0).unwrap();
    let z = y.exp().unwrap();
    let out = z.mul(&c).unwrap().sum(&[0, 1], false).unwrap();
    (x, out)
}

#[test]
fn the_ledger_counts_exactly_the_saved_tensors() {
    let tape = Tape::new();
    let (_, out) = known_chain(&tape);
    let held = tape.saved_bytes();
    assert_eq!(held.now, BUF + BUF + 8 * 8, "y, z and c");
    assert_eq!(held.peak, held.now);
    tape.backward(&out).unwrap();
    assert_eq!(tape.saved_bytes().now, 0, "backward releases everything");
    assert_eq!(tape.saved_bytes().peak, BUF + BUF + 8 * 8);
}

#[test]
fn a_selective_chain_keeps_only_what_it_cannot_recompute() {
    let tape = Tape::new();
    let (x, out) = with_save_policy(SavePolicy::Selective, || known_chain(&tape));
    // y and z are recipes over the leaf x; only the constant c is kept.
    assert_eq!(tape.saved_bytes().now, 8 * 8);
    let grads = tape.backward(&out).unwrap();
    let plain = Tape::new();
    let (px, pout) = known_chain(&plain);
    let expected = plain.backward(&pout).unwrap();
    assert_eq!(
        grads.get(&x).unwrap().to_f64_vec(),
        expected.get(&px).unwrap().to_f64_vec()
    );
}

#[test]
fn a_checkpoint_region_keeps_only_its_inputs() {
    let tape = Tape::new();
    let mut rng = Rng::new(5);
    let x = tape.watch(&Tensor::randn(&[4, 8], 1.0, DType::F64, &mut rng));
    let w = tape.watch(&Tensor::randn(&[8, 8], 1.0, DType::F64, &mut rng));
    let y = x.scale(0.5).unwrap();
    let (yr, wr) = (y.clone(), w.clone());
    let out = checkpoint(move || yr.linear(&wr)?.silu()?.mul(&yr)?.exp())
        .unwrap()
        .sum(&[0, 1], false)
        .unwrap();
    // The region's inputs are y (counted) and the leaf w (not counted); nothing inside it is kept.
    assert_eq!(tape.saved_bytes().now, BUF);
    let grads = tape.backward(&out).unwrap();
    assert!(grads.get(&x).is_some() && grads.get(&w).is_some());
}

#[test]
fn regions_outside_recording_just_run() {
    let x = Tensor::ones(&[2, 2], DType::F32);
    let xr = x.clone();
    let y = checkpoint(move || xr.scale(3.0)).unwrap();
    assert!(!y.is_tracked());
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![3.0; 4]);
}
