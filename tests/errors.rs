//! Every documented error kind is returned where the docs promise it, as the right `Error` variant, with a
//! message that names the op and the operands' shapes (or dtypes, positions, ids). Each test matches the
//! variant (and its `op`) and checks the exact message text, so a changed kind or a vaguer message fails.

use tapegrad::ops::{attention_reference, rope_reference, Rope};
use tapegrad::{DType, Error, Tensor};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F64)
}

/// Unwraps the error of `result`, failing the test if it is `Ok`.
fn err<T>(result: tapegrad::Result<T>) -> Error {
    match result {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e,
    }
}

#[test]
fn matmul_incompatible_shapes() {
    let e = err(zeros(&[2, 3]).matmul(&zeros(&[4, 5])));
    assert!(matches!(e, Error::Shape { op: "matmul", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "matmul: lhs [2, 3] and rhs [4, 5] are not compatible"
    );

    // Batch dims that do not broadcast are reported the same way, with the full shapes.
    let e = err(zeros(&[2, 3, 4]).matmul(&zeros(&[3, 4, 5])));
    assert!(matches!(e, Error::Shape { op: "matmul", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "matmul: lhs [2, 3, 4] and rhs [3, 4, 5] are not compatible"
    );

    // A 1-D operand has no matrix dims.
    let e = err(zeros(&[3]).matmul(&zeros(&[3, 2])));
    assert!(matches!(e, Error::Shape { op: "matmul", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "matmul: lhs [3] and rhs [3, 2] are not compatible"
    );
}

#[test]
fn linear_incompatible_weight() {
    let e = err(zeros(&[2, 3]).linear(&zeros(&[4, 5])));
    assert!(matches!(e, Error::Shape { op: "linear", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "linear: input [2, 3] and weight [4, 5] are not compatible (weight is [out, in])"
    );
}

#[test]
fn binary_broadcast_failure_names_op_and_shapes() {
    let (a, b) = (zeros(&[2, 3]), zeros(&[4]));
    for (name, result) in [
        ("add", a.add(&b)),
        ("sub", a.sub(&b)),
        ("mul", a.mul(&b)),
        ("div", a.div(&b)),
    ] {
        let e = err(result);
        assert!(
            matches!(&e, Error::Shape { op, .. } if *op == name),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("{name}: shapes [2, 3] and [4] cannot be broadcast")
        );
    }
    let e = err(zeros(&[3, 1]).broadcast_to(&[3, 2, 5]));
    assert!(
        matches!(
            e,
            Error::Shape {
                op: "broadcast_to",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "broadcast_to: shapes [3, 1] and [3, 2, 5] cannot be broadcast"
    );
}

#[test]
fn dtype_mismatch_in_binary_op() {
    let a = Tensor::zeros(&[2], DType::F32);
    let b = Tensor::zeros(&[2], DType::F64);
    let e = err(a.add(&b));
    assert!(matches!(e, Error::DType { op: "add", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "add: operands are f32 and f64; cast one first"
    );
    let e = err(Tensor::zeros(&[3, 2], DType::F64).matmul(&Tensor::zeros(&[2, 4], DType::F32)));
    assert!(matches!(e, Error::DType { op: "matmul", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "matmul: operands are f64 and f32; cast one first"
    );
}

#[test]
fn reshape_with_wrong_numel() {
    let e = err(zeros(&[2, 3]).reshape(&[4, 2]));
    assert!(matches!(e, Error::Shape { op: "reshape", .. }), "{e:?}");
    assert_eq!(e.to_string(), "reshape: cannot reshape [2, 3] into [4, 2]");
}

#[test]
fn permute_with_bad_permutation() {
    let x = zeros(&[2, 3]);
    for dims in [&[0, 0][..], &[0][..], &[0, 2][..], &[0, 1, 2][..]] {
        let e = err(x.permute(dims));
        assert!(matches!(e, Error::Shape { op: "permute", .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("permute: {dims:?} is not a permutation of the dims of [2, 3]")
        );
    }
}

#[test]
fn axis_out_of_range_is_an_index_error() {
    let x = zeros(&[2, 3]);
    let e = err(x.transpose(0, 2));
    assert!(
        matches!(
            e,
            Error::Index {
                op: "transpose",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "transpose: axis 2 is out of range for 2 dims"
    );
    let e = err(x.sum(&[-3], false));
    assert!(matches!(e, Error::Index { op: "sum", .. }), "{e:?}");
    assert_eq!(e.to_string(), "sum: axis -3 is out of range for 2 dims");
    let e = err(x.sum(&[1, -1], false));
    assert!(matches!(e, Error::Index { op: "sum", .. }), "{e:?}");
    assert_eq!(e.to_string(), "sum: axis 1 is given twice");
}

#[test]
fn narrow_out_of_range() {
    let e = err(zeros(&[2, 4]).narrow(1, 2, 3));
    assert!(matches!(e, Error::Index { op: "narrow", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "narrow: range 2..5 is out of bounds for dim 1 of [2, 4]"
    );
    let e = err(zeros(&[2, 4]).narrow(2, 0, 1));
    assert!(matches!(e, Error::Index { op: "narrow", .. }), "{e:?}");
    assert_eq!(e.to_string(), "narrow: axis 2 is out of range for 2 dims");
}

#[test]
fn squeeze_and_cat_shape_errors() {
    let e = err(zeros(&[2, 3]).squeeze(0));
    assert!(matches!(e, Error::Shape { op: "squeeze", .. }), "{e:?}");
    assert_eq!(e.to_string(), "squeeze: dim 0 of [2, 3] is not of size 1");
    let e = err(Tensor::cat(&[zeros(&[2, 3]), zeros(&[3, 3])], 1));
    assert!(matches!(e, Error::Shape { op: "cat", .. }), "{e:?}");
    assert_eq!(e.to_string(), "cat: [2, 3] and [3, 3] differ outside dim 1");
    let e = err(Tensor::cat(&[], 0));
    assert!(matches!(e, Error::Shape { op: "cat", .. }), "{e:?}");
    assert_eq!(e.to_string(), "cat: no tensors given");
}

#[test]
fn embedding_id_out_of_range() {
    let w = zeros(&[5, 3]);
    let e = err(w.embedding(&[0, 7, 1], &[3]));
    assert!(
        matches!(
            e,
            Error::Index {
                op: "embedding",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "embedding: id 7 is out of range for a vocabulary of 5"
    );
    let e = err(w.embedding(&[0, 1, 2], &[2, 2]));
    assert!(
        matches!(
            e,
            Error::Shape {
                op: "embedding",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "embedding: weight [5, 3] must be [V, C] and 3 ids must fill shape [2, 2]"
    );
}

#[test]
fn cross_entropy_target_out_of_range() {
    let logits = zeros(&[3, 5]);
    let e = err(logits.cross_entropy(&[0, 5, 1], None));
    assert!(
        matches!(
            e,
            Error::Index {
                op: "cross_entropy",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "cross_entropy: target 5 is out of range for 5 classes"
    );
    // The reference checks the same way.
    let e = err(tapegrad::ops::cross_entropy_reference(
        &logits,
        &[0, 9, 1],
        None,
    ));
    assert!(
        matches!(
            e,
            Error::Index {
                op: "cross_entropy",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "cross_entropy: target 9 is out of range for 5 classes"
    );
    // An out-of-range id equal to the ignore index is fine.
    assert!(logits.cross_entropy(&[0, 99, 1], Some(99)).is_ok());
    let e = err(logits.cross_entropy(&[0, 1], None));
    assert!(
        matches!(
            e,
            Error::Shape {
                op: "cross_entropy",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "cross_entropy: logits [3, 5] hold 3 rows but 2 targets were given"
    );
}

#[test]
fn linear_cross_entropy_names_shapes_and_targets() {
    let x = Tensor::zeros(&[3, 4], DType::F32);
    let w = Tensor::zeros(&[5, 4], DType::F32);
    let e = err(x.linear_cross_entropy(&Tensor::zeros(&[5, 3], DType::F32), &[0, 1, 2], None));
    assert_eq!(
        e.to_string(),
        "linear_cross_entropy: input [3, 4] and weight [5, 3] are not compatible (weight is [vocab, in])"
    );
    let e = err(x.linear_cross_entropy(&w, &[0, 1], None));
    assert_eq!(
        e.to_string(),
        "linear_cross_entropy: input [3, 4] holds 3 rows but 2 targets were given"
    );
    let e = err(x.linear_cross_entropy(&w, &[0, 5, 1], None));
    assert_eq!(
        e.to_string(),
        "linear_cross_entropy: target 5 is out of range for 5 classes"
    );
    assert!(x.linear_cross_entropy(&w, &[0, 5, 1], Some(5)).is_ok());
}

#[test]
fn rms_norm_weight_mismatch() {
    let e = err(zeros(&[2, 3]).rms_norm(&zeros(&[4]), 1e-6));
    assert!(matches!(e, Error::Shape { op: "rms_norm", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "rms_norm: input [2, 3] and weight [4] are not compatible"
    );
}

#[test]
fn swiglu_shape_mismatch() {
    let e = err(zeros(&[2, 3]).swiglu(&zeros(&[3, 2])));
    assert!(matches!(e, Error::Shape { op: "swiglu", .. }), "{e:?}");
    assert_eq!(e.to_string(), "swiglu: gate [2, 3] and up [3, 2] differ");
}

#[test]
fn attention_with_bad_shapes() {
    let expected = |q: &[usize], k: &[usize], v: &[usize]| {
        format!(
            "attention: q {q:?}, k {k:?}, v {v:?} are not [B, H, Tq, D], [B, Hkv, Tk, D] x2 with Hkv dividing H and Tk >= Tq"
        )
    };
    let cases: [(&[usize], &[usize], &[usize]); 6] = [
        // Hkv does not divide H.
        (&[1, 3, 4, 8], &[1, 2, 4, 8], &[1, 2, 4, 8]),
        // Head dims differ.
        (&[1, 2, 4, 8], &[1, 1, 4, 4], &[1, 1, 4, 4]),
        // Fewer keys than queries.
        (&[1, 2, 4, 8], &[1, 1, 3, 8], &[1, 1, 3, 8]),
        // k and v differ.
        (&[1, 2, 4, 8], &[1, 1, 4, 8], &[1, 1, 5, 8]),
        // Batch sizes differ.
        (&[2, 2, 4, 8], &[1, 1, 4, 8], &[1, 1, 4, 8]),
        // Not 4-D.
        (&[2, 4, 8], &[2, 4, 8], &[2, 4, 8]),
    ];
    for (q, k, v) in cases {
        let (tq, tk, tv) = (zeros(q), zeros(k), zeros(v));
        let e = err(tq.attention(&tk, &tv));
        assert!(
            matches!(
                e,
                Error::Shape {
                    op: "attention",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), expected(q, k, v));
        let e = err(attention_reference(&tq, &tk, &tv));
        assert_eq!(e.to_string(), expected(q, k, v));
    }
}

#[test]
fn to_vec_with_wrong_dtype() {
    let x = Tensor::zeros(&[2], DType::F32);
    let e = err(x.to_vec::<f64>());
    assert!(matches!(e, Error::DType { op: "to_vec", .. }), "{e:?}");
    assert_eq!(e.to_string(), "to_vec: tensor is f32 but f64 was asked for");
    assert_eq!(x.to_vec::<f32>().unwrap(), vec![0.0f32; 2]);
    let mut y = Tensor::zeros(&[2], DType::F64);
    let e = err(y.data_mut::<f32>().map(|_| ()));
    assert!(matches!(e, Error::DType { op: "data_mut", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "data_mut: tensor is f64 but f32 was asked for"
    );
}

#[test]
fn data_mut_on_a_view() {
    let mut v = zeros(&[4, 2]).narrow(0, 1, 2).unwrap();
    let e = err(v.data_mut::<f64>().map(|_| ()));
    assert!(matches!(e, Error::Shape { op: "data_mut", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "data_mut: tensor of shape [2, 2] is a view, not a whole buffer"
    );
}

#[test]
fn item_on_a_non_scalar() {
    let e = err(zeros(&[2]).item());
    assert!(matches!(e, Error::Shape { op: "item", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "item: tensor of shape [2] is not a single value"
    );
    assert_eq!(zeros(&[1, 1]).item().unwrap(), 0.0);
}

#[test]
fn from_vec_with_wrong_length() {
    let e = err(Tensor::from_vec(vec![1.0f32; 5], &[2, 3]));
    assert!(matches!(e, Error::Shape { op: "from_vec", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "from_vec: 5 elements cannot have shape [2, 3]"
    );
    let e = err(Tensor::from_slice(&[1.0f64; 2], &[]));
    assert!(matches!(e, Error::Shape { op: "from_vec", .. }), "{e:?}");
    assert_eq!(e.to_string(), "from_vec: 2 elements cannot have shape []");
}

#[test]
fn rope_beyond_table_length() {
    let rope = Rope::new(4, 8, 10000.0).unwrap();
    let x = zeros(&[1, 5, 2, 4]);
    let e = err(x.rope(&rope, 4));
    assert!(matches!(e, Error::Index { op: "rope", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "rope: positions up to 9 exceed the table length 8"
    );
    let e = err(rope_reference(&x, &rope, 4));
    assert!(matches!(e, Error::Index { op: "rope", .. }), "{e:?}");
    // Exactly filling the table is fine.
    assert!(x.rope(&rope, 3).is_ok());
    let e = err(zeros(&[1, 5, 2, 6]).rope(&rope, 0));
    assert!(matches!(e, Error::Shape { op: "rope", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "rope: input [1, 5, 2, 6] is not [B, T, H, 4]"
    );
}

#[test]
fn rope_new_with_odd_head_dim() {
    let e = err(Rope::new(5, 8, 10000.0));
    assert!(
        matches!(&e, Error::Invalid { what, .. } if what == "rope"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "rope: head_dim 5 must be even and positive and theta 10000 positive"
    );
    assert!(matches!(
        Rope::new(0, 8, 10000.0),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(Rope::new(4, 8, -1.0), Err(Error::Invalid { .. })));
}

#[test]
fn max_over_an_empty_axis() {
    let e = err(zeros(&[2, 0]).max(&[1], false));
    assert!(matches!(e, Error::Shape { op: "max", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "max: cannot take the max over an empty axis of [2, 0]"
    );
}

#[test]
fn softmax_of_a_scalar() {
    let e = err(Tensor::scalar(1.0, DType::F64).softmax());
    assert!(matches!(e, Error::Shape { op: "softmax", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "softmax: input [] has no last axis to normalize"
    );
}
