// RMSNorm: y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps), rows of `cols` elements, f32 arithmetic.
//
// Entry points (T = float for _f32, __nv_bfloat16 for _bf16; x, y, dy, dx are [rows, cols] contiguous):
//
//   rmsnorm_fwd_<t>(const T* x, const T* w, T* y, float* rstd, int rows, int cols, float eps)
//     grid (rows), block any multiple of 32 up to 1024 (suggested: clamp(round_up(cols / W, 32), 32, 1024) where
//     W = 16 / sizeof(T)), dynamic shared memory cols * sizeof(T) bytes (the staged row).
//     One block per row; x is read from global memory once (staged in shared memory for the second sweep), y
//     written once, rstd[row] kept for the backward pass.
//
//   rmsnorm_bwd_<t>(const T* x, const T* w, const float* rstd, const T* dy, T* dx, float* dw_partial,
//                   int rows, int cols)
//     grid (num_blocks), any num_blocks <= rows (suggested: a few blocks per SM), block as for the forward pass,
//     dynamic shared memory cols * (2 * sizeof(T) + 4) bytes. Block b handles the contiguous rows
//     [b * ceil(rows / num_blocks), ...) and writes its weight-gradient partial sum to row b of dw_partial
//     ([num_blocks, cols] f32). dx = rstd * (w * dy - x * rstd^2 * mean(w * dy * x)).
//
//   rmsnorm_dw_reduce_<t>(const float* dw_partial, T* dw, int num_blocks, int cols)
//     grid ceil(cols / 256), block 256: dw[c] = sum over b (in order) of dw_partial[b, c].
//
// Memory access is in 16-byte vectors of W elements when cols % W == 0 and every row pointer is 16-byte aligned,
// element by element otherwise. Thread t owns vectors t, t + blockDim, ... of every row, in both passes, so the
// staged elements it reads back are the ones it wrote (no barrier needed beyond the block reduction's).
// Everything is deterministic: fixed per-thread order, butterfly warp sums, the partials summed in block order.
// Shared memory above 48 KiB (cols > 12288 f32 / 24576 bf16 forward) needs the opt-in attribute.
#include "common.cuh"

namespace tg_rms {

// W consecutive elements of T moved as one 16-byte (W > 1) or scalar access.
template <typename T, int W> struct alignas(sizeof(T) * W) Pack {
    T e[W];
};

template <typename T, int W> __device__ __forceinline__ Pack<T, W> load(const T* p) {
    return *reinterpret_cast<const Pack<T, W>*>(p);
}
template <typename T, int W> __device__ __forceinline__ void store(T* p, const Pack<T, W>& v) {
    *reinterpret_cast<Pack<T, W>*>(p) = v;
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<unsigned long long>(p) & 15) == 0; }

template <typename T> constexpr int kVecWidth = 16 / static_cast<int>(sizeof(T));

template <typename T, int W>
__device__ __forceinline__ void fwd_row(const T* x_row, const T* w, T* y_row, float* rstd_out, int cols, float eps,
                                        T* stage) {
    __shared__ float scratch[32];
    const int n_vec = cols / W;
    float sum_sq = 0.0f;
    for (int v = threadIdx.x; v < n_vec; v += blockDim.x) {
        const Pack<T, W> xv = load<T, W>(x_row + v * W);
        store<T, W>(stage + v * W, xv);
#pragma unroll
        for (int i = 0; i < W; ++i) {
            const float xf = tg::to_f32(xv.e[i]);
            sum_sq = fmaf(xf, xf, sum_sq);
        }
    }
    sum_sq = tg::block_sum(sum_sq, scratch);
    const float rstd = 1.0f / sqrtf(sum_sq / static_cast<float>(cols) + eps);
    if (threadIdx.x == 0) *rstd_out = rstd;
    for (int v = threadIdx.x; v < n_vec; v += blockDim.x) {
        const Pack<T, W> xv = load<T, W>(stage + v * W), wv = load<T, W>(w + v * W);
        Pack<T, W> yv;
#pragma unroll
        for (int i = 0; i < W; ++i) yv.e[i] = tg::from_f32<T>(tg::to_f32(xv.e[i]) * rstd * tg::to_f32(wv.e[i]));
        store<T, W>(y_row + v * W, yv);
    }
}

template <typename T>
__device__ __forceinline__ void rmsnorm_fwd(const T* x, const T* w, T* y, float* rstd, int rows, int cols,
                                            float eps) {
    TG_DYNAMIC_SHARED(smem);
    const int row = blockIdx.x;
    if (row >= rows) return;
    const long long base = static_cast<long long>(row) * cols;
    T* stage = reinterpret_cast<T*>(smem);
    constexpr int W = kVecWidth<T>;
    if (cols % W == 0 && aligned16(x) && aligned16(w) && aligned16(y))
        fwd_row<T, W>(x + base, w, y + base, rstd + row, cols, eps, stage);
    else
        fwd_row<T, 1>(x + base, w, y + base, rstd + row, cols, eps, stage);
}

