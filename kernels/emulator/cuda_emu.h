// The CUDA device built-ins for `kernels/*.cu` compiled as C++ for the CPU (the emulated device, see
// docs/gpu-emulator.md). The fake `cuda_bf16.h` and `cuda_fp16.h` in `include/` lead here, so a kernel source
// compiles unchanged with g++: each CUDA thread runs as a fiber of the block scheduler (`scheduler.cc`),
// `threadIdx` and friends read the running fiber's state, barriers and warp collectives switch fibers, and the
// PTX wrappers of the kernels call the emulations below when `__CUDA_ARCH__` is not defined.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define TG_EMULATED 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __restrict__ __restrict
// Static shared memory: one copy, which the threads of the block running now share (blocks run one at a time).
#define __shared__ static

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

namespace tgemu {

// What a kernel's code sees of the thread running now (set by the scheduler before it resumes a fiber).
struct ThreadState {
    uint3 thread_idx;
    uint3 block_idx;
    uint3 block_dim;
    uint3 grid_dim;
};
extern thread_local ThreadState* current;

// --- services of the scheduler (scheduler.cc), each a failure naming kernel, block and thread when misused ---
void syncthreads();
void syncwarp(unsigned mask);
// Every lane of `mask` posts `bytes` bytes; once all are there each lane gets lane `src`'s post (a lane outside
// the mask, or a mask that names lanes not at the call, is an error).
void warp_exchange(unsigned mask, const char* what, const void* mine, void* out, int bytes, int src);
unsigned warp_ballot(unsigned mask, const char* what, bool predicate);
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// The dynamic shared memory of the block, and its size.
unsigned char* dynamic_shared();
size_t dynamic_shared_size();
// The 32-bit shared-window address of a generic pointer into dynamic shared memory, and back.
unsigned shared_address(const void* p);
void* shared_pointer(unsigned address, unsigned bytes);

// --- inline PTX (ptx.cc), written from the PTX ISA's descriptions ---
void cp_async(unsigned dst, const void* src, unsigned cp_size, unsigned src_size);
void cp_async_commit();
void cp_async_wait(int n);
void st_shared_b32(unsigned address, unsigned value);
// ldmatrix.sync.aligned.m8n8.x{count}[.trans].shared.b16
void ldmatrix(unsigned* regs, int count, bool trans, unsigned row_address);
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: d = a · b + d
void mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);

// Atomics: the block's threads run on one OS thread, blocks one after another, so a plain update is atomic.
template <typename T> __attribute__((no_sanitize_thread, noinline)) T atomic_add(T* address, T value) {
    T old = *address;
    *address = old + value;
    return old;
}

}  // namespace tgemu

#define threadIdx (tgemu::current->thread_idx)
#define blockIdx (tgemu::current->block_idx)
#define blockDim (tgemu::current->block_dim)
#define gridDim (tgemu::current->grid_dim)

inline void __syncthreads() { tgemu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { tgemu::syncwarp(mask); }

template <typename T> inline T tgemu_shfl(unsigned mask, T v, int src, const char* what) {
    T out;
    tgemu::warp_exchange(mask, what, &v, &out, sizeof(T), src);
    return out;
}
template <typename T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int lane = static_cast<int>(threadIdx.x & 31);
    return tgemu_shfl(mask, v, (lane & ~(width - 1)) + (src & (width - 1)), "__shfl_sync");
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = static_cast<int>(threadIdx.x & 31);
    const int src = lane ^ lane_mask;
    // A source outside this lane's segment of `width` lanes gives the lane its own value.
    return tgemu_shfl(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane, "__shfl_xor_sync");
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = static_cast<int>(threadIdx.x & 31);
    const int src = lane + static_cast<int>(delta);
    return tgemu_shfl(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane, "__shfl_down_sync");
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = static_cast<int>(threadIdx.x & 31);
    const int src = lane - static_cast<int>(delta);
    return tgemu_shfl(mask, v, src >= (lane & ~(width - 1)) ? src : lane, "__shfl_up_sync");
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    return tgemu::warp_ballot(mask, "__ballot_sync", predicate != 0);
}
inline int __any_sync(unsigned mask, int predicate) {
    return (tgemu::warp_ballot(mask, "__any_sync", predicate != 0) & mask) != 0;
}
inline int __all_sync(unsigned mask, int predicate) {
    return (tgemu::warp_ballot(mask, "__all_sync", predicate != 0) & mask) == mask;
}

