//! CPU twin of `kernels/attention.cu`: causal flash attention (FlashAttention-2 shape), bf16 storage, f32 math.
//!
//! The twin keeps the kernels' algorithm step for step so a device result can be checked against it and its
//! numerics reasoned about on a machine without a GPU:
//! - the same tiles (64 query rows x 64 keys; four warps of 16 rows, which the twin visits row by row since rows
//!   never interact), the same causal tile range (key tiles past the diagonal are never visited) and masking
//!   (query i sees key j iff j <= i + (Tk - Tq), key and query tails masked);
//! - the same online softmax: scores scaled by `scale * log2(e)`, running max per key tile, rescale factor
//!   `exp2(m_old - m_new)`, per-lane partial sums of P (lane t of a quad owns columns 8n + 2t, 8n + 2t + 1) summed
//!   across the quad at the end as `(l0 + l1) + (l2 + l3)`;
//! - bf16 rounding exactly where the kernels convert: Q, K, V, dO as stored (bf16), P before the PV / P^T dO
//!   products, dS before the dS^T Q / dS K products, O, dQ, dK, dV on output; everything else is f32;
//! - products accumulated in steps of 16 along the reduction dimension (one m16n8k16 per step), each step's 16
//!   products summed in order and then added to the accumulator;
//! - the backward pass in the kernels' four launches: `backward_dot` (delta = rowsum(dO o O), lane-partial sums and
//!   a butterfly warp sum), `backward_main` (one block per key tile and query head: dK, dV in f32 per query head,
//!   dQ added into an f32 buffer once per (key tile, query tile) as the atomics do), `backward_dq_convert` and
//!   `backward_dkv_reduce` (sum over the query heads of a kv head, in head order).
//!
//! Not modelled: the hardware's summation order inside one mma, FMA contraction chosen by the CUDA compiler,
//! the ulp-level difference between CUDA's `exp2f`/`log2f` and Rust's, and the order in which dQ atomics land.
//! The twin is therefore a faithful model of the algorithm and its rounding points, not a bitwise oracle.

use half::bf16;

/// Query rows per tile.
pub const BLOCK_M: usize = 64;
/// Keys per tile.
pub const BLOCK_N: usize = 64;
const K_STEP: usize = 16;
const LANES_PER_ROW: usize = 4;

/// Sizes of one attention call. Requirements (as for the kernels): `1 <= q_len <= kv_len`, `heads` a multiple
/// of `kv_heads`, `head_dim` 16, 32, 64 or 128.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
}

impl Shape {
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Query i sits at position i + (kv_len - q_len) and sees key j iff j is at or before it; tails are masked.
    fn visible(&self, i: usize, j: usize) -> bool {
        i < self.q_len && j < self.kv_len && j + self.q_len <= i + self.kv_len
    }

    fn check(&self) {
        assert!(
            self.q_len >= 1 && self.q_len <= self.kv_len,
            "need 1 <= q_len <= kv_len"
        );
        assert!(
            self.kv_heads >= 1 && self.heads.is_multiple_of(self.kv_heads),
            "heads must be a multiple of kv_heads"
        );
        assert!(
            matches!(self.head_dim, 16 | 32 | 64 | 128),
            "head_dim must be 16, 32, 64 or 128"
        );
    }
}

/// Element strides of a `[B, T, H, D]` view with D contiguous.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub stride_b: usize,
    pub stride_t: usize,
    pub stride_h: usize,
}

impl Layout {
    /// Dense `[B, T, H, D]`.
    pub fn contiguous(len: usize, heads: usize, head_dim: usize) -> Self {
        Layout {
            stride_b: len * heads * head_dim,
            stride_t: heads * head_dim,
            stride_h: head_dim,
        }
    }

    fn offset(&self, b: usize, t: usize, h: usize) -> usize {
        b * self.stride_b + t * self.stride_t + h * self.stride_h
    }
}

/// A read-only `[B, T, H, D]` view.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    pub data: &'a [f32],
    pub layout: Layout,
}

/// A writable `[B, T, H, D]` view.
pub struct Output<'a> {
    pub data: &'a mut [f32],
    pub layout: Layout,
}

/// The three attention inputs: q `[B, Tq, H, D]`, k and v `[B, Tk, H_kv, D]`.
#[derive(Clone, Copy)]
pub struct Qkv<'a> {
    pub q: Input<'a>,
    pub k: Input<'a>,
    pub v: Input<'a>,
}

