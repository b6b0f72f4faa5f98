// Sum and max over a set of axes (`ops::reduce`), in the arithmetic type T (float or double).
//
// The host splits the input's view in two: `kept` (the output's dims, in output order, carrying the view's
// offset) and `group` (the reduced dims, offset 0). Output element o reduces the group_n elements
// x[strided_index(kept, o) + strided_index(group, j)], j < group_n.
//
// Entry points (t = f32, f64):
//
//   reduce_warp_<t>(const T* x, Strided kept, Strided group, T* y, int* argmax, long long n_out,
//                   long long group_n, int op)
//     One warp per output element: grid ceil(n_out / (blockDim.x / 32)), block a multiple of 32 (256).
//   reduce_block_<t>(same parameters)
//     One block per output element: grid n_out, block a multiple of 32 up to 1024 (for few, long groups).
//     op 0: y[o] = the sum; op 1: y[o] = the maximum and, when argmax is not null, argmax[o] = the first j
//     holding it (ties go to the smaller j, as on the CPU; NaN is the largest, so the first NaN when there is
//     one). group_n >= 1 and < 2^31 for max.
//     Deterministic: each thread visits j = t, t + T, ... in order, then butterfly warp shuffles and (block mode)
//     a fixed order over the warps.
//
//   max_bwd_<t>(const T* g, Strided gv, const int* argmax, T* dx, Strided kept, Strided group, long long n_out)
//     dx[strided_index(kept, o) + strided_index(group, argmax[o])] = g[strided_index(gv, o)] for o < n_out;
//     kept/group split the layout of dx (zero-filled by the host first). Any 1-D grid, any block size.
#include "common.cuh"

namespace tg_reduce {

constexpr int kNone = 0x7fffffff;  // no index yet

// Whether candidate (v, i) beats (best, at): a larger value, or the same value at a smaller index. NaN is
// larger than every number, so a group holding a NaN has its first NaN as maximum (as on the CPU).
template <typename T> __device__ __forceinline__ bool beats(T v, int i, T best, int at) {
    if (i == kNone) return false;
    if (at == kNone) return true;
    const bool v_nan = v != v, best_nan = best != best;
    if (v_nan || best_nan) return v_nan && (!best_nan || i < at);
    return v > best || (v == best && i < at);
}

template <typename T> __device__ __forceinline__ void warp_argmax(T& best, int& at) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T v = __shfl_xor_sync(0xffffffffu, best, offset);
        const int i = __shfl_xor_sync(0xffffffffu, at, offset);
        if (beats(v, i, best, at)) {
            best = v;
            at = i;
        }
    }
}

// This thread's partial over j = first, first + step, ...
template <typename T>
__device__ __forceinline__ void partial(const T* __restrict__ x, long long base, const tg::Strided& group,
                                        long long group_n, long long first, long long step, int op, T& acc,
                                        int& at) {
    if (op == 0) {
        acc = T(0);
        at = kNone;
        for (long long j = first; j < group_n; j += step) acc += x[base + tg::strided_index(group, j)];
    } else {
        acc = tg::neg_inf<T>();
        at = kNone;
        for (long long j = first; j < group_n; j += step) {
            const T v = x[base + tg::strided_index(group, j)];
            if (beats(v, static_cast<int>(j), acc, at)) {
                acc = v;
                at = static_cast<int>(j);
            }
        }
    }
}

template <typename T>
__device__ __forceinline__ void reduce_warp(const T* __restrict__ x, const tg::Strided& kept,
                                            const tg::Strided& group, T* __restrict__ y, int* __restrict__ argmax,
                                            long long n_out, long long group_n, int op) {
    const int lane = threadIdx.x & 31;
    const long long o = static_cast<long long>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (o >= n_out) return;  // the whole warp leaves together
    const long long base = tg::strided_index(kept, o);
    T acc;
    int at;
    partial(x, base, group, group_n, lane, 32, op, acc, at);
    if (op == 0) {
        acc = tg::warp_sum_t(acc);
    } else {
        warp_argmax(acc, at);
    }
    if (lane == 0) {
        y[o] = acc;
        if (op != 0 && argmax != nullptr) argmax[o] = at;
    }
}

template <typename T>
__device__ __forceinline__ void reduce_block(const T* __restrict__ x, const tg::Strided& kept,
                                             const tg::Strided& group, T* __restrict__ y, int* __restrict__ argmax,
                                             long long n_out, long long group_n, int op) {
    __shared__ T values[32];
    __shared__ int indices[32];
    const long long o = blockIdx.x;
    if (o >= n_out) return;  // the whole block leaves together
    const long long base = tg::strided_index(kept, o);
    T acc;
    int at;
    partial(x, base, group, group_n, threadIdx.x, blockDim.x, op, acc, at);
    if (op == 0) {
        acc = tg::block_sum_t(acc, values);
    } else {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
        warp_argmax(acc, at);
        if (lane == 0) {
            values[warp] = acc;
            indices[warp] = at;
        }
        __syncthreads();
        acc = lane < warps ? values[lane] : tg::neg_inf<T>();
        at = lane < warps ? indices[lane] : kNone;
        warp_argmax(acc, at);
    }
    if (threadIdx.x == 0) {
        y[o] = acc;
        if (op != 0 && argmax != nullptr) argmax[o] = at;
    }
}

template <typename T>
__device__ __forceinline__ void max_bwd(const T* __restrict__ g, const tg::Strided& gv, const int* __restrict__ argmax,
                                        T* __restrict__ dx, const tg::Strided& kept, const tg::Strided& group,
                                        long long n_out) {
    for (long long o = tg::global_thread(); o < n_out; o += tg::grid_threads()) {
        dx[tg::strided_index(kept, o) + tg::strided_index(group, argmax[o])] = g[tg::strided_index(gv, o)];
    }
}

}  // namespace tg_reduce

#define TG_REDUCE(tname, T)                                                                                      \
    extern "C" __global__ void reduce_warp_##tname(const T* x, tg::Strided kept, tg::Strided group, T* y,       \
                                                   int* argmax, long long n_out, long long group_n, int op) {   \
        tg_reduce::reduce_warp<T>(x, kept, group, y, argmax, n_out, group_n, op);                                \
    }                                                                                                            \
    extern "C" __global__ void reduce_block_##tname(const T* x, tg::Strided kept, tg::Strided group, T* y,      \
                                                    int* argmax, long long n_out, long long group_n, int op) {  \
        tg_reduce::reduce_block<T>(x, kept, group, y, argmax, n_out, group_n, op);                               \
    }                                                                                                            \
    extern "C" __global__ void max_bwd_##tname(const T* g, tg::Strided gv, const int* argmax, T* dx,            \
                                               tg::Strided kept, tg::Strided group, long long n_out) {          \
        tg_reduce::max_bwd<T>(g, gv, argmax, dx, kept, group, n_out);                                            \
    }

TG_REDUCE(f32, float)
TG_REDUCE(f64, double)
