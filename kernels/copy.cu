// Strided copies with dtype conversion, and fills: the device side of `to_dtype`, `contiguous`, `cat`, the
// zero padding of narrow/cat gradients, and `Tensor::zeros_on` / `full_on`.
//
// Entry points (s, d each one of f32, f64, bf16, f16; S, D the matching C++ types):
//
//   copy_<s>_<d>(const S* x, Strided xv, D* y, Strided yv, long long n)
//     y[strided_index(yv, i)] = convert<D>(x[strided_index(xv, i)]) for every logical index i < n. xv and yv
//     have n elements each (their shapes may differ: each view decomposes i by its own shape, so the host may
//     collapse either independently). x and y are the buffers' base addresses; the offsets are in the views.
//     Any 1-D grid (grid-stride loop), any block size.
//
//   fill_<d>(D* y, long long n, double value)
//     y[i] = value rounded to D, for i < n. Any 1-D grid, any block size.
#include "common.cuh"

namespace tg_copy {

template <typename S, typename D>
__device__ __forceinline__ void copy(const S* __restrict__ x, const tg::Strided& xv, D* __restrict__ y,
                                     const tg::Strided& yv, long long n) {
    for (long long i = tg::global_thread(); i < n; i += tg::grid_threads()) {
        y[tg::strided_index(yv, i)] = tg::convert<D>(x[tg::strided_index(xv, i)]);
    }
}

template <typename D> __device__ __forceinline__ void fill(D* __restrict__ y, long long n, double value) {
    const D v = tg::from_f64<D>(value);
    for (long long i = tg::global_thread(); i < n; i += tg::grid_threads()) y[i] = v;
}

}  // namespace tg_copy

#define TG_COPY(sname, S, dname, D)                                                                       \
    extern "C" __global__ void copy_##sname##_##dname(const S* x, tg::Strided xv, D* y, tg::Strided yv,   \
                                                      long long n) {                                      \
        tg_copy::copy<S, D>(x, xv, y, yv, n);                                                             \
    }

#define TG_COPY_FROM(sname, S)                    \
    TG_COPY(sname, S, f32, float)                 \
    TG_COPY(sname, S, f64, double)                \
    TG_COPY(sname, S, bf16, __nv_bfloat16)        \
    TG_COPY(sname, S, f16, __half)

TG_COPY_FROM(f32, float)
TG_COPY_FROM(f64, double)
TG_COPY_FROM(bf16, __nv_bfloat16)
TG_COPY_FROM(f16, __half)

#define TG_FILL(dname, D) \
    extern "C" __global__ void fill_##dname(D* y, long long n, double value) { tg_copy::fill<D>(y, n, value); }

TG_FILL(f32, float)
TG_FILL(f64, double)
TG_FILL(bf16, __nv_bfloat16)
TG_FILL(f16, __half)