/// The three gradients, shaped like the inputs.
pub struct Grads<'a> {
    pub dq: Output<'a>,
    pub dk: Output<'a>,
    pub dv: Output<'a>,
}

/// The f32 buffers the backward kernel accumulates into: `dq` `[B, H, Tq, D]`, `dk` and `dv` `[B, H, Tk, D]`
/// (one slice per query head; `dk` already multiplied by `scale`, `dq` not yet).
pub struct Accumulators {
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
}

fn round_bf16(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

/// `acc + sum_k f(k)` for k in `0..len` (a multiple of 16), the way a chain of m16n8k16 mmas accumulates:
/// each step of 16 products summed in order, then added to the accumulator.
fn mma_chain(len: usize, acc: f32, f: impl Fn(usize) -> f32) -> f32 {
    (0..len).step_by(K_STEP).fold(acc, |acc, k0| {
        acc + (k0..k0 + K_STEP).fold(0.0f32, |s, k| s + f(k))
    })
}

/// Rows [row0, row0 + 64) of head `h` of a view, rounded to bf16 (the kernels' storage type), as a dense
/// `64 x D` tile; rows at or beyond `rows_valid` are zero (the kernels' zero-filled cp.async).
fn load_tile(x: &Input, b: usize, h: usize, row0: usize, rows_valid: usize, d: usize) -> Vec<f32> {
    let mut tile = vec![0.0f32; BLOCK_M * d];
    for r in 0..BLOCK_M.min(rows_valid.saturating_sub(row0)) {
        let src = x.layout.offset(b, row0 + r, h);
        for (dst, &v) in tile[r * d..(r + 1) * d]
            .iter_mut()
            .zip(&x.data[src..src + d])
        {
            *dst = round_bf16(v);
        }
    }
    tile
}

/// Butterfly sum over 32 lanes (`tg::warp_sum`): every lane ends with the same value; lane 0's is returned.
fn warp_sum(mut lanes: [f32; 32]) -> f32 {
    for offset in [16, 8, 4, 2, 1] {
        let prev = lanes;
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = prev[i] + prev[i ^ offset];
        }
    }
    lanes[0]
}

// ------------------------------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------------------------------

/// Online-softmax state of one query row: running max `m` (log2 domain, scaled), the four lane-partial sums of P,
/// and the unnormalised output row.
struct RowState {
    m: f32,
    l: [f32; LANES_PER_ROW],
    o: Vec<f32>,
}

/// Lane (within its quad) that holds column `c` of an accumulator tile: columns 8n + 2t, 8n + 2t + 1 go to lane t.
fn lane_of_column(c: usize) -> usize {
    (c % 8) / 2
}

/// One key tile's update of one row (`online_softmax` + the PV mma chain of the kernel).
fn update_row(row: &mut RowState, scores: &[f32], v_tile: &[f32], d: usize) {
    let tile_max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let m_new = row.m.max(tile_max);
    let m_use = if m_new == f32::NEG_INFINITY {
        0.0
    } else {
        m_new
    };
    let alpha = (row.m - m_use).exp2();
    row.m = m_new;
    for l in &mut row.l {
        *l *= alpha;
    }
    let p: Vec<f32> = scores.iter().map(|&x| (x - m_use).exp2()).collect();
    for (c, &pc) in p.iter().enumerate() {
        // Column order 0..64 visits each lane's columns in the kernel's order (n ascending, then e).
        row.l[lane_of_column(c)] += pc;
    }
    let p_bf16: Vec<f32> = p.iter().map(|&x| round_bf16(x)).collect();
    for (dd, o) in row.o.iter_mut().enumerate() {
        *o = mma_chain(BLOCK_N, *o * alpha, |c| p_bf16[c] * v_tile[c * d + dd]);
    }
}

/// Scaled scores (log2 domain) of query-tile row `r` against a key tile, masked to -inf where the kernel masks.
#[allow(clippy::too_many_arguments)]
fn row_scores(
    shape: &Shape,
    q_tile: &[f32],
    k_tile: &[f32],
    r: usize,
    i: usize,
    n0: usize,
    needs_mask: bool,
    scale_log2: f32,
) -> Vec<f32> {
    let d = shape.head_dim;
    (0..BLOCK_N)
        .map(|c| {
            let s = mma_chain(d, 0.0, |dd| q_tile[r * d + dd] * k_tile[c * d + dd]);
            if needs_mask && !shape.visible(i, n0 + c) {
                f32::NEG_INFINITY
            } else {
                s * scale_log2
            }
        })
        .collect()
}

