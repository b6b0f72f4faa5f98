//! Tape semantics, beyond per-op gradients: fan-in accumulation, one backward per tape, seeds for non-scalar
//! outputs, `no_grad` recording nothing, tapes never mixed, failed ops leaving the tape usable, saved tensors
//! released by backward or by dropping the tape (observed through copy-on-write), gradients through views, and
//! dtype mismatches.

mod common;

use common::values;
use tapegrad::tape::grad_enabled;
use tapegrad::{no_grad, DType, Error, Tape, Tensor};

fn assert_close(actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol * (1.0 + e.abs()),
            "element {i}: {a} vs expected {e}"
        );
    }
}

/// The error of `result`, which must fail (`Result::expect_err` needs `T: Debug`, which `Gradients` is not).
fn expect_err<T>(result: tapegrad::Result<T>, what: &str) -> Error {
    match result {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e,
    }
}

fn grad_of(grads: &tapegrad::Gradients, t: &Tensor) -> Vec<f64> {
    grads.get(t).expect("a gradient").to_f64_vec()
}

#[test]
fn fan_in_gradients_accumulate() {
    let x = values(&[5], -2.0, 2.0, 1);
    let xs = x.to_f64_vec();

    // x used three times by one chain of muls: d/dx Σ x³ = 3x².
    let tape = Tape::new();
    let tx = tape.watch(&x);
    let loss = tx.mul(&tx).unwrap().mul(&tx).unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap();
    let expected: Vec<f64> = xs.iter().map(|v| 3.0 * v * v).collect();
    assert_close(&grad_of(&g, &tx), &expected, 1e-14);

    // x reaching the loss along three different paths: d/dx Σ (eˣ + x² + 2x) = eˣ + 2x + 2.
    let tape = Tape::new();
    let tx = tape.watch(&x);
    let loss = tx
        .exp()
        .unwrap()
        .add(&tx.mul(&tx).unwrap())
        .unwrap()
        .add(&tx.scale(2.0).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = tape.backward(&loss).unwrap();
    let expected: Vec<f64> = xs.iter().map(|v| v.exp() + 2.0 * v + 2.0).collect();
    assert_close(&grad_of(&g, &tx), &expected, 1e-14);

    // x + x + x: the three unit gradients add up to exactly 3.
    let tape = Tape::new();
    let tx = tape.watch(&x);
    let loss = tx.add(&tx).unwrap().add(&tx).unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap();
    assert_eq!(grad_of(&g, &tx), vec![3.0; 5]);
}

#[test]
fn watched_but_unused_and_watched_twice() {
    let x = values(&[3], -1.0, 1.0, 2);
    let tape = Tape::new();
    let (a, b, unused) = (tape.watch(&x), tape.watch(&x), tape.watch(&x));
    assert!(a.shares_storage(&x), "watch shares the storage");
    // Two leaves over the same data get separate gradients.
    let loss = a.mul(&b.scale(3.0).unwrap()).unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap();
    let xs = x.to_f64_vec();
    assert_close(
        &grad_of(&g, &a),
        &xs.iter().map(|v| 3.0 * v).collect::<Vec<_>>(),
        1e-15,
    );
    assert_close(
        &grad_of(&g, &b),
        &xs.iter().map(|v| 3.0 * v).collect::<Vec<_>>(),
        1e-15,
    );
    assert!(g.get(&unused).is_none(), "the loss does not depend on it");
    assert!(g.get(&x).is_none(), "an untracked tensor has no gradient");
    assert_eq!(g.len(), 2);
}

#[test]
fn second_backward_on_a_consumed_tape_is_a_tape_error() {
    let x = values(&[4], -1.0, 1.0, 3);
    let tape = Tape::new();
    let tx = tape.watch(&x);
    let loss = tx.exp().unwrap().sum_all().unwrap();
    tape.backward(&loss).unwrap();
    let e = expect_err(tape.backward(&loss), "second backward fails");
    assert!(matches!(e, Error::Tape { op: "backward", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "backward: this tape was already consumed by an earlier backward"
    );
    // Recording onto the consumed tape is refused too.
    let e = expect_err(tx.exp(), "recording onto a consumed tape fails");
    assert!(matches!(e, Error::Tape { op: "exp", .. }), "{e:?}");
    // A fresh tape over the same data works.
    let tape = Tape::new();
    let tx = tape.watch(&x);
    let loss = tx.exp().unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap();
    let expected: Vec<f64> = x.to_f64_vec().iter().map(|v| v.exp()).collect();
    assert_close(&grad_of(&g, &tx), &expected, 1e-15);
}

#[test]
fn non_scalar_output_needs_a_seed() {
    let x = values(&[2, 3], -1.0, 1.0, 4);
    let tape = Tape::new();
    let tx = tape.watch(&x);
    let y = tx.mul(&tx).unwrap();
    let e = expect_err(tape.backward(&y), "non-scalar without seed");
    assert!(matches!(e, Error::Tape { op: "backward", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "backward: output of shape [2, 3] is not a scalar; use backward_with_seed"
    );
    // A seed of the wrong shape is refused, and leaves the tape unconsumed.
    let wrong_shape = values(&[3, 2], -1.0, 1.0, 5);
    let e = expect_err(
        tape.backward_with_seed(&y, wrong_shape),
        "seed of another shape",
    );
    assert!(matches!(e, Error::Tape { op: "backward", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "backward: seed of shape [3, 2] does not match output of shape [2, 3]"
    );
    // The vector-Jacobian product with a seed s: d/dx Σ s ⊙ x² = 2 s x.
    let seed = values(&[2, 3], -1.0, 1.0, 6);
    let g = tape.backward_with_seed(&y, seed.clone()).unwrap();
    let expected: Vec<f64> = x
        .to_f64_vec()
        .iter()
        .zip(seed.to_f64_vec())
        .map(|(v, s)| 2.0 * v * s)
        .collect();
    assert_close(&grad_of(&g, &tx), &expected, 1e-15);
}

#[test]
fn a_one_element_non_scalar_needs_no_seed() {
    let x = values(&[1, 1], 0.5, 1.0, 7);
    let tape = Tape::new();
    let tx = tape.watch(&x);
    let y = tx.log().unwrap();
    let g = tape.backward(&y).unwrap();
    assert_close(&grad_of(&g, &tx), &[1.0 / x.item().unwrap()], 1e-15);
}

#[test]
fn seed_of_another_dtype_is_an_error_not_a_panic() {
    // Every op's backward reads the gradient in its own dtype; a seed of another dtype must be refused up front.
    let x = values(&[1, 2, 3, 4], -1.0, 1.0, 8);
    let w = values(&[4], 0.5, 1.5, 9);
    let tape = Tape::new();
    let (tx, tw) = (tape.watch(&x), tape.watch(&w));
    let y = tx.rms_norm(&tw, 1e-6).unwrap();
    let seed = Tensor::ones(&[1, 2, 3, 4], DType::F32);
    let e = expect_err(
        tape.backward_with_seed(&y, seed),
        "an f32 seed for an f64 output",
    );
    assert!(matches!(e, Error::DType { op: "backward", .. }), "{e:?}");
    assert_eq!(e.to_string(), "backward: seed is f32 but the output is f64");
    // The refusal did not consume the tape.
    let g = tape
        .backward_with_seed(&y, Tensor::ones(&[1, 2, 3, 4], DType::F64))
        .unwrap();
    assert_eq!(g.len(), 2);
}

#[test]
fn no_grad_records_nothing() {
    let x = values(&[3, 4], -1.0, 1.0, 10);
    let tape = Tape::new();
    let tx = tape.watch(&x);
    assert_eq!(tape.len(), 1, "the leaf");
    let before = tape.len();
    let y = no_grad(|| {
        assert!(!grad_enabled());
        let y = tx.matmul(&tx.transpose(0, 1).unwrap()).unwrap();
        // Nested no_grad keeps recording off after the inner one returns.
        let z = no_grad(|| y.exp().unwrap());
        assert!(!grad_enabled());
        z.softmax()
            .unwrap()
            .add(&tx.sum(&[1], true).unwrap())
            .unwrap()
    });
    assert!(grad_enabled(), "recording is back on after no_grad");
    assert_eq!(tape.len(), before, "nothing was recorded");
    assert!(!y.is_tracked());
    // Outside no_grad every op on a tracked tensor records exactly one node.
    let z = tx.exp().unwrap();
    assert!(z.is_tracked());
    assert_eq!(tape.len(), before + 1);
    // The untracked result is a constant for backward.
    let loss = z
        .sum(&[1], true)
        .unwrap()
        .mul(&y.narrow(1, 0, 1).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = tape.backward(&loss).unwrap();
    assert_eq!(g.len(), 1);
}

#[test]
fn no_grad_is_restored_after_a_panic() {
    let result = std::panic::catch_unwind(|| no_grad(|| panic!("inside no_grad")));
    assert!(result.is_err());
    assert!(grad_enabled(), "the guard restores recording on unwind");
}

#[test]
fn tensors_from_two_tapes_do_not_mix() {
    let (x, y) = (
        values(&[2, 2], -1.0, 1.0, 11),
        values(&[2, 2], -1.0, 1.0, 12),
    );
    let (t1, t2) = (Tape::new(), Tape::new());
    let (a, b) = (t1.watch(&x), t2.watch(&y));
    let e = expect_err(a.add(&b), "mixed tapes");
    assert!(matches!(e, Error::Tape { op: "add", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "add: inputs are recorded on two different tapes"
    );
    let e = expect_err(a.matmul(&b), "mixed tapes");
    assert!(matches!(e, Error::Tape { op: "matmul", .. }), "{e:?}");
    // An output of one tape cannot be differentiated on the other; nor can an untracked tensor.
    let la = a.sum_all().unwrap();
    let e = expect_err(t2.backward(&la), "foreign output");
    assert!(matches!(e, Error::Tape { op: "backward", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "backward: output was not recorded on this tape (no watched tensor reaches it)"
    );
    assert!(matches!(
        t1.backward(&x.sum_all().unwrap()),
        Err(Error::Tape { .. })
    ));
    // Mixing a tracked tensor with an untracked one is fine, and each tape still works on its own.
    let ga = t1.backward(&a.mul(&y).unwrap().sum_all().unwrap()).unwrap();
    assert_eq!(grad_of(&ga, &a), y.to_f64_vec());
    assert!(ga.get(&b).is_none(), "b belongs to the other tape");
    let gb = t2.backward(&b.sum_all().unwrap()).unwrap();
    assert_eq!(grad_of(&gb, &b), vec![1.0; 4]);
}

#[test]
fn a_failed_op_leaves_the_tape_usable() {
    let x = values(&[2, 3], -1.0, 1.0, 13);
    let tape = Tape::new();
    let tx = tape.watch(&x);
    let y = tx.exp().unwrap();
    let len = tape.len();
    assert!(matches!(y.matmul(&tx), Err(Error::Shape { .. })));
    assert!(matches!(
        y.add(&values(&[4], 0.0, 1.0, 1)),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(y.reshape(&[7]), Err(Error::Shape { .. })));
    assert!(matches!(y.narrow(1, 2, 2), Err(Error::Index { .. })));
    assert!(matches!(
        y.cross_entropy(&[0, 3], None),
        Err(Error::Index { .. })
    ));
    assert!(matches!(
        y.add(&Tensor::zeros(&[2, 3], DType::F32)),
        Err(Error::DType { .. })
    ));
    assert_eq!(tape.len(), len, "a failed op records nothing");
    // A failure after the half-precision upcast was recorded leaves a dangling node; it must not matter.
    let h = tape.watch(&x.to_dtype(DType::BF16).unwrap());
    assert!(h.add(&Tensor::zeros(&[4], DType::BF16)).is_err());
    let loss = y.mul(&tx).unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap();
    // d/dx Σ x eˣ = (1 + x) eˣ.
    let expected: Vec<f64> = x.to_f64_vec().iter().map(|v| (1.0 + v) * v.exp()).collect();
    assert_close(&grad_of(&g, &tx), &expected, 1e-14);
    assert!(g.get(&h).is_none());
}

/// Records on a fresh tape a loss over `x` whose nodes save handles to `x`'s buffer: mul saves x (twice), a
/// dead branch that never reaches the loss saves x, and an op recorded after the loss saves x. Returns the
/// tape, the loss and that later output; the watched handle itself is dropped.
fn record_sharing(x: &Tensor) -> (Tape, Tensor, Tensor) {
    let tape = Tape::new();
    let tx = tape.watch(x);
    let y = tx
        .mul(&tx)
        .unwrap()
        .add_scalar(1.0)
        .unwrap()
        .sqrt()
        .unwrap();
    let _dead = tx.mul(&tx.scale(2.0).unwrap()).unwrap();
    let loss = y.sum_all().unwrap();
    let after_loss = tx.mul(&tx).unwrap();
    (tape, loss, after_loss)
}

fn buffer(x: &Tensor) -> *const u8 {
    x.as_bytes().unwrap().as_ptr()
}

#[test]
fn saved_tensors_are_released_by_backward() {
    // Copy-on-write makes sharing observable: `data_mut` keeps a buffer in place only when no other handle to
    // it is alive, and copies it otherwise.
    let mut x = values(&[128, 96], -1.0, 1.0, 14);

    // Before backward the tape holds saved handles to x's buffer, so writing to x must copy it.
    let before = buffer(&x);
    let (tape, loss, after_loss) = record_sharing(&x);
    let written = x.data_mut::<f64>().unwrap().as_ptr() as *const u8;
    assert_ne!(written, before, "the tape should hold saved handles to x");
    drop((tape, loss, after_loss));

    // After backward nothing shares x's buffer, although the gradients, the loss, the output recorded after the
    // loss and the tape handle are all still alive: every saved tensor (used, dead or late) was dropped.
    let before = buffer(&x);
    let (tape, loss, after_loss) = record_sharing(&x);
    let grads = tape.backward(&loss).unwrap();
    assert_eq!(grads.len(), 1);
    assert!(tape.is_empty(), "backward leaves no node behind");
    let written = x.data_mut::<f64>().unwrap().as_ptr() as *const u8;
    assert_eq!(
        written, before,
        "x was copied: a saved handle survived backward"
    );
    assert!(after_loss.is_tracked() && loss.item().unwrap() > 0.0);
    drop(grads);
}

#[test]
fn gradients_through_views() {
    // x: [4, 6]; the loss sees it through a narrow, a transpose and a narrowed transpose.
    let x = values(&[4, 6], -1.0, 1.0, 15);
    let c1 = values(&[2, 6], -1.0, 1.0, 16);
    let c2 = values(&[6, 4], -1.0, 1.0, 17);
    let c3 = values(&[3, 4], -1.0, 1.0, 18);
    let tape = Tape::new();
    let tx = tape.watch(&x);
    let a = tx
        .narrow(0, 1, 2)
        .unwrap()
        .mul(&c1)
        .unwrap()
        .sum_all()
        .unwrap();
    let b = tx
        .transpose(0, 1)
        .unwrap()
        .mul(&c2)
        .unwrap()
        .sum_all()
        .unwrap();
    let c = tx
        .transpose(0, 1)
        .unwrap()
        .narrow(0, 2, 3)
        .unwrap()
        .mul(&c3)
        .unwrap()
        .sum_all()
        .unwrap();
    let loss = a.add(&b).unwrap().add(&c).unwrap();
    let g = tape.backward(&loss).unwrap();
    let (c1, c2, c3) = (c1.to_f64_vec(), c2.to_f64_vec(), c3.to_f64_vec());
    let mut expected = vec![0.0; 24];
    for i in 0..4 {
        for j in 0..6 {
            let mut e = c2[j * 4 + i];
            if (1..3).contains(&i) {
                e += c1[(i - 1) * 6 + j];
            }
            if (2..5).contains(&j) {
                e += c3[(j - 2) * 4 + i];
            }
            expected[i * 6 + j] = e;
        }
    }
    assert_close(&grad_of(&g, &tx), &expected, 1e-15);
}

#[test]
fn matmul_of_a_narrowed_view_with_a_unit_dim() {
    // lhs [B, 1, M, K] is a narrow along M of a [B, 1, M2, K] tensor: its batch stride is M2·K, not M·K, so
    // its batch and row dims must not be merged into one GEMM of B·M rows. The forward and both gradients must
    // match the same product on a contiguous copy.
    let (b, m2, m, k, n) = (3, 5, 2, 4, 3);
    let base = values(&[b, 1, m2, k], -1.0, 1.0, 19);
    let w = values(&[k, n], -1.0, 1.0, 20);
    let seed = values(&[b, 1, m, n], -1.0, 1.0, 21);
    let run = |copy: bool| {
        let tape = Tape::new();
        let (tb, tw) = (tape.watch(&base), tape.watch(&w));
        let mut lhs = tb.narrow(2, 1, m).unwrap();
        if copy {
            lhs = lhs.contiguous().unwrap();
        }
        let y = lhs.matmul(&tw).unwrap();
        let g = tape.backward_with_seed(&y, seed.clone()).unwrap();
        (y.to_f64_vec(), grad_of(&g, &tb), grad_of(&g, &tw))
    };
    let (view, copy) = (run(false), run(true));
    assert_close(&view.0, &copy.0, 1e-14);
    assert_close(&view.1, &copy.1, 1e-14);
    assert_close(&view.2, &copy.2, 1e-14);
}

#[test]
fn dtype_mismatch_is_a_dtype_error() {
    let tape = Tape::new();
    let a = tape.watch(&Tensor::ones(&[2, 2], DType::F32));
    let b = tape.watch(&Tensor::ones(&[2, 2], DType::F64));
    let len = tape.len();
    for (name, result) in [
        ("add", a.add(&b)),
        ("mul", b.mul(&a)),
        ("matmul", a.matmul(&b)),
        ("swiglu", a.swiglu(&b)),
    ] {
        let e = expect_err(result, "mixed dtypes");
        assert!(
            matches!(&e, Error::DType { op, .. } if *op == name),
            "{e:?}"
        );
    }
    assert_eq!(tape.len(), len);
    // After an explicit cast the gradient flows back in each leaf's own dtype.
    let loss = a
        .to_dtype(DType::F64)
        .unwrap()
        .mul(&b)
        .unwrap()
        .sum_all()
        .unwrap();
    let g = tape.backward(&loss).unwrap();
    assert_eq!(g.get(&a).unwrap().dtype(), DType::F32);
    assert_eq!(g.get(&b).unwrap().dtype(), DType::F64);
    assert_eq!(grad_of(&g, &a), vec![1.0; 4]);
}

#[test]
fn tapes_and_tensors_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tape>();
    assert_send_sync::<Tensor>();
    // Ops recorded from another thread land on the same tape.
    let x = values(&[3], 0.5, 1.5, 22);
    let tape = Tape::new();
    let tx = tape.watch(&x);
    let y = std::thread::scope(|s| s.spawn(|| tx.log().unwrap()).join().unwrap());
    assert!(y.is_tracked());
    let g = tape.backward(&y.sum_all().unwrap()).unwrap();
    let expected: Vec<f64> = x.to_f64_vec().iter().map(|v| 1.0 / v).collect();
    assert_close(&grad_of(&g, &tx), &expected, 1e-15);
}

#[test]
fn a_tape_dropped_without_backward_releases_what_it_holds() {
    // A checkpoint region's closure holds tracked tensors; the tape must not be kept alive through them. Each
    // round drops the tape, the loss and every tracked handle without a backward, then writes to x: in place
    // only if nothing else shares its buffer any more.
    let mut x = values(&[64, 48], -1.0, 1.0, 15);
    for region in [false, true] {
        let before = buffer(&x);
        let tape = Tape::new();
        let tx = tape.watch(&x);
        let inner = tx.clone();
        let f = move || inner.mul(&inner)?.add_scalar(1.0)?.sqrt();
        let y = if region {
            tapegrad::checkpoint(f)
        } else {
            let f = f;
            f()
        }
        .unwrap();
        let loss = y.sum_all().unwrap();
        assert!(loss.is_tracked());
        drop(tape);
        // With its tape gone, a tracked tensor records nothing more.
        assert!(!tx.mul(&tx).unwrap().is_tracked(), "region: {region}");
        drop((tx, y, loss));
        let written = x.data_mut::<f64>().unwrap().as_ptr() as *const u8;
        assert_eq!(
            written, before,
            "region: {region}: x was copied, so the dropped tape still holds it"
        );
    }
}
