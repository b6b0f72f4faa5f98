// Helpers shared by every kernel family: element conversions, warp and block reductions.
//
// Kernels are compiled at run time by NVRTC (one module per family and architecture) with this folder on the
// include path. Every entry point is `extern "C"` and named `<op>_<dtype>` (f32, bf16), so the host side finds
// it by name. Arithmetic is f32 whatever the storage type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

// The block's dynamic shared memory as `unsigned char* name` (16-byte aligned). On the emulated device
// (`kernels/emulator`) it is the launch's shared window.
#ifdef TG_EMULATED
#define TG_DYNAMIC_SHARED(name) unsigned char* name = tgemu::dynamic_shared()
#else
#define TG_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace tg {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// Sum over the 32 lanes of a warp, every lane gets the result (butterfly order: deterministic).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over a block of `blockDim.x` threads (a multiple of 32, at most 1024); every thread gets the result.
// `scratch` is 32 floats of shared memory; the call contains __syncthreads, so every thread must reach it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -__uint_as_float(0x7f800000u);  // −∞ (NVRTC has no INFINITY)
    return warp_max(v);
}

}  // namespace tg

namespace tg {

// A strided view as the host passes it (`backend::cuda::Strided`): up to 6 dims, element strides, offset.
struct Strided {
    int ndim;
    int pad;
    long long shape[6];
    long long strides[6];
    long long offset;
};

// The storage index of logical (row-major) element `i` of view `v`. The loop is unrolled over the 6 slots
// (innermost first, skipping those past ndim), so the view is indexed only by constants and stays in registers
// or the parameter bank instead of being copied to local memory.
__device__ __forceinline__ long long strided_index(const Strided& v, long long i) {
    long long at = v.offset;
#pragma unroll
    for (int d = 5; d >= 0; --d) {
        if (d < v.ndim) {
            const long long n = v.shape[d];
            at += (i % n) * v.strides[d];
            i /= n;
        }
    }
    return at;
}

}  // namespace tg

namespace tg {

// Conversions for the four storage types (f32, f64, bf16, f16). Every value of bf16, f16 and f32 is exact in
// f32, and every value of any of them exact in f64, so `convert` rounds once, to nearest even: between the
// three narrow types through f32, and through f64 wherever f64 is involved (what the CPU's `D::from_f64(x.to_f64())`
// computes).
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(double x) { return static_cast<float>(x); }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ double from_f32<double>(float x) { return static_cast<double>(x); }

__device__ __forceinline__ double to_f64(float x) { return static_cast<double>(x); }
__device__ __forceinline__ double to_f64(double x) { return x; }
__device__ __forceinline__ double to_f64(__nv_bfloat16 x) { return static_cast<double>(__bfloat162float(x)); }
__device__ __forceinline__ double to_f64(__half x) { return static_cast<double>(__half2float(x)); }

template <typename T> __device__ __forceinline__ T from_f64(double x);
template <> __device__ __forceinline__ float from_f64<float>(double x) { return static_cast<float>(x); }
template <> __device__ __forceinline__ double from_f64<double>(double x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f64<__nv_bfloat16>(double x) { return __double2bfloat16(x); }
template <> __device__ __forceinline__ __half from_f64<__half>(double x) { return __double2half(x); }

template <typename A, typename B> struct same_type { static constexpr bool value = false; };
template <typename A> struct same_type<A, A> { static constexpr bool value = true; };

template <typename D, typename S> __device__ __forceinline__ D convert(S x) {
    if constexpr (same_type<S, D>::value) {
        return x;
    } else if constexpr (same_type<S, double>::value || same_type<D, double>::value) {
        return from_f64<D>(to_f64(x));
    } else {
        return from_f32<D>(to_f32(x));
    }
}

// Sums and maxima in the arithmetic type T (float or double): butterfly warp shuffles and a fixed two-level
// block order, so results are deterministic for a given block size.
template <typename T> __device__ __forceinline__ T warp_sum_t(T v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

template <typename T> __device__ __forceinline__ T warp_max_t(T v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T o = __shfl_xor_sync(0xffffffffu, v, offset);
        v = o > v ? o : v;
    }
    return v;
}

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return -__uint_as_float(0x7f800000u); }
template <> __device__ __forceinline__ double neg_inf<double>() {
    return -__longlong_as_double(0x7ff0000000000000ll);
}

// Block-wide versions (blockDim.x a multiple of 32, at most 1024; `scratch` 32 T of shared memory; every thread
// must call; every thread gets the result).
template <typename T> __device__ __forceinline__ T block_sum_t(T v, T* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum_t(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : T(0);
    return warp_sum_t(v);
}

template <typename T> __device__ __forceinline__ T block_max_t(T v, T* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max_t(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : neg_inf<T>();
    return warp_max_t(v);
}

// Grid-stride loop bounds: the first index and the step of this thread over a 1-D grid.
__device__ __forceinline__ long long global_thread() {
    return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long grid_threads() { return static_cast<long long>(gridDim.x) * blockDim.x; }

}  // namespace tg