inline float atomicAdd(float* address, float value) { return tgemu::atomic_add(address, value); }
inline double atomicAdd(double* address, double value) { return tgemu::atomic_add(address, value); }
inline int atomicAdd(int* address, int value) { return tgemu::atomic_add(address, value); }
inline unsigned atomicAdd(unsigned* address, unsigned value) { return tgemu::atomic_add(address, value); }

inline size_t __cvta_generic_to_shared(const void* p) { return tgemu::shared_address(p); }

// --- bit casts and math ---
namespace tgemu {
template <typename To, typename From> inline To bits(From from) {
    static_assert(sizeof(To) == sizeof(From), "a bit cast keeps the size");
    To to;
    std::memcpy(&to, &from, sizeof to);
    return to;
}
}  // namespace tgemu
inline float __uint_as_float(unsigned x) { return tgemu::bits<float>(x); }
inline unsigned __float_as_uint(float f) { return tgemu::bits<unsigned>(f); }
inline float __int_as_float(int x) { return tgemu::bits<float>(x); }
inline int __float_as_int(float f) { return tgemu::bits<int>(f); }
inline double __longlong_as_double(long long x) { return tgemu::bits<double>(x); }
inline long long __double_as_longlong(double d) { return tgemu::bits<long long>(d); }
using std::exp;
using std::fabs;
using std::log;
using std::sqrt;
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
// Rounded f32 arithmetic that the compiler must not fuse (g++ here targets x86-64 without FMA, so none is).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
template <typename T> inline T __ldg(const T* p) { return *p; }
// CUDA's min and max take any two arithmetic operands, in their common type.
template <typename A, typename B> inline std::common_type_t<A, B> min(A a, B b) {
    using C = std::common_type_t<A, B>;
    return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <typename A, typename B> inline std::common_type_t<A, B> max(A a, B b) {
    using C = std::common_type_t<A, B>;
    return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}

// --- bf16 and f16: storage types with the conversions the kernels use, rounding to nearest even ---
struct __nv_bfloat16 {
    uint16_t bits;
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
struct __half {
    uint16_t bits;
};

namespace tgemu {
inline uint16_t bf16_bits_from_float(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}
// Rounds a double to float, to odd: the float nearest towards zero, with its last bit set when inexact. A second
// rounding of that float to a narrower type then equals one rounding of the double.
inline float round_to_odd(double d) {
    float f = static_cast<float>(d);
    if (static_cast<double>(f) == d || std::isnan(d)) return f;
    if (std::fabs(static_cast<double>(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);
    return __uint_as_float(__float_as_uint(f) | 1u);
}
}  // namespace tgemu

inline float __bfloat162float(__nv_bfloat16 b) { return __uint_as_float(static_cast<unsigned>(b.bits) << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {tgemu::bf16_bits_from_float(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline __nv_bfloat16 __double2bfloat16(double d) { return __float2bfloat16_rn(tgemu::round_to_odd(d)); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return {__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return {__bfloat162float(v.x), __bfloat162float(v.y)}; }

inline float __half2float(__half h) { return static_cast<float>(tgemu::bits<_Float16>(h.bits)); }
inline __half __ushort_as_half(unsigned short bits) { return {bits}; }
inline __half __float2half_rn(float f) { return {tgemu::bits<uint16_t>(static_cast<_Float16>(f))}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
// One rounding, from the double itself.
inline __half __double2half(double d) { return {tgemu::bits<uint16_t>(static_cast<_Float16>(d))}; }
