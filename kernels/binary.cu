// add, sub, mul, div with broadcasting (`ops::binary`), in the arithmetic type T (float or double).
//
// Entry points (t = f32, f64):
//
//   binary_<t>(const T* a, Strided av, const T* b, Strided bv, T* y, long long n, int op)
//     y[i] = a[strided_index(av, i)] (op) b[strided_index(bv, i)] for i < n, op a `tg::BinaryOp` (ADD, SUB, MUL,
//     DIV: its code from `TG_BINARY_OPS` in common.cuh; an unknown code writes NaN). av and bv are the operands already broadcast to the output's n elements
//     (stride 0 along broadcast dims); y contiguous. Any 1-D grid, any block size.
#include "common.cuh"

namespace tg_binary {

template <typename T>
__device__ __forceinline__ void binary(const T* __restrict__ a, const tg::Strided& av, const T* __restrict__ b,
                                       const tg::Strided& bv, T* __restrict__ y, long long n, int op) {
    for (long long i = tg::global_thread(); i < n; i += tg::grid_threads()) {
        const T x = a[tg::strided_index(av, i)], z = b[tg::strided_index(bv, i)];
        T r;
        switch (static_cast<tg::BinaryOp>(op)) {
            case tg::BinaryOp::ADD: r = x + z; break;
            case tg::BinaryOp::SUB: r = x - z; break;
            case tg::BinaryOp::MUL: r = x * z; break;
            case tg::BinaryOp::DIV: r = x / z; break;
            default: r = (x - x) / T(0); break;  // NaN
        }
        y[i] = r;
    }
}

}  // namespace tg_binary

extern "C" __global__ void binary_f32(const float* a, tg::Strided av, const float* b, tg::Strided bv, float* y,
                                      long long n, int op) {
    tg_binary::binary<float>(a, av, b, bv, y, n, op);
}
extern "C" __global__ void binary_f64(const double* a, tg::Strided av, const double* b, tg::Strided bv, double* y,
                                      long long n, int op) {
    tg_binary::binary<double>(a, av, b, bv, y, n, op);
}
