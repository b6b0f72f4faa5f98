//! The CPU twins of the GPU kernels against straightforward f64 references.
//!
//! Inputs are rounded to bf16 before both the twin and the reference see them, so the comparison measures only
//! the kernels' own rounding. Tolerances are in units of u = 2^-8 (bf16 unit roundoff, 8 significand bits),
//! relative to the largest reference magnitude of each tensor (observed errors in brackets):
//! - attention O: P rounded to bf16 before PV (random, mostly averaging out) plus the bf16 output (<= u):
//!   bound 2.5u ~ 0.01 [0.0023 - 0.0028].
//! - attention dQ, dK, dV: P and dS each rounded once, O rounded to bf16 before delta = rowsum(dO o O) (amplified
//!   a little by the cancellation in dP - delta), the bf16 output: bound 5u ~ 0.02 [0.0025 - 0.0065].
//! - attention lse: f32 throughout (P summed before rounding): 2e-4 absolute.
//! - rmsnorm / swiglu in f32: a few f32 ulps: 1e-5 [< 3e-7]; in bf16: the output rounding (<= u relative to the
//!   element) plus f32 noise: 1.25u ~ 0.0049 [<= 0.0032].

use tapegrad::backend::twin::attention::{self, Grads, Input, Layout, Output, Qkv, Shape};
use tapegrad::backend::twin::rmsnorm::{self, Precision};
use tapegrad::backend::twin::swiglu;

const U: f64 = 1.0 / 256.0;

/// Deterministic uniform values in [-amp, amp) (64-bit LCG, upper bits).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, amp: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
    }
    fn bf16_vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n)
            .map(|_| half::bf16::from_f32(self.next(amp)).to_f32())
            .collect()
    }
}

/// max |got - want| / max |want|, asserted to be at most `tol`.
fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-30);
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (&g, &w)| m.max((g as f64 - w).abs()));
    assert!(
        got.iter().all(|g| g.is_finite()),
        "{what}: non-finite output"
    );
    assert!(
        err / scale <= tol,
        "{what}: max error {err:.3e} = {:.3e} of max |ref| {scale:.3e} > {tol:.1e}",
        err / scale
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------------------------

/// Buffers of one attention case: dense [B, T, H, D] tensors, except that k and v may have `extra` rows of NaN
/// after kv_len (a cache with spare capacity), which neither pass may read.
struct Case {
    shape: Shape,
    scale: f32,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    d_o: Vec<f32>,
    kv_layout: Layout,
}

impl Case {
    fn new(
        batch: usize,
        heads: usize,
        kv_heads: usize,
        q_len: usize,
        kv_len: usize,
        head_dim: usize,
        extra: usize,
    ) -> Case {
        let shape = Shape {
            batch,
            heads,
            kv_heads,
            q_len,
            kv_len,
            head_dim,
        };
        let mut rng = Lcg(0x5eed ^ (q_len * 1000 + kv_len * 7 + head_dim + heads * 13) as u64);
        let kv_cap = kv_len + extra;
        let kv_layout = Layout::contiguous(kv_cap, kv_heads, head_dim);
        let nan_tail = |mut x: Vec<f32>| {
            for b in 0..batch {
                let start = b * kv_layout.stride_b + kv_len * kv_layout.stride_t;
                x[start..(b + 1) * kv_layout.stride_b].fill(f32::NAN);
            }
            x
        };
        Case {
            shape,
            scale: 1.0 / (head_dim as f32).sqrt(),
            q: rng.bf16_vec(batch * q_len * heads * head_dim, 2.0),
            k: nan_tail(rng.bf16_vec(batch * kv_cap * kv_heads * head_dim, 2.0)),
            v: nan_tail(rng.bf16_vec(batch * kv_cap * kv_heads * head_dim, 1.0)),
            d_o: rng.bf16_vec(batch * q_len * heads * head_dim, 1.0),
            kv_layout,
        }
    }

    fn q_layout(&self) -> Layout {
        Layout::contiguous(self.shape.q_len, self.shape.heads, self.shape.head_dim)
    }

    fn qkv(&self) -> Qkv<'_> {
        Qkv {
            q: Input {
                data: &self.q,
                layout: self.q_layout(),
            },
            k: Input {
                data: &self.k,
                layout: self.kv_layout,
            },
            v: Input {
                data: &self.v,
                layout: self.kv_layout,
            },
        }
    }
}

