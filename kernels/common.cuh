// Helpers shared by every kernel family: element conversions, warp and block reductions.
//
// Kernels are compiled at run time by NVRTC (one module per family and architecture) with this folder on the
// include path. Every entry point is `extern "C"` and named `<op>_<dtype>` (f32, bf16), so the host side finds
// it by name. Arithmetic is f32 whatever the storage type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

// The storage index of logical (row-major) element `i` of view `v`.
__device__ __forceinline__ long long strided_index(const Strided& v, long long i) {
    long long at = v.offset;
    for (int d = v.ndim - 1; d >= 0; --d) {
        const long long n = v.shape[d];
        at += (i % n) * v.strides[d];
        i /= n;
    }
    return at;
}

}  // namespace tg
