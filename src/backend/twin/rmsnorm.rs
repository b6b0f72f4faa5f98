//! CPU twin of `kernels/rmsnorm.cu`: RMSNorm forward, backward and the weight-gradient reduction.
//!
//! Mirrors the kernels' order of accumulation: a block of `threads` threads per row, thread t owning vectors
//! t, t + threads, ... of W elements (W = 16 bytes / element size when `cols % W == 0`, else 1), each thread's sum
//! accumulated with FMAs in that order, then `tg::block_sum` (butterfly sum within each warp, warp sums gathered
//! and butterflied again). The backward pass splits rows into `num_blocks` contiguous ranges exactly as the
//! kernel does, accumulates each block's weight-gradient partial, and sums the partials in block order.
//! Outputs are rounded to the storage type where the kernels store them.
//!
//! Not modelled: FMA contractions the CUDA compiler may add beyond the explicit `fmaf` calls (so agreement with
//! the device is to a few ulp, not bitwise).

use half::bf16;

/// Element type of x, w, y, dy, dx and dw (rstd and the partials are always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    Bf16,
}

impl Precision {
    /// `x` as stored in this type (bf16: round to nearest even).
    pub(super) fn round(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::Bf16 => bf16::from_f32(x).to_f32(),
        }
    }

    /// Elements per 16-byte vector, the access width the kernels use when the row length allows it.
    fn vec_width(self, cols: usize) -> usize {
        let w = match self {
            Precision::F32 => 4,
            Precision::Bf16 => 8,
        };
        if cols.is_multiple_of(w) {
            w
        } else {
            1
        }
    }
}

/// Butterfly sum over 32 lanes (`tg::warp_sum`); every lane ends with lane 0's value.
fn warp_sum(mut lanes: [f32; 32]) -> f32 {
    for offset in [16, 8, 4, 2, 1] {
        let prev = lanes;
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = prev[i] + prev[i ^ offset];
        }
    }
    lanes[0]
}

/// `tg::block_sum` over per-thread values (`threads` a multiple of 32).
fn block_sum(per_thread: &[f32]) -> f32 {
    let warp_sums: Vec<f32> = per_thread
        .chunks(32)
        .map(|w| warp_sum(w.try_into().expect("32 lanes")))
        .collect();
    let mut lanes = [0.0f32; 32];
    lanes[..warp_sums.len()].copy_from_slice(&warp_sums);
    warp_sum(lanes)
}

/// Column indices thread `t` owns, in the order it visits them.
fn owned_columns(
    t: usize,
    threads: usize,
    cols: usize,
    width: usize,
) -> impl Iterator<Item = usize> {
    (t..cols / width)
        .step_by(threads)
        .flat_map(move |v| v * width..(v + 1) * width)
}

/// Forward (`rmsnorm_fwd_{f32,bf16}`): x, y `[rows, cols]`, w `[cols]`, rstd `[rows]`; `threads` is the block
/// size the kernel is launched with (a multiple of 32, at most 1024).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    rstd: &mut [f32],
    rows: usize,
    cols: usize,
    eps: f32,
    storage: Precision,
    threads: usize,
) {
    let width = storage.vec_width(cols);
    for row in 0..rows {
        let xr = &x[row * cols..(row + 1) * cols];
        let partial: Vec<f32> = (0..threads)
            .map(|t| {
                owned_columns(t, threads, cols, width)
                    .fold(0.0f32, |acc, c| xr[c].mul_add(xr[c], acc))
            })
            .collect();
        let r = 1.0 / (block_sum(&partial) / cols as f32 + eps).sqrt();
        rstd[row] = r;
        for c in 0..cols {
            y[row * cols + c] = storage.round(xr[c] * r * w[c]);
        }
    }
}

/// Backward (`rmsnorm_bwd_{f32,bf16}`): fills dx `[rows, cols]` and dw_partial `[num_blocks, cols]`, block b
/// handling rows `[b * ceil(rows / num_blocks), ...)`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dw_partial: &mut [f32],
    rows: usize,
    cols: usize,
    storage: Precision,
    threads: usize,
    num_blocks: usize,
) {
    let width = storage.vec_width(cols);
    let rows_per_block = rows.div_ceil(num_blocks);
    for block in 0..num_blocks {
        let dw_acc = &mut dw_partial[block * cols..(block + 1) * cols];
        dw_acc.fill(0.0);
        for row in (block * rows_per_block).min(rows)..((block + 1) * rows_per_block).min(rows) {
            let (xr, gr, r) = (
                &x[row * cols..(row + 1) * cols],
                &dy[row * cols..(row + 1) * cols],
                rstd[row],
            );
            let partial: Vec<f32> = (0..threads)
                .map(|t| {
                    owned_columns(t, threads, cols, width).fold(0.0f32, |dot, c| {
                        dw_acc[c] = gr[c].mul_add(xr[c] * r, dw_acc[c]);
                        (w[c] * gr[c]).mul_add(xr[c], dot)
                    })
                })
                .collect();
            let k = block_sum(&partial) * r * r / cols as f32;
            for c in 0..cols {
                dx[row * cols + c] = storage.round(r * (w[c] * gr[c] - xr[c] * k));
            }
        }
    }
}

/// Weight-gradient reduction (`rmsnorm_dw_reduce_{f32,bf16}`): dw[c] = sum over blocks, in order, of the partials.
pub fn dw_reduce(
    dw_partial: &[f32],
    dw: &mut [f32],
    num_blocks: usize,
    cols: usize,
    storage: Precision,
) {
    for (c, out) in dw.iter_mut().enumerate().take(cols) {
        *out = storage.round((0..num_blocks).fold(0.0f32, |s, b| s + dw_partial[b * cols + c]));
    }
}
