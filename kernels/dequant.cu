// Dequantization of ggml block formats (`backend::QuantMatrix` on a GPU): the frozen weight's blocks, uploaded
// once, expanded to f32 or bf16 into a buffer that the product with the activations (cuBLAS) then reads.
//
// Entry points (fmt = q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k; t = f32, bf16):
//
//   dequant_<fmt>_<t>(const unsigned char* src, T* dst, long long n_blocks)
//     Block b of `src` (ggml's layout, blocks back to back) becomes elements b·B .. b·B + B of `dst`
//     (B = 32, or 256 for the K formats). One thread per block, grid-stride; any 1-D grid and block size.
//
// Each element is computed exactly as the CPU kernels of `io::quant` compute it, one block at a time (the CPU
// twin): the f16 scales widened exactly, then a multiply and an add or subtract, each rounded to f32 and
// never fused (`__fmul_rn`, `__fadd_rn`, `__fsub_rn`), so f32 results are the CPU's bits, and bf16 results
// the CPU's rounded to nearest even.
#include "common.cuh"

namespace tg_dequant {

// The little-endian f16 at `p` (any alignment), widened to f32.
__device__ __forceinline__ float f16_at(const unsigned char* p) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(p[0] | (p[1] << 8))));
}

// The little-endian u32 at `p` (any alignment).
__device__ __forceinline__ unsigned u32_at(const unsigned char* p) {
    return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<unsigned>(p[3]) << 24);
}