/// f64 reference: O, lse, dQ, dK, dV (dense [B, T, H, D] / [B, H, Tq]).
struct Reference {
    o: Vec<f64>,
    lse: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
}

fn reference(c: &Case) -> Reference {
    let s = c.shape;
    let (d, group, offset) = (s.head_dim, s.heads / s.kv_heads, s.kv_len - s.q_len);
    let ql = c.q_layout();
    let kl = c.kv_layout;
    let kv_dense = Layout::contiguous(s.kv_len, s.kv_heads, d);
    let row = |x: &[f32], l: Layout, b, t, h| -> Vec<f64> {
        let o = b * l.stride_b + t * l.stride_t + h * l.stride_h;
        x[o..o + d].iter().map(|&v| v as f64).collect()
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut r = Reference {
        o: vec![0.0; c.q.len()],
        lse: vec![0.0; s.batch * s.heads * s.q_len],
        dq: vec![0.0; c.q.len()],
        dk: vec![0.0; s.batch * s.kv_len * s.kv_heads * d],
        dv: vec![0.0; s.batch * s.kv_len * s.kv_heads * d],
    };
    for b in 0..s.batch {
        for h in 0..s.heads {
            let g = h / group;
            for i in 0..s.q_len {
                let q = row(&c.q, ql, b, i, h);
                let keys = 0..=i + offset;
                let scores: Vec<f64> = keys
                    .clone()
                    .map(|j| c.scale as f64 * dot(&q, &row(&c.k, kl, b, j, g)))
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                let p: Vec<f64> = scores.iter().map(|x| (x - max).exp() / sum).collect();
                r.lse[(b * s.heads + h) * s.q_len + i] = max + sum.ln();
                let base = b * ql.stride_b + i * ql.stride_t + h * ql.stride_h;
                let mut o = vec![0.0; d];
                for (jj, j) in keys.clone().enumerate() {
                    for (oo, vv) in o.iter_mut().zip(row(&c.v, kl, b, j, g)) {
                        *oo += p[jj] * vv;
                    }
                }
                r.o[base..base + d].copy_from_slice(&o);
                let g_o = row(&c.d_o, ql, b, i, h);
                let delta = dot(&g_o, &o);
                for (jj, j) in keys.enumerate() {
                    let kj = row(&c.k, kl, b, j, g);
                    let ds = p[jj] * (dot(&g_o, &row(&c.v, kl, b, j, g)) - delta);
                    let kv = b * kv_dense.stride_b + j * kv_dense.stride_t + g * kv_dense.stride_h;
                    for e in 0..d {
                        r.dq[base + e] += c.scale as f64 * ds * kj[e];
                        r.dk[kv + e] += c.scale as f64 * ds * q[e];
                        r.dv[kv + e] += p[jj] * g_o[e];
                    }
                }
            }
        }
    }
    r
}

/// Runs the twin forward and backward; gradients of k and v come back dense [B, Tk, H_kv, D].
struct TwinResult {
    o: Vec<f32>,
    lse: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

fn run_twin(c: &Case) -> TwinResult {
    let s = c.shape;
    let ql = c.q_layout();
    let kv_dense = Layout::contiguous(s.kv_len, s.kv_heads, s.head_dim);
    let mut o = vec![0.0f32; c.q.len()];
    let mut lse = vec![0.0f32; s.batch * s.heads * s.q_len];
    attention::forward(
        &s,
        c.scale,
        &c.qkv(),
        Output {
            data: &mut o,
            layout: ql,
        },
        &mut lse,
    );
    let mut dq = vec![0.0f32; c.q.len()];
    let mut dk = vec![0.0f32; s.batch * s.kv_len * s.kv_heads * s.head_dim];
    let mut dv = dk.clone();
    attention::backward(
        &s,
        c.scale,
        &c.qkv(),
        Input {
            data: &o,
            layout: ql,
        },
        Input {
            data: &c.d_o,
            layout: ql,
        },
        &lse,
        Grads {
            dq: Output {
                data: &mut dq,
                layout: ql,
            },
            dk: Output {
                data: &mut dk,
                layout: kv_dense,
            },
            dv: Output {
                data: &mut dv,
                layout: kv_dense,
            },
        },
    );
    TwinResult { o, lse, dq, dk, dv }
}

fn check_attention(c: &Case) {
    let s = c.shape;
    let name = format!(
        "B{} H{}/{} Tq{} Tk{} D{}",
        s.batch, s.heads, s.kv_heads, s.q_len, s.kv_len, s.head_dim
    );
    let (t, r) = (run_twin(c), reference(c));
    assert_close(&format!("{name} O"), &t.o, &r.o, 2.5 * U);
    let lse_err = t
        .lse
        .iter()
        .zip(&r.lse)
        .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
    assert!(lse_err <= 2e-4, "{name} lse: max abs error {lse_err:.3e}");
    assert_close(&format!("{name} dQ"), &t.dq, &r.dq, 5.0 * U);
    assert_close(&format!("{name} dK"), &t.dk, &r.dk, 5.0 * U);
    assert_close(&format!("{name} dV"), &t.dv, &r.dv, 5.0 * U);
}

#[test]
fn attention_exact_tiles_d64() {
    check_attention(&Case::new(1, 2, 2, 128, 128, 64, 0));
}

#[test]
fn attention_tails_and_gqa_d64() {
    check_attention(&Case::new(2, 4, 2, 100, 100, 64, 0));
}

#[test]
fn attention_queries_behind_keys_mqa_d128() {
    // Tq < Tk (a cached prefix of 93 keys), one kv head for four query heads, NaN capacity past kv_len.
    check_attention(&Case::new(1, 4, 1, 37, 130, 128, 11));
}

#[test]
fn attention_small_head_dims_d32_and_d16() {
    // The `small` (D = 32) and `tiny` (D = 16) presets' head dims, with tails and grouped heads.
    check_attention(&Case::new(2, 8, 4, 100, 100, 32, 0));
    check_attention(&Case::new(1, 4, 2, 37, 70, 16, 2));
}

#[test]
fn attention_single_query_d64() {
    check_attention(&Case::new(1, 2, 2, 1, 70, 64, 5));
}

#[test]
fn attention_long_tails_gqa_d128() {
    check_attention(&Case::new(1, 4, 2, 131, 131, 128, 0));
}

#[test]
fn attention_many_key_tiles_d64() {
    check_attention(&Case::new(1, 8, 2, 65, 200, 64, 3));
}

#[test]
fn attention_accepts_strided_views() {
    // q, k, v as column slices of one packed [B, T, (H + 2 H_kv) * D] projection output.
    let (batch, heads, kv_heads, len, d) = (2, 4, 2, 70, 64);
    let c = Case::new(batch, heads, kv_heads, len, len, d, 0);
    let width = (heads + 2 * kv_heads) * d;
    let mut packed = vec![0.0f32; batch * len * width];
    let (ql, kl) = (c.q_layout(), c.kv_layout);
    for b in 0..batch {
        for t in 0..len {
            let dst = (b * len + t) * width;
            let q_src = b * ql.stride_b + t * ql.stride_t;
            packed[dst..dst + heads * d].copy_from_slice(&c.q[q_src..q_src + heads * d]);
            let kv_src = b * kl.stride_b + t * kl.stride_t;
            packed[dst + heads * d..dst + (heads + kv_heads) * d]
                .copy_from_slice(&c.k[kv_src..kv_src + kv_heads * d]);
            packed[dst + (heads + kv_heads) * d..dst + width]
                .copy_from_slice(&c.v[kv_src..kv_src + kv_heads * d]);
        }
    }
    let view = |offset: usize| Input {
        data: &packed[offset..],
        layout: Layout {
            stride_b: len * width,
            stride_t: width,
            stride_h: d,
        },
    };
    let qkv = Qkv {
        q: view(0),
        k: view(heads * d),
        v: view((heads + kv_heads) * d),
    };
    let mut o = vec![0.0f32; c.q.len()];
    let mut lse = vec![0.0f32; batch * heads * len];
    attention::forward(
        &c.shape,
        c.scale,
        &qkv,
        Output {
            data: &mut o,
            layout: ql,
        },
        &mut lse,
    );
    let dense = run_twin(&c);
    assert_eq!(
        o, dense.o,
        "a strided view must give bitwise the dense result"
    );
    assert_eq!(lse, dense.lse);
}

#[test]
fn attention_future_keys_do_not_leak() {
    // Changing key/value j must leave bitwise unchanged every query that cannot see it (j > i + Tk - Tq).
    let mut c = Case::new(1, 2, 1, 90, 120, 64, 0);
    let before = run_twin(&c).o;
    let j = 100; // visible to queries i >= 70
    for h in 0..c.shape.kv_heads {
        let o = j * c.kv_layout.stride_t + h * c.kv_layout.stride_h;
        for e in 0..c.shape.head_dim {
            c.k[o + e] = 3.0;
            c.v[o + e] = -5.0;
        }
    }
    let after = run_twin(&c).o;
    let ql = c.q_layout();
    for i in 0..c.shape.q_len {
        for h in 0..c.shape.heads {
            let o = i * ql.stride_t + h * ql.stride_h;
            let same = before[o..o + c.shape.head_dim] == after[o..o + c.shape.head_dim];
            assert_eq!(same, i + 30 < j, "query {i} head {h}");
        }
    }
}

#[test]
fn attention_delta_is_rowsum_of_do_times_o() {
    let c = Case::new(1, 3, 3, 45, 45, 128, 0);
    let s = c.shape;
    let ql = c.q_layout();
    let mut rng = Lcg(7);
    let o = rng.bf16_vec(c.q.len(), 1.0);
    let mut delta = vec![0.0f32; s.heads * s.q_len];
    attention::backward_dot(
        &s,
        Input {
            data: &o,
            layout: ql,
        },
        Input {
            data: &c.d_o,
            layout: ql,
        },
        &mut delta,
    );
    let want: Vec<f64> = (0..s.heads * s.q_len)
        .map(|r| {
            let (h, i) = (r / s.q_len, r % s.q_len);
            let base = i * ql.stride_t + h * ql.stride_h;
            (0..s.head_dim)
                .map(|e| o[base + e] as f64 * c.d_o[base + e] as f64)
                .sum()
        })
        .collect();
    assert_close("delta", &delta, &want, 1e-5);
}

// ---------------------------------------------------------------------------------------------------------------
// RMSNorm
// ---------------------------------------------------------------------------------------------------------------

fn check_rmsnorm(rows: usize, cols: usize, storage: Precision, threads: usize, num_blocks: usize) {
    let eps = 1e-5f32;
    let mut rng = Lcg((rows * 31 + cols) as u64);
    let round = |v: Vec<f32>| -> Vec<f32> {
        match storage {
            Precision::F32 => v,
            Precision::Bf16 => v
                .into_iter()
                .map(|x| half::bf16::from_f32(x).to_f32())
                .collect(),
        }
    };
    let x = round((0..rows * cols).map(|_| rng.next(2.0)).collect());
    let w = round((0..cols).map(|_| 1.0 + rng.next(0.5)).collect());
    let dy = round((0..rows * cols).map(|_| rng.next(1.0)).collect());

    let mut y = vec![0.0f32; rows * cols];
    let mut rstd = vec![0.0f32; rows];
    rmsnorm::forward(&x, &w, &mut y, &mut rstd, rows, cols, eps, storage, threads);
    let mut dx = vec![0.0f32; rows * cols];
    let mut partial = vec![0.0f32; num_blocks * cols];
    rmsnorm::backward(
        &x,
        &w,
        &rstd,
        &dy,
        &mut dx,
        &mut partial,
        rows,
        cols,
        storage,
        threads,
        num_blocks,
    );
    let mut dw = vec![0.0f32; cols];
    rmsnorm::dw_reduce(&partial, &mut dw, num_blocks, cols, storage);

    let (mut y_ref, mut dx_ref, mut dw_ref, mut rstd_ref) = (
        vec![0.0f64; rows * cols],
        vec![0.0f64; rows * cols],
        vec![0.0f64; cols],
        vec![0.0f64; rows],
    );
    for r in 0..rows {
        let xr: Vec<f64> = x[r * cols..(r + 1) * cols]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let rs = 1.0 / (xr.iter().map(|v| v * v).sum::<f64>() / cols as f64 + eps as f64).sqrt();
        rstd_ref[r] = rs;
        let mean_wgx = (0..cols)
            .map(|c| w[c] as f64 * dy[r * cols + c] as f64 * xr[c])
            .sum::<f64>()
            / cols as f64;
        for c in 0..cols {
            let g = dy[r * cols + c] as f64;
            y_ref[r * cols + c] = xr[c] * rs * w[c] as f64;
            dx_ref[r * cols + c] = rs * (w[c] as f64 * g - xr[c] * rs * rs * mean_wgx);
            dw_ref[c] += g * xr[c] * rs;
        }
    }
    let tol = if storage == Precision::F32 {
        1e-5
    } else {
        1.25 * U
    };
    let name = format!("rmsnorm {rows}x{cols} {storage:?} threads {threads} blocks {num_blocks}");
    assert_close(&format!("{name} rstd"), &rstd, &rstd_ref, 1e-5);
    assert_close(&format!("{name} y"), &y, &y_ref, tol);
    assert_close(&format!("{name} dx"), &dx, &dx_ref, tol);
    assert_close(&format!("{name} dw"), &dw, &dw_ref, tol);
}

#[test]
fn rmsnorm_vectorised_rows() {
    check_rmsnorm(7, 256, Precision::F32, 64, 3);
    check_rmsnorm(7, 256, Precision::Bf16, 32, 3);
    check_rmsnorm(40, 4096, Precision::Bf16, 512, 6);
}

#[test]
fn rmsnorm_scalar_fallback_widths() {
    check_rmsnorm(5, 1000, Precision::Bf16, 128, 2); // 1000 % 8 != 0: element by element for bf16
    check_rmsnorm(33, 4099, Precision::F32, 1024, 4); // odd width
    check_rmsnorm(3, 12, Precision::F32, 32, 5); // more blocks than rows: empty partials
}

// ---------------------------------------------------------------------------------------------------------------
// SwiGLU
// ---------------------------------------------------------------------------------------------------------------

fn check_swiglu(n: usize, storage: Precision) {
    let mut rng = Lcg(n as u64);
    let round = |x: f32| {
        if storage == Precision::Bf16 {
            half::bf16::from_f32(x).to_f32()
        } else {
            x
        }
    };
    let a: Vec<f32> = (0..n).map(|_| round(rng.next(6.0))).collect();
    let b: Vec<f32> = (0..n).map(|_| round(rng.next(2.0))).collect();
    let dy: Vec<f32> = (0..n).map(|_| round(rng.next(1.0))).collect();
    let (mut y, mut da, mut db) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    swiglu::forward(&a, &b, &mut y, storage);
    swiglu::backward(&a, &b, &dy, &mut da, &mut db, storage);
    let sig = |a: f64| 1.0 / (1.0 + (-a).exp());
    let y_ref: Vec<f64> = (0..n)
        .map(|i| a[i] as f64 * sig(a[i] as f64) * b[i] as f64)
        .collect();
    let da_ref: Vec<f64> = (0..n)
        .map(|i| {
            let (a, s) = (a[i] as f64, sig(a[i] as f64));
            dy[i] as f64 * b[i] as f64 * s * (1.0 + a * (1.0 - s))
        })
        .collect();
    let db_ref: Vec<f64> = (0..n)
        .map(|i| dy[i] as f64 * a[i] as f64 * sig(a[i] as f64))
        .collect();
    let tol = if storage == Precision::F32 {
        1e-5
    } else {
        1.25 * U
    };
    assert_close(&format!("swiglu {n} {storage:?} y"), &y, &y_ref, tol);
    assert_close(&format!("swiglu {n} {storage:?} da"), &da, &da_ref, tol);
    assert_close(&format!("swiglu {n} {storage:?} db"), &db, &db_ref, tol);
}

#[test]
fn swiglu_matches_reference() {
    for n in [1, 7, 8, 4096, 10_003] {
        check_swiglu(n, Precision::F32);
        check_swiglu(n, Precision::Bf16);
    }
}