/// One forward block: query tile `m0` of head `h` in batch `b`.
#[allow(clippy::too_many_arguments)]
fn forward_block(
    shape: &Shape,
    scale: f32,
    qkv: &Qkv,
    b: usize,
    h: usize,
    m0: usize,
    o: &mut Output,
    lse: &mut [f32],
) {
    let d = shape.head_dim;
    let h_kv = h / shape.group();
    let offset = shape.kv_len - shape.q_len;
    let scale_log2 = scale * std::f32::consts::LOG2_E;
    let q_tile = load_tile(&qkv.q, b, h, m0, shape.q_len, d);
    let kv_end = shape.kv_len.min((m0 + BLOCK_M).min(shape.q_len) + offset);
    let mut rows: Vec<RowState> = (0..BLOCK_M)
        .map(|_| RowState {
            m: f32::NEG_INFINITY,
            l: [0.0; LANES_PER_ROW],
            o: vec![0.0; d],
        })
        .collect();

    for n0 in (0..kv_end).step_by(BLOCK_N) {
        let k_tile = load_tile(&qkv.k, b, h_kv, n0, shape.kv_len, d);
        let v_tile = load_tile(&qkv.v, b, h_kv, n0, shape.kv_len, d);
        let needs_mask = n0 + BLOCK_N > shape.kv_len || n0 + BLOCK_N - 1 > m0 + offset;
        for (r, row) in rows.iter_mut().enumerate() {
            let scores = row_scores(
                shape,
                &q_tile,
                &k_tile,
                r,
                m0 + r,
                n0,
                needs_mask,
                scale_log2,
            );
            update_row(row, &scores, &v_tile, d);
        }
    }

    let lse_rows = (b * shape.heads + h) * shape.q_len;
    for (r, row) in rows.iter().enumerate().take(shape.q_len.saturating_sub(m0)) {
        let i = m0 + r;
        let l = (row.l[0] + row.l[1]) + (row.l[2] + row.l[3]);
        let inv_l = 1.0 / l;
        let dst = o.layout.offset(b, i, h);
        for (out, &acc) in o.data[dst..dst + d].iter_mut().zip(&row.o) {
            *out = round_bf16(acc * inv_l);
        }
        lse[lse_rows + i] = (row.m + l.log2()) * std::f32::consts::LN_2;
    }
}

/// Forward pass (`attention_fwd_d{64,128}_bf16`): writes O (bf16-rounded, `[B, Tq, H, D]` view) and the
/// natural-log row logsumexp of the scaled scores, `lse` `[B, H, Tq]` contiguous.
pub fn forward(shape: &Shape, scale: f32, qkv: &Qkv, mut o: Output, lse: &mut [f32]) {
    shape.check();
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for m0 in (0..shape.q_len).step_by(BLOCK_M) {
                forward_block(shape, scale, qkv, b, h, m0, &mut o, lse);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// Backward
// ------------------------------------------------------------------------------------------------------------

/// `attention_bwd_dot_bf16`: delta `[B, H, Tq]` = rowsum(dO o O); lane l accumulates columns 2l, 2l + 1, 2l + 64,
/// ... with FMAs, then a butterfly warp sum.
pub fn backward_dot(shape: &Shape, o: Input, d_o: Input, delta: &mut [f32]) {
    let d = shape.head_dim;
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for i in 0..shape.q_len {
                let (po, pg) = (o.layout.offset(b, i, h), d_o.layout.offset(b, i, h));
                let mut lanes = [0.0f32; 32];
                for (lane, acc) in lanes.iter_mut().enumerate() {
                    for c in (2 * lane..d).step_by(64) {
                        for e in c..c + 2 {
                            *acc = round_bf16(d_o.data[pg + e])
                                .mul_add(round_bf16(o.data[po + e]), *acc);
                        }
                    }
                }
                delta[(b * shape.heads + h) * shape.q_len + i] = warp_sum(lanes);
            }
        }
    }
}

