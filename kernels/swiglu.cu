// SwiGLU: y = silu(a) * b with silu(a) = a * sigmoid(a); elementwise over n elements, f32 arithmetic.
//
// Entry points (T = float for _f32, __nv_bfloat16 for _bf16; all arrays n elements, contiguous):
//
//   swiglu_fwd_<t>(const T* a, const T* b, T* y, long long n)
//   swiglu_bwd_<t>(const T* a, const T* b, const T* dy, T* da, T* db, long long n)
//     da = dy * b * s * (1 + a * (1 - s)), db = dy * silu(a), s = sigmoid(a)
//   Launch: block 256, any grid (grid-stride loops); suggested grid ceil(n / (256 * W)), W = 16 / sizeof(T).
//
// Each input element is read once and each output written once. When every pointer is 16-byte aligned, the
// first floor(n / W) * W elements move as 16-byte vectors of W elements and the tail element by element;
// otherwise everything goes element by element. Deterministic (no reductions).
#include "common.cuh"

namespace tg_swiglu {

template <typename T, int W> struct alignas(sizeof(T) * W) Pack {
    T e[W];
};

template <typename T> constexpr int kVecWidth = 16 / static_cast<int>(sizeof(T));

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<unsigned long long>(p) & 15) == 0; }

__device__ __forceinline__ float sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }

struct Forward {
    template <typename T, int W>
    __device__ __forceinline__ static void apply(long long i, const T* a, const T* b, T* y) {
        const Pack<T, W> av = *reinterpret_cast<const Pack<T, W>*>(a + i);
        const Pack<T, W> bv = *reinterpret_cast<const Pack<T, W>*>(b + i);
        Pack<T, W> yv;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const float af = tg::to_f32(av.e[k]);
            yv.e[k] = tg::from_f32<T>(af * sigmoid(af) * tg::to_f32(bv.e[k]));
        }
        *reinterpret_cast<Pack<T, W>*>(y + i) = yv;
    }
};

struct Backward {
    template <typename T, int W>
    __device__ __forceinline__ static void apply(long long i, const T* a, const T* b, const T* dy, T* da, T* db) {
        const Pack<T, W> av = *reinterpret_cast<const Pack<T, W>*>(a + i);
        const Pack<T, W> bv = *reinterpret_cast<const Pack<T, W>*>(b + i);
        const Pack<T, W> gv = *reinterpret_cast<const Pack<T, W>*>(dy + i);
        Pack<T, W> dav, dbv;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const float af = tg::to_f32(av.e[k]), bf = tg::to_f32(bv.e[k]), g = tg::to_f32(gv.e[k]);
            const float s = sigmoid(af);
            dav.e[k] = tg::from_f32<T>(g * bf * s * (1.0f + af * (1.0f - s)));
            dbv.e[k] = tg::from_f32<T>(g * (af * s));
        }
        *reinterpret_cast<Pack<T, W>*>(da + i) = dav;
        *reinterpret_cast<Pack<T, W>*>(db + i) = dbv;
    }
};

// Grid-stride sweep: vectors of W over [0, n_vec * W) when `vectorized`, then single elements up to n.
template <typename Op, typename T, typename... Ptrs>
__device__ __forceinline__ void sweep(long long n, bool vectorized, Ptrs... ptrs) {
    constexpr int W = kVecWidth<T>;
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const long long tid = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long vec_end = vectorized ? n / W * W : 0;
    for (long long v = tid; v * W < vec_end; v += stride) Op::template apply<T, W>(v * W, ptrs...);
    for (long long i = vec_end + tid; i < n; i += stride) Op::template apply<T, 1>(i, ptrs...);
}

}  // namespace tg_swiglu

#define TG_SWIGLU(SUFFIX, T)                                                                                      \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        swiglu_fwd_##SUFFIX(const T* a, const T* b, T* y, long long n) {                                          \
        using namespace tg_swiglu;                                                                                \
        sweep<Forward, T>(n, aligned16(a) && aligned16(b) && aligned16(y), a, b, y);                              \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        swiglu_bwd_##SUFFIX(const T* a, const T* b, const T* dy, T* da, T* db, long long n) {                     \
        using namespace tg_swiglu;                                                                                \
        sweep<Backward, T>(n, aligned16(a) && aligned16(b) && aligned16(dy) && aligned16(da) && aligned16(db), a, \
                           b, dy, da, db);                                                                        \
    }

TG_SWIGLU(f32, float)
TG_SWIGLU(bf16, __nv_bfloat16)