// One block's rows: dx per row (one block reduction each), the weight gradient accumulated per owned element in
// shared memory (dw_acc) and written once as this block's partial.
template <typename T, int W>
__device__ __forceinline__ void bwd_rows(const T* x, const T* w, const float* rstd, const T* dy, T* dx,
                                         float* dw_partial_row, int row0, int row1, int cols, T* x_stage,
                                         T* dy_stage, float* dw_acc) {
    __shared__ float scratch[32];
    const int n_vec = cols / W;
    for (int v = threadIdx.x; v < n_vec; v += blockDim.x) {
#pragma unroll
        for (int i = 0; i < W; ++i) dw_acc[v * W + i] = 0.0f;
    }
    for (int row = row0; row < row1; ++row) {
        const long long base = static_cast<long long>(row) * cols;
        const float r = rstd[row];
        float dot = 0.0f;  // sum of w * dy * x over the row
        for (int v = threadIdx.x; v < n_vec; v += blockDim.x) {
            const Pack<T, W> xv = load<T, W>(x + base + v * W), gv = load<T, W>(dy + base + v * W);
            const Pack<T, W> wv = load<T, W>(w + v * W);
            store<T, W>(x_stage + v * W, xv);
            store<T, W>(dy_stage + v * W, gv);
#pragma unroll
            for (int i = 0; i < W; ++i) {
                const float xf = tg::to_f32(xv.e[i]), gf = tg::to_f32(gv.e[i]);
                dot = fmaf(tg::to_f32(wv.e[i]) * gf, xf, dot);
                dw_acc[v * W + i] = fmaf(gf, xf * r, dw_acc[v * W + i]);
            }
        }
        dot = tg::block_sum(dot, scratch);
        const float c = dot * r * r / static_cast<float>(cols);
        for (int v = threadIdx.x; v < n_vec; v += blockDim.x) {
            const Pack<T, W> xv = load<T, W>(x_stage + v * W), gv = load<T, W>(dy_stage + v * W);
            const Pack<T, W> wv = load<T, W>(w + v * W);
            Pack<T, W> dxv;
#pragma unroll
            for (int i = 0; i < W; ++i) {
                const float wg = tg::to_f32(wv.e[i]) * tg::to_f32(gv.e[i]);
                dxv.e[i] = tg::from_f32<T>(r * (wg - tg::to_f32(xv.e[i]) * c));
            }
            store<T, W>(dx + base + v * W, dxv);
        }
    }
    for (int v = threadIdx.x; v < n_vec; v += blockDim.x) {
#pragma unroll
        for (int i = 0; i < W; ++i) dw_partial_row[v * W + i] = dw_acc[v * W + i];
    }
}

template <typename T>
__device__ __forceinline__ void rmsnorm_bwd(const T* x, const T* w, const float* rstd, const T* dy, T* dx,
                                            float* dw_partial, int rows, int cols) {
    TG_DYNAMIC_SHARED(smem);
    float* dw_acc = reinterpret_cast<float*>(smem);
    T* x_stage = reinterpret_cast<T*>(dw_acc + cols);
    T* dy_stage = x_stage + cols;
    const int rows_per_block = (rows + gridDim.x - 1) / gridDim.x;
    const int row0 = min(rows, blockIdx.x * rows_per_block), row1 = min(rows, row0 + rows_per_block);
    float* partial = dw_partial + static_cast<long long>(blockIdx.x) * cols;
    constexpr int W = kVecWidth<T>;
    // The staging buffers start at byte 4 * cols: 16-byte aligned whenever cols % W == 0 (W is 4 or 8).
    if (cols % W == 0 && aligned16(x) && aligned16(w) && aligned16(dy) && aligned16(dx) &&
        aligned16(dw_partial))
        bwd_rows<T, W>(x, w, rstd, dy, dx, partial, row0, row1, cols, x_stage, dy_stage, dw_acc);
    else
        bwd_rows<T, 1>(x, w, rstd, dy, dx, partial, row0, row1, cols, x_stage, dy_stage, dw_acc);
}

template <typename T>
__device__ __forceinline__ void rmsnorm_dw_reduce(const float* partial, T* dw, int num_blocks, int cols) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float sum = 0.0f;
    for (int b = 0; b < num_blocks; ++b) sum += partial[static_cast<long long>(b) * cols + c];
    dw[c] = tg::from_f32<T>(sum);
}

}  // namespace tg_rms

#define TG_RMSNORM(SUFFIX, T)                                                                                     \
    extern "C" __global__ void __launch_bounds__(1024)                                                            \
        rmsnorm_fwd_##SUFFIX(const T* x, const T* w, T* y, float* rstd, int rows, int cols, float eps) {          \
        tg_rms::rmsnorm_fwd<T>(x, w, y, rstd, rows, cols, eps);                                                   \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(1024)                                                            \
        rmsnorm_bwd_##SUFFIX(const T* x, const T* w, const float* rstd, const T* dy, T* dx, float* dw_partial,    \
                             int rows, int cols) {                                                                \
        tg_rms::rmsnorm_bwd<T>(x, w, rstd, dy, dx, dw_partial, rows, cols);                                      \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        rmsnorm_dw_reduce_##SUFFIX(const float* dw_partial, T* dw, int num_blocks, int cols) {                    \
        tg_rms::rmsnorm_dw_reduce<T>(dw_partial, dw, num_blocks, cols);                                           \
    }

TG_RMSNORM(f32, float)
TG_RMSNORM(bf16, __nv_bfloat16)