/// Per-query-tile inputs of the backward block, as staged in shared memory.
struct QueryTile {
    m0: usize,
    q: Vec<f32>,
    d_o: Vec<f32>,
    lse: Vec<f32>,
    delta: Vec<f32>,
}

/// One warp row of the backward block (key `kr` of the tile) against one query tile: P^T, dV, dP^T, dS^T, dK.
/// Returns the bf16 dS^T row that goes to shared memory for the dQ product.
#[allow(clippy::too_many_arguments)]
fn backward_key_row(
    shape: &Shape,
    scale_log2: f32,
    qt: &QueryTile,
    k_tile: &[f32],
    v_tile: &[f32],
    n0: usize,
    kr: usize,
    dk: &mut [f32],
    dv: &mut [f32],
) -> Vec<f32> {
    let d = shape.head_dim;
    let p: Vec<f32> = (0..BLOCK_M)
        .map(|c| {
            let s = mma_chain(d, 0.0, |dd| k_tile[kr * d + dd] * qt.q[c * d + dd]);
            let p = s
                .mul_add(scale_log2, -(qt.lse[c] * std::f32::consts::LOG2_E))
                .exp2();
            round_bf16(if shape.visible(qt.m0 + c, n0 + kr) {
                p
            } else {
                0.0
            })
        })
        .collect();
    for (dd, acc) in dv.iter_mut().enumerate() {
        *acc = mma_chain(BLOCK_M, *acc, |c| p[c] * qt.d_o[c * d + dd]);
    }
    let ds: Vec<f32> = (0..BLOCK_M)
        .map(|c| {
            let dp = mma_chain(d, 0.0, |dd| v_tile[kr * d + dd] * qt.d_o[c * d + dd]);
            round_bf16(p[c] * (dp - qt.delta[c]))
        })
        .collect();
    for (dd, acc) in dk.iter_mut().enumerate() {
        *acc = mma_chain(BLOCK_M, *acc, |c| ds[c] * qt.q[c * d + dd]);
    }
    ds
}

