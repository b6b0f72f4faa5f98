// Pointwise math (`ops::unary`): y = f(x) forward, dx = g * f'(x) backward, in the arithmetic type T (float or
// double; half inputs are upcast on the host first).
//
// The op is a `tg::UnaryOp` (its code from `TG_UNARY_OPS` in common.cuh, as the host sends it), with one f64
// parameter p (rounded to T as the CPU does with `T::from_f64`): NEG, EXP, LOG, SQRT, RSQRT, POWF (x^p), SILU,
// SIGMOID, SCALE (x*p), ADD_SCALAR (x+p).
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

template <typename T> __device__ __forceinline__ T apply(int op, T x, double p) {
    using tg::UnaryOp;
    switch (static_cast<UnaryOp>(op)) {
        case UnaryOp::NEG: return -x;
        case UnaryOp::EXP: return m_exp(x);
        case UnaryOp::LOG: return m_log(x);
        case UnaryOp::SQRT: return m_sqrt(x);
        case UnaryOp::RSQRT: return T(1) / m_sqrt(x);
        case UnaryOp::POWF: return m_pow(x, static_cast<T>(p));
        case UnaryOp::SILU: return x * sigmoid(x);
        case UnaryOp::SIGMOID: return sigmoid(x);
        case UnaryOp::SCALE: return x * static_cast<T>(p);
        case UnaryOp::ADD_SCALAR: return x + static_cast<T>(p);
        default: return m_nan<T>();
    }
}

template <typename T> __device__ __forceinline__ T derivative(int op, T x, double p) {
    const T half = T(0.5);
    using tg::UnaryOp;
    switch (static_cast<UnaryOp>(op)) {
        case UnaryOp::NEG: return T(-1);
        case UnaryOp::EXP: return m_exp(x);
        case UnaryOp::LOG: return T(1) / x;
        case UnaryOp::SQRT: return half / m_sqrt(x);
        case UnaryOp::RSQRT: return -half / (x * m_sqrt(x));
        case UnaryOp::POWF: return static_cast<T>(p) * m_pow(x, static_cast<T>(p - 1.0));
        case UnaryOp::SILU: {
            const T s = sigmoid(x);
            return s * (T(1) + x * (T(1) - s));
        }
        case UnaryOp::SIGMOID: {
            const T s = sigmoid(x);
            return s * (T(1) - s);
        }
        case UnaryOp::SCALE: return static_cast<T>(p);
        case UnaryOp::ADD_SCALAR: return T(1);
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
