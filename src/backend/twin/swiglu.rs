//! CPU twin of `kernels/swiglu.cu`: y = silu(a) * b and its gradients, elementwise in f32 with outputs rounded
//! to the storage type, in the kernels' operation order (s = 1 / (1 + exp(-a)); y = a * s * b;
//! da = dy * b * s * (1 + a * (1 - s)); db = dy * (a * s)). The kernels' vector/scalar split does not change any
//! value, so it is not modelled; `exp` may differ from CUDA's `expf` by an ulp.

pub use super::rmsnorm::Precision;

fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + (-a).exp())
}

/// Forward (`swiglu_fwd_{f32,bf16}`): y[i] = silu(a[i]) * b[i]; all slices the same length.
pub fn forward(a: &[f32], b: &[f32], y: &mut [f32], storage: Precision) {
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        *y = storage.round(a * sigmoid(a) * b);
    }
}

/// Backward (`swiglu_bwd_{f32,bf16}`): da and db from a, b and dy; all slices the same length.
pub fn backward(
    a: &[f32],
    b: &[f32],
    dy: &[f32],
    da: &mut [f32],
    db: &mut [f32],
    storage: Precision,
) {
    for i in 0..a.len() {
        let s = sigmoid(a[i]);
        da[i] = storage.round(dy[i] * b[i] * s * (1.0 + a[i] * (1.0 - s)));
        db[i] = storage.round(dy[i] * (a[i] * s));
    }
}