/// One backward block: key tile `n0` of query head `h` in batch `b`.
#[allow(clippy::too_many_arguments)]
fn backward_block(
    shape: &Shape,
    scale: f32,
    qkv: &Qkv,
    d_o: &Input,
    lse: &[f32],
    delta: &[f32],
    b: usize,
    h: usize,
    n0: usize,
    acc: &mut Accumulators,
) {
    let d = shape.head_dim;
    let h_kv = h / shape.group();
    let bh = b * shape.heads + h;
    let scale_log2 = scale * std::f32::consts::LOG2_E;
    let k_tile = load_tile(&qkv.k, b, h_kv, n0, shape.kv_len, d);
    let v_tile = load_tile(&qkv.v, b, h_kv, n0, shape.kv_len, d);
    let mut dk = vec![0.0f32; BLOCK_N * d];
    let mut dv = vec![0.0f32; BLOCK_N * d];
    let m_first = n0.saturating_sub(shape.kv_len - shape.q_len) / BLOCK_M * BLOCK_M;

    for m0 in (m_first..shape.q_len).step_by(BLOCK_M) {
        let rows = |v: &[f32]| -> Vec<f32> {
            (0..BLOCK_M)
                .map(|c| {
                    if m0 + c < shape.q_len {
                        v[bh * shape.q_len + m0 + c]
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let qt = QueryTile {
            m0,
            q: load_tile(&qkv.q, b, h, m0, shape.q_len, d),
            d_o: load_tile(d_o, b, h, m0, shape.q_len, d),
            lse: rows(lse),
            delta: rows(delta),
        };
        // dS^T tile [key][query], as stored in shared memory.
        let mut ds_t = vec![0.0f32; BLOCK_N * BLOCK_M];
        for kr in 0..BLOCK_N {
            let ds = backward_key_row(
                shape,
                scale_log2,
                &qt,
                &k_tile,
                &v_tile,
                n0,
                kr,
                &mut dk[kr * d..(kr + 1) * d],
                &mut dv[kr * d..(kr + 1) * d],
            );
            ds_t[kr * BLOCK_M..(kr + 1) * BLOCK_M].copy_from_slice(&ds);
        }
        // dQ rows of this query tile: one (key tile, query tile) partial per element, added like the atomics.
        for qr in 0..BLOCK_M.min(shape.q_len - m0) {
            let dst = (bh * shape.q_len + m0 + qr) * d;
            for dd in 0..d {
                acc.dq[dst + dd] += mma_chain(BLOCK_N, 0.0, |kr| {
                    ds_t[kr * BLOCK_M + qr] * k_tile[kr * d + dd]
                });
            }
        }
    }

    for kr in 0..BLOCK_N.min(shape.kv_len - n0) {
        let dst = (bh * shape.kv_len + n0 + kr) * d;
        for dd in 0..d {
            acc.dk[dst + dd] = dk[kr * d + dd] * scale;
            acc.dv[dst + dd] = dv[kr * d + dd];
        }
    }
}

/// `attention_bwd_d{64,128}_bf16`: recomputes P from Q, K and `lse` and returns the f32 accumulators
/// (`dq` unscaled, `dk` scaled, both per query head). `lse` and `delta` are `[B, H, Tq]` contiguous.
pub fn backward_main(
    shape: &Shape,
    scale: f32,
    qkv: &Qkv,
    d_o: Input,
    lse: &[f32],
    delta: &[f32],
) -> Accumulators {
    shape.check();
    let d = shape.head_dim;
    let mut acc = Accumulators {
        dq: vec![0.0; shape.batch * shape.heads * shape.q_len * d],
        dk: vec![0.0; shape.batch * shape.heads * shape.kv_len * d],
        dv: vec![0.0; shape.batch * shape.heads * shape.kv_len * d],
    };
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for n0 in (0..shape.kv_len).step_by(BLOCK_N) {
                backward_block(shape, scale, qkv, &d_o, lse, delta, b, h, n0, &mut acc);
            }
        }
    }
    acc
}

/// `attention_bwd_dq_convert_bf16`: dq (`[B, Tq, H, D]` view) = bf16(scale * dq_accum).
pub fn backward_dq_convert(shape: &Shape, scale: f32, dq_accum: &[f32], dq: &mut Output) {
    let d = shape.head_dim;
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for i in 0..shape.q_len {
                let (src, dst) = (
                    ((b * shape.heads + h) * shape.q_len + i) * d,
                    dq.layout.offset(b, i, h),
                );
                for dd in 0..d {
                    dq.data[dst + dd] = round_bf16(dq_accum[src + dd] * scale);
                }
            }
        }
    }
}

/// `attention_bwd_dkv_reduce_bf16`: dk, dv (`[B, Tk, H_kv, D]` views) = bf16 of the sum, in head order, of the
/// per-query-head accumulators of each kv head.
pub fn backward_dkv_reduce(
    shape: &Shape,
    dk_accum: &[f32],
    dv_accum: &[f32],
    dk: &mut Output,
    dv: &mut Output,
) {
    let (d, group) = (shape.head_dim, shape.group());
    for b in 0..shape.batch {
        for g in 0..shape.kv_heads {
            for j in 0..shape.kv_len {
                for dd in 0..d {
                    let (mut sum_k, mut sum_v) = (0.0f32, 0.0f32);
                    for r in 0..group {
                        let src = ((b * shape.heads + g * group + r) * shape.kv_len + j) * d + dd;
                        sum_k += dk_accum[src];
                        sum_v += dv_accum[src];
                    }
                    dk.data[dk.layout.offset(b, j, g) + dd] = round_bf16(sum_k);
                    dv.data[dv.layout.offset(b, j, g) + dd] = round_bf16(sum_v);
                }
            }
        }
    }
}

/// The whole backward pass in the kernels' launch order: dot, main, dq convert, dk/dv reduce. `o` and `lse` are
/// the forward outputs; gradients are written bf16-rounded into the given views.
pub fn backward(
    shape: &Shape,
    scale: f32,
    qkv: &Qkv,
    o: Input,
    d_o: Input,
    lse: &[f32],
    mut grads: Grads,
) {
    let mut delta = vec![0.0f32; shape.batch * shape.heads * shape.q_len];
    backward_dot(shape, o, d_o, &mut delta);
    let acc = backward_main(shape, scale, qkv, d_o, lse, &delta);
    backward_dq_convert(shape, scale, &acc.dq, &mut grads.dq);
    backward_dkv_reduce(shape, &acc.dk, &acc.dv, &mut grads.dk, &mut grads.dv);
}