// The 6-bit scale and min of sub-block j (0..8) packed in the 12 scale bytes of Q4_K / Q5_K.
__device__ __forceinline__ void k_scale_min(int j, const unsigned char* s, float& sc, float& m) {
    if (j < 4) {
        sc = static_cast<float>(s[j] & 63);
        m = static_cast<float>(s[j + 4] & 63);
    } else {
        sc = static_cast<float>((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
        m = static_cast<float>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

// Q8_0: f16 d, 32 × i8 q; x = d·q.
template <typename T> __device__ __forceinline__ void q8_0(const unsigned char* b, T* y) {
    const float d = f16_at(b);
    for (int j = 0; j < 32; ++j) y[j] = tg::from_f32<T>(__fmul_rn(d, static_cast<float>(static_cast<signed char>(b[2 + j]))));
}

// Q4_0: f16 d, 16 bytes of nibbles (low nibbles are elements 0..16, high 16..32); x = d·(q − 8).
template <typename T> __device__ __forceinline__ void q4_0(const unsigned char* b, T* y) {
    const float d = f16_at(b);
    for (int j = 0; j < 16; ++j) {
        const unsigned q = b[2 + j];
        y[j] = tg::from_f32<T>(__fmul_rn(d, __fsub_rn(static_cast<float>(q & 0x0f), 8.0f)));
        y[j + 16] = tg::from_f32<T>(__fmul_rn(d, __fsub_rn(static_cast<float>(q >> 4), 8.0f)));
    }
}

// Q4_1: f16 d, f16 m, 16 bytes of nibbles as Q4_0; x = d·q + m.
template <typename T> __device__ __forceinline__ void q4_1(const unsigned char* b, T* y) {
    const float d = f16_at(b), m = f16_at(b + 2);
    for (int j = 0; j < 16; ++j) {
        const unsigned q = b[4 + j];
        y[j] = tg::from_f32<T>(__fadd_rn(__fmul_rn(d, static_cast<float>(q & 0x0f)), m));
        y[j + 16] = tg::from_f32<T>(__fadd_rn(__fmul_rn(d, static_cast<float>(q >> 4)), m));
    }
}

// Q5_0: f16 d, u32 qh (bit j: the fifth bit of element j), 16 bytes of nibbles; x = d·(q − 16).
template <typename T> __device__ __forceinline__ void q5_0(const unsigned char* b, T* y) {
    const float d = f16_at(b);
    const unsigned qh = u32_at(b + 2);
    for (int j = 0; j < 16; ++j) {
        const unsigned q = b[6 + j];
        const unsigned lo = (q & 0x0f) | (((qh >> j) & 1u) << 4), hi = (q >> 4) | (((qh >> (j + 16)) & 1u) << 4);
        y[j] = tg::from_f32<T>(__fmul_rn(d, __fsub_rn(static_cast<float>(lo), 16.0f)));
        y[j + 16] = tg::from_f32<T>(__fmul_rn(d, __fsub_rn(static_cast<float>(hi), 16.0f)));
    }
}

// Q5_1: f16 d, f16 m, u32 qh, 16 bytes of nibbles; x = d·q + m.
template <typename T> __device__ __forceinline__ void q5_1(const unsigned char* b, T* y) {
    const float d = f16_at(b), m = f16_at(b + 2);
    const unsigned qh = u32_at(b + 4);
    for (int j = 0; j < 16; ++j) {
        const unsigned q = b[8 + j];
        const unsigned lo = (q & 0x0f) | (((qh >> j) & 1u) << 4), hi = (q >> 4) | (((qh >> (j + 16)) & 1u) << 4);
        y[j] = tg::from_f32<T>(__fadd_rn(__fmul_rn(d, static_cast<float>(lo)), m));
        y[j + 16] = tg::from_f32<T>(__fadd_rn(__fmul_rn(d, static_cast<float>(hi)), m));
    }
}

// Q4_K (FIVE = false) and Q5_K (FIVE = true): super-blocks of 256 = f16 d, f16 dmin, 12 bytes of 6-bit scales
// and mins, (Q5_K: 32 bytes qh,) 128 bytes of nibbles. 64-element group i uses 32 bytes: low nibbles with
// sub-block 2i, high with 2i + 1; Q5_K's fifth bit of element l is bit 2i (low) or 2i + 1 (high) of qh[l].
// x = (d·sc)·q − dmin·m.
template <typename T, bool FIVE> __device__ __forceinline__ void qk(const unsigned char* b, T* y) {
    const float d = f16_at(b), dmin = f16_at(b + 2);
    const unsigned char* scales = b + 4;
    const unsigned char* qh = b + 16;
    const unsigned char* qs = b + (FIVE ? 48 : 16);
    for (int i = 0; i < 4; ++i) {
        float sc1, m1, sc2, m2;
        k_scale_min(2 * i, scales, sc1, m1);
        k_scale_min(2 * i + 1, scales, sc2, m2);
        const float d1 = __fmul_rn(d, sc1), n1 = __fmul_rn(dmin, m1);
        const float d2 = __fmul_rn(d, sc2), n2 = __fmul_rn(dmin, m2);
        for (int l = 0; l < 32; ++l) {
            const unsigned q = qs[32 * i + l];
            unsigned lo = q & 0x0f, hi = q >> 4;
            if (FIVE) {
                lo |= ((qh[l] >> (2 * i)) & 1u) << 4;
                hi |= ((qh[l] >> (2 * i + 1)) & 1u) << 4;
            }
            y[64 * i + l] = tg::from_f32<T>(__fsub_rn(__fmul_rn(d1, static_cast<float>(lo)), n1));
            y[64 * i + 32 + l] = tg::from_f32<T>(__fsub_rn(__fmul_rn(d2, static_cast<float>(hi)), n2));
        }
    }
}

// Q6_K: super-blocks of 256 = 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 × i8 scales, f16 d;
// x = (d·scale)·(q − 32), in two halves of 128 elements.
template <typename T> __device__ __forceinline__ void q6_k(const unsigned char* b, T* y) {
    const float d = f16_at(b + 208);
    for (int half = 0; half < 2; ++half) {
        const unsigned char* ql = b + half * 64;
        const unsigned char* qh = b + 128 + half * 32;
        const unsigned char* sc = b + 192 + half * 8;
        T* out = y + half * 128;
        for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q[4] = {
                static_cast<int>((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32,
                static_cast<int>((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32,
                static_cast<int>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32,
                static_cast<int>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32,
            };
            for (int k = 0; k < 4; ++k) {
                const float s = __fmul_rn(d, static_cast<float>(static_cast<signed char>(sc[is + 2 * k])));
                out[l + 32 * k] = tg::from_f32<T>(__fmul_rn(s, static_cast<float>(q[k])));
            }
        }
    }
}

// Runs `f(block b, its output)` for every block, one thread per block.
template <int ELEMS, int BYTES, typename T, typename F>
__device__ __forceinline__ void each_block(const unsigned char* src, T* dst, long long n_blocks, F f) {
    for (long long b = tg::global_thread(); b < n_blocks; b += tg::grid_threads()) f(src + b * BYTES, dst + b * ELEMS);
}

}  // namespace tg_dequant

#define TG_DEQUANT(fmt, ELEMS, BYTES, body)                                                                         \
    extern "C" __global__ void dequant_##fmt##_f32(const unsigned char* src, float* dst, long long n_blocks) {     \
        tg_dequant::each_block<ELEMS, BYTES>(src, dst, n_blocks,                                                    \
                                             [](const unsigned char* b, float* y) { body<float>(b, y); });         \
    }                                                                                                               \
    extern "C" __global__ void dequant_##fmt##_bf16(const unsigned char* src, __nv_bfloat16* dst,                 \
                                                    long long n_blocks) {                                           \
        tg_dequant::each_block<ELEMS, BYTES>(                                                                       \
            src, dst, n_blocks, [](const unsigned char* b, __nv_bfloat16* y) { body<__nv_bfloat16>(b, y); });    \
    }

TG_DEQUANT(q8_0, 32, 34, tg_dequant::q8_0)
TG_DEQUANT(q4_0, 32, 18, tg_dequant::q4_0)
TG_DEQUANT(q4_1, 32, 20, tg_dequant::q4_1)
TG_DEQUANT(q5_0, 32, 22, tg_dequant::q5_0)
TG_DEQUANT(q5_1, 32, 24, tg_dequant::q5_1)
TG_DEQUANT(q6_k, 256, 210, tg_dequant::q6_k)

namespace tg_dequant {
template <typename T> __device__ __forceinline__ void q4_k(const unsigned char* b, T* y) { qk<T, false>(b, y); }
template <typename T> __device__ __forceinline__ void q5_k(const unsigned char* b, T* y) { qk<T, true>(b, y); }
}  // namespace tg_dequant

TG_DEQUANT(q4_k, 256, 144, tg_dequant::q4_k)
TG_DEQUANT(q5_k, 256, 176, tg_dequant::q5_k)
