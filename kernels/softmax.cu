// softmax and log_softmax over the last axis (`ops::softmax`), in the arithmetic type T (float or double).
//
// Entry points (t = f32, f64):
//
//   softmax_<t>(const T* x, T* y, long long rows, int n, int log)
//     x, y: [rows, n] contiguous. One block per row: grid (rows), block a multiple of 32 up to 1024. Three sweeps
//     of the row: max m, s = sum exp(x - m), then y = exp(x - m) / s (log == 0) or y = x - (m + log s)
//     (log != 0), the CPU's formulas. Deterministic (fixed per-thread order, fixed block reduction order).
#include "common.cuh"

namespace tg_softmax {

__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }

template <typename T>
__device__ __forceinline__ void softmax(const T* __restrict__ x, T* __restrict__ y, long long rows, int n, int log) {
    __shared__ T scratch[32];
    const long long row = blockIdx.x;
    if (row >= rows) return;  // the whole block leaves together
    const T* xr = x + row * n;
    T* yr = y + row * n;
    T m = tg::neg_inf<T>();
    for (int j = threadIdx.x; j < n; j += blockDim.x) m = xr[j] > m ? xr[j] : m;
    m = tg::block_max_t(m, scratch);
    T s = T(0);
    for (int j = threadIdx.x; j < n; j += blockDim.x) s += m_exp(xr[j] - m);
    s = tg::block_sum_t(s, scratch);
    if (log) {
        const T lse = m + m_log(s);
        for (int j = threadIdx.x; j < n; j += blockDim.x) yr[j] = xr[j] - lse;
    } else {
        for (int j = threadIdx.x; j < n; j += blockDim.x) yr[j] = m_exp(xr[j] - m) / s;
    }
}

}  // namespace tg_softmax

extern "C" __global__ void softmax_f32(const float* x, float* y, long long rows, int n, int log) {
    tg_softmax::softmax<float>(x, y, rows, n, log);
}
extern "C" __global__ void softmax_f64(const double* x, double* y, long long rows, int n, int log) {
    tg_softmax::softmax<double>(x, y, rows, n, log);
}
