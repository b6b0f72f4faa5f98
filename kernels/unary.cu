// Pointwise math (`ops::unary`): y = f(x) forward, dx = g * f'(x) backward, in the arithmetic type T (float or
// double; half inputs are upcast on the host first).
//
// The op is the code of an entry of `TG_UNARY_OPS` below (as the host sends it), with one f64 parameter p
// (rounded to T as the CPU does with `T::from_f64`): NEG, EXP, LOG, SQRT, RSQRT, POWF (x^p), SILU, SIGMOID,
// SCALE (x*p), ADD_SCALAR (x+p).
//
// Entry points (t = f32, f64; T = float, double):
//
//   unary_fwd_<t>(const T* x, Strided xv, T* y, long long n, int op, double p)
//     y[i] = f(x[strided_index(xv, i)]) for i < n; y contiguous. Any 1-D grid, any block size.
//
//   unary_bwd_<t>(const T* g, Strided gv, const T* x, Strided xv, T* dx, long long n, int op, double p)
//     dx[i] = g[strided_index(gv, i)] * f'(x[strided_index(xv, i)]); gv and xv have n elements, dx contiguous.
//
// An unknown op code writes NaN (the host passes only the codes above).
#include "common.cuh"

// The ops by name, in code order, each with f(x) and f'(x) in the arithmetic type T, from x and the parameter
// p. The host reads this list when it is compiled (`backend::op_code`), so both sides take every code from
// here: an op renamed, removed or missing on either side fails to build. A new op is one line here.
#define TG_UNARY_OPS(X) \
    X(NEG, -x, T(-1)) \
    X(EXP, m_exp(x), m_exp(x)) \
    X(LOG, m_log(x), T(1) / x) \
    X(SQRT, m_sqrt(x), T(0.5) / m_sqrt(x)) \
    X(RSQRT, T(1) / m_sqrt(x), T(-0.5) / (x * m_sqrt(x))) \
    X(POWF, m_pow(x, static_cast<T>(p)), static_cast<T>(p) * m_pow(x, static_cast<T>(p - 1.0))) \
    X(SILU, x * sigmoid(x), sigmoid(x) * (T(1) + x * (T(1) - sigmoid(x)))) \
    X(SIGMOID, sigmoid(x), sigmoid(x) * (T(1) - sigmoid(x))) \
    X(SCALE, x * static_cast<T>(p), static_cast<T>(p)) \
    X(ADD_SCALAR, x + static_cast<T>(p), T(1))

namespace tg_unary {

__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }
__device__ __forceinline__ float m_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double m_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float m_pow(float x, float e) { return powf(x, e); }
__device__ __forceinline__ double m_pow(double x, double e) { return pow(x, e); }
template <typename T> __device__ __forceinline__ T m_nan();
template <> __device__ __forceinline__ float m_nan<float>() { return __uint_as_float(0x7fc00000u); }
template <> __device__ __forceinline__ double m_nan<double>() { return __longlong_as_double(0x7ff8000000000000ll); }

template <typename T> __device__ __forceinline__ T sigmoid(T x) { return T(1) / (T(1) + m_exp(-x)); }

#define TG_UNARY_NAME(name, f, df) name,
enum class Op : int { TG_UNARY_OPS(TG_UNARY_NAME) };
#undef TG_UNARY_NAME

template <typename T> __device__ __forceinline__ T apply(int op, T x, double p) {
    switch (static_cast<Op>(op)) {
#define TG_UNARY_APPLY(name, f, df) \
    case Op::name: return f;
        TG_UNARY_OPS(TG_UNARY_APPLY)
#undef TG_UNARY_APPLY
        default: return m_nan<T>();
    }
}

template <typename T> __device__ __forceinline__ T derivative(int op, T x, double p) {
    switch (static_cast<Op>(op)) {
#define TG_UNARY_DERIVATIVE(name, f, df) \
    case Op::name: return df;
        TG_UNARY_OPS(TG_UNARY_DERIVATIVE)
#undef TG_UNARY_DERIVATIVE
        default: return m_nan<T>();
    }
}

template <typename T>
__device__ __forceinline__ void fwd(const T* __restrict__ x, const tg::Strided& xv, T* __restrict__ y, long long n,
                                    int op, double p) {
    for (long long i = tg::global_thread(); i < n; i += tg::grid_threads()) {
        y[i] = apply<T>(op, x[tg::strided_index(xv, i)], p);
    }
}

template <typename T>
__device__ __forceinline__ void bwd(const T* __restrict__ g, const tg::Strided& gv, const T* __restrict__ x,
                                    const tg::Strided& xv, T* __restrict__ dx, long long n, int op, double p) {
    for (long long i = tg::global_thread(); i < n; i += tg::grid_threads()) {
        dx[i] = g[tg::strided_index(gv, i)] * derivative<T>(op, x[tg::strided_index(xv, i)], p);
    }
}

}  // namespace tg_unary

extern "C" __global__ void unary_fwd_f32(const float* x, tg::Strided xv, float* y, long long n, int op, double p) {
    tg_unary::fwd<float>(x, xv, y, n, op, p);
}
extern "C" __global__ void unary_fwd_f64(const double* x, tg::Strided xv, double* y, long long n, int op,
                                         double p) {
    tg_unary::fwd<double>(x, xv, y, n, op, p);
}
extern "C" __global__ void unary_bwd_f32(const float* g, tg::Strided gv, const float* x, tg::Strided xv, float* dx,
                                         long long n, int op, double p) {
    tg_unary::bwd<float>(g, gv, x, xv, dx, n, op, p);
}
extern "C" __global__ void unary_bwd_f64(const double* g, tg::Strided gv, const double* x, tg::Strided xv,
                                         double* dx, long long n, int op, double p) {
    tg_unary::bwd<double>(g, gv, x, xv, dx, n, op, p);
}
