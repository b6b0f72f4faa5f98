// Fused softmax + cross-entropy from logits with u32 targets and an optional ignore index
// (`ops::cross_entropy`), T = float or double. x: [rows, vocab] contiguous.
//
// Entry points (t = f32, f64):
//
//   ce_fwd_<t>(const T* x, const unsigned* targets, T* lse, double* row_loss, long long rows, int vocab,
//              unsigned ignore, int has_ignore)
//     One block per row: grid (rows), block a multiple of 32 up to 1024. lse[r] = m + log(sum exp(x - m)) (the
//     row maximum m first); row_loss[r] = lse[r] - x[r, targets[r]] (subtracted in T, widened to f64), or 0 on
//     a row whose target is the ignore index (has_ignore != 0).
//
//   ce_sum_<t>(const double* row_loss, T* out, long long rows, long long kept)
//     One block (grid 1), block a multiple of 32 up to 1024: out[0] = (sum of row_loss in f64) / max(kept, 1),
//     rounded to T. Deterministic (fixed per-thread order and reduction order).
//
//   ce_bwd_<t>(const T* x, const T* lse, const unsigned* targets, const T* g, T* dx, long long rows, int vocab,
//              unsigned ignore, int has_ignore, double norm)
//     One block per row, as the forward. s = g[0] * norm (in f64, rounded to T); dx[r, j] = exp(x - lse[r]) * s,
//     minus s at the target; an ignored row is all zeros.
#include "common.cuh"

namespace tg_ce {

__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }

template <typename T>
__device__ __forceinline__ void fwd(const T* __restrict__ x, const unsigned* __restrict__ targets, T* __restrict__ lse,
                                    double* __restrict__ row_loss, long long rows, int vocab, unsigned ignore,
                                    int has_ignore) {
    __shared__ T scratch[32];
    const long long row = blockIdx.x;
    if (row >= rows) return;  // the whole block leaves together
    const T* xr = x + row * vocab;
    T m = tg::neg_inf<T>();
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) m = xr[j] > m ? xr[j] : m;
    m = tg::block_max_t(m, scratch);
    T s = T(0);
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) s += m_exp(xr[j] - m);
    s = tg::block_sum_t(s, scratch);
    if (threadIdx.x == 0) {
        const T l = m + m_log(s);
        lse[row] = l;
        const unsigned t = targets[row];
        row_loss[row] = (has_ignore && t == ignore) ? 0.0 : static_cast<double>(l - xr[t]);
    }
}

template <typename T>
__device__ __forceinline__ void sum(const double* __restrict__ row_loss, T* __restrict__ out, long long rows,
                                    long long kept) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) acc += row_loss[r];
    acc = tg::block_sum_t(acc, scratch);
    if (threadIdx.x == 0) {
        const double norm = 1.0 / static_cast<double>(kept > 1 ? kept : 1);
        out[0] = static_cast<T>(acc * norm);
    }
}

template <typename T>
__device__ __forceinline__ void bwd(const T* __restrict__ x, const T* __restrict__ lse,
                                    const unsigned* __restrict__ targets, const T* __restrict__ g, T* __restrict__ dx,
                                    long long rows, int vocab, unsigned ignore, int has_ignore, double norm) {
    const long long row = blockIdx.x;
    if (row >= rows) return;
    const T* xr = x + row * vocab;
    T* dr = dx + row * vocab;
    const unsigned t = targets[row];
    if (has_ignore && t == ignore) {
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) dr[j] = T(0);
        return;
    }
    const T s = static_cast<T>(static_cast<double>(g[0]) * norm);
    const T l = lse[row];
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        const T v = m_exp(xr[j] - l) * s;
        dr[j] = static_cast<unsigned>(j) == t ? v - s : v;
    }
}

}  // namespace tg_ce

#define TG_CE(tname, T)                                                                                            \
    extern "C" __global__ void ce_fwd_##tname(const T* x, const unsigned* targets, T* lse, double* row_loss,      \
                                              long long rows, int vocab, unsigned ignore, int has_ignore) {       \
        tg_ce::fwd<T>(x, targets, lse, row_loss, rows, vocab, ignore, has_ignore);                                 \
    }                                                                                                              \
    extern "C" __global__ void ce_sum_##tname(const double* row_loss, T* out, long long rows, long long kept) {   \
        tg_ce::sum<T>(row_loss, out, rows, kept);                                                                  \
    }                                                                                                              \
    extern "C" __global__ void ce_bwd_##tname(const T* x, const T* lse, const unsigned* targets, const T* g,      \
                                              T* dx, long long rows, int vocab, unsigned ignore, int has_ignore,  \
                                              double norm) {                                                       \
        tg_ce::bwd<T>(x, lse, targets, g, dx, rows, vocab, ignore, has_ignore, norm);                              \
    }

TG_CE(f32, float)
TG_CE(f64, double)
