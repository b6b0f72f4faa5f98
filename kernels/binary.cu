// add, sub, mul, div with broadcasting (`ops::binary`), in the arithmetic type T (float or double).
//
// Entry points (t = f32, f64):
//
//   binary_<t>(const T* a, Strided av, const T* b, Strided bv, T* y, long long n, int op)
//     y[i] = a[strided_index(av, i)] (op) b[strided_index(bv, i)] for i < n, op the code of an entry of
//     `TG_BINARY_OPS` below (an unknown code writes NaN). av and bv are the operands already broadcast to the
//     output's n elements (stride 0 along broadcast dims); y contiguous. Any 1-D grid, any block size.
#include "common.cuh"

// The ops by name, in code order, each with its result from x (the left operand) and z (the right). The host
// reads this list when it is compiled (`backend::op_code`), so both sides take every code from here: an op
// renamed, removed or missing on either side fails to build.
#define TG_BINARY_OPS(X) \
    X(ADD, x + z) \
    X(SUB, x - z) \
    X(MUL, x * z) \
    X(DIV, x / z)

namespace tg_binary {

#define TG_BINARY_NAME(name, f) name,
enum class Op : int { TG_BINARY_OPS(TG_BINARY_NAME) };
#undef TG_BINARY_NAME

template <typename T>
__device__ __forceinline__ void binary(const T* __restrict__ a, const tg::Strided& av, const T* __restrict__ b,
                                       const tg::Strided& bv, T* __restrict__ y, long long n, int op) {
    for (long long i = tg::global_thread(); i < n; i += tg::grid_threads()) {
        const T x = a[tg::strided_index(av, i)], z = b[tg::strided_index(bv, i)];
        T r;
        switch (static_cast<Op>(op)) {
#define TG_BINARY_CASE(name, f) \
    case Op::name: r = f; break;
            TG_BINARY_OPS(TG_BINARY_CASE)
#undef TG_BINARY_CASE
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
