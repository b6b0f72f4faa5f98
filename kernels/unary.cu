// Pointwise math (`ops::unary`): y = f(x) forward, dx = g * f'(x) backward, in the arithmetic type T (float or
// double; half inputs are upcast on the host first).
//
// The op is an int code, in the order of the host's `Unary` enum, with one f64 parameter p (rounded to T as the
// CPU does with `T::from_f64`):
//   0 neg, 1 exp, 2 log, 3 sqrt, 4 rsqrt, 5 powf (x^p), 6 silu, 7 sigmoid, 8 scale (x*p), 9 add_scalar (x+p)
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
    switch (op) {
        case 0: return -x;
        case 1: return m_exp(x);
        case 2: return m_log(x);
        case 3: return m_sqrt(x);
        case 4: return T(1) / m_sqrt(x);
        case 5: return m_pow(x, static_cast<T>(p));
        case 6: return x * sigmoid(x);
        case 7: return sigmoid(x);
        case 8: return x * static_cast<T>(p);
        case 9: return x + static_cast<T>(p);
        default: return m_nan<T>();
    }
}

template <typename T> __device__ __forceinline__ T derivative(int op, T x, double p) {
    const T half = T(0.5);
    switch (op) {
        case 0: return T(-1);
        case 1: return m_exp(x);
        case 2: return T(1) / x;
        case 3: return half / m_sqrt(x);
        case 4: return -half / (x * m_sqrt(x));
        case 5: return static_cast<T>(p) * m_pow(x, static_cast<T>(p - 1.0));
        case 6: {
            const T s = sigmoid(x);
            return s * (T(1) + x * (T(1) - s));
        }
        case 7: {
            const T s = sigmoid(x);
            return s * (T(1) - s);
        }
        case 8: return static_cast<T>(p);
        case 9: return T(1);
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
