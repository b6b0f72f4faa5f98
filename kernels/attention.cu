// Causal flash attention (FlashAttention-2 shape): bf16 storage, tensor-core matmuls, f32 accumulation.
//
// Layouts (element strides, D contiguous, every view 16-byte aligned: base pointers 16-byte aligned and every
// stride a multiple of 8 elements):
//   q, o, d_o, dq        [B, Tq, H,    D]  strides (sb, st, sh) per tensor
//   k, v, dk, dv         [B, Tk, H_kv, D]  strides (sb, st, sh) per tensor
//   lse, delta           [B, H, Tq] contiguous f32; lse is the natural-log logsumexp of each scaled score row
//   dq_accum             [B, H, Tq, D] contiguous f32 (zeroed by attention_bwd_dot_bf16)
//   dk_accum, dv_accum   [B, H, Tk, D] contiguous f32 (one slice per *query* head; summed by the reduce kernel)
// Requirements: 1 <= Tq <= Tk, H a multiple of H_kv, D in {16, 32, 64, 128}. Query i sits at position i + (Tk - Tq) and
// sees key j iff j <= i + (Tk - Tq). Query head h reads kv head h / (H / H_kv). `scale` is usually 1/sqrt(D).
//
// Entry points and launch configuration (block = 128 threads = 4 warps unless noted):
//
//   attention_fwd_d64_bf16 / attention_fwd_d128_bf16(
//       const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse,
//       int heads, int kv_heads, int q_len, int kv_len,
//       int q_sb, int q_st, int q_sh, int k_sb, int k_st, int k_sh,
//       int v_sb, int v_st, int v_sh, int o_sb, int o_st, int o_sh, float scale)
//     grid (ceil(Tq / 64), H, B), block 128, dynamic shared memory 5 * 64 * (D + 8) * 2 bytes
//     = 46,080 (d64) / 87,040 (d128); d128 needs cudaFuncAttributeMaxDynamicSharedMemorySize raised first.
//
//   attention_bwd_dot_bf16(
//       const bf16* o, const bf16* d_o, float* delta, float* dq_accum,
//       int batch, int heads, int q_len, int head_dim,
//       int o_sb, int o_st, int o_sh, int do_sb, int do_st, int do_sh)
//     one warp per (b, h, i) row: grid ceil(B * H * Tq / 4), block 128, no shared memory.
//     delta_i = sum_d dO[i, d] * O[i, d]; also zeroes the row of dq_accum.
//
//   attention_bwd_d64_bf16 / attention_bwd_d128_bf16(
//       const bf16* q, const bf16* k, const bf16* v, const bf16* d_o, const float* lse, const float* delta,
//       float* dq_accum, float* dk_accum, float* dv_accum,
//       int heads, int kv_heads, int q_len, int kv_len,
//       int q_sb, int q_st, int q_sh, int k_sb, int k_st, int k_sh,
//       int v_sb, int v_st, int v_sh, int do_sb, int do_st, int do_sh, float scale)
//     grid (ceil(Tk / 64), H, B), block 128, dynamic shared memory
//     6 * 64 * (D + 8) * 2 + 64 * 72 * 2 + 4 * 64 * 4 bytes = 65,536 (d64) / 114,688 (d128);
//     both need cudaFuncAttributeMaxDynamicSharedMemorySize raised first.
//
//   attention_bwd_dq_convert_bf16(const float* dq_accum, bf16* dq, int batch, int heads, int q_len, int head_dim,
//       int dq_sb, int dq_st, int dq_sh, float scale)
//     one thread per element: grid ceil(B * H * Tq * D / 256), block 256. dq = bf16(scale * dq_accum).
//
//   attention_bwd_dkv_reduce_bf16(const float* dk_accum, const float* dv_accum, bf16* dk, bf16* dv,
//       int batch, int heads, int kv_heads, int kv_len, int head_dim,
//       int dk_sb, int dk_st, int dk_sh, int dv_sb, int dv_st, int dv_sh)
//     one thread per element of dk (and the same element of dv): grid ceil(B * H_kv * Tk * D / 256), block 256.
//     Sums the H / H_kv query-head slices of each kv head in head order and rounds once to bf16.
//
// Backward sequence: dot -> bwd_dXX -> dq_convert and dkv_reduce (the last two are independent).
// Determinism: the forward pass, delta, dK and dV are bitwise deterministic (fixed tiling, fixed reduction
// orders, the group sum in head order). dQ is accumulated with f32 atomicAdd from every key-tile block, so its
// last bits depend on the order blocks finish: run-to-run nondeterministic in the low bits, by design.
//
// Tiling: 64 query rows x 64 keys per tile, 4 warps. Forward: warp w owns query rows [16w, 16w + 16) of its tile.
// Backward: warp w owns keys [16w, 16w + 16) of its key tile and, for dQ only, query rows [16w, 16w + 16).
// Shared-memory rows are padded by 8 bf16 (16 bytes) so the 8 row addresses of one ldmatrix hit distinct banks.
#include "common.cuh"

namespace tg_attn {

using bf16 = __nv_bfloat16;

constexpr int kBlockM = 64;  // query rows per tile
constexpr int kBlockN = 64;  // keys per tile
constexpr int kThreads = 128;
constexpr int kPad = 8;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---------------------------------------------------------------------------------------------------------------
// PTX wrappers
// ---------------------------------------------------------------------------------------------------------------

// -inf without <cmath> (NVRTC provides no INFINITY macro).
__device__ __forceinline__ float neg_inf() { return __uint_as_float(0xff800000u); }

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses L1; when `valid` is false nothing is read and the 16 destination
// bytes are zero-filled (src-size 0), which is how tails are padded.
__device__ __forceinline__ void cp_async_16(unsigned dst, const void* src, bool valid) {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0));
#else
    tgemu::cp_async(dst, src, 16, valid ? 16 : 0);
#endif
}

// 4-byte variant (for the lse / delta vectors, whose rows need not be 16-byte aligned).
__device__ __forceinline__ void cp_async_4(unsigned dst, const void* src, bool valid) {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
                 "r"(valid ? 4 : 0));
#else
    tgemu::cp_async(dst, src, 4, valid ? 4 : 0);
#endif
}

__device__ __forceinline__ void st_shared_b32(unsigned addr, unsigned v) {
#ifdef __CUDA_ARCH__
    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v));
#else
    tgemu::st_shared_b32(addr, v);
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.commit_group;\n" ::);
#else
    tgemu::cp_async_commit();
#endif
}

// Waits until at most N committed groups of this thread are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#else
    tgemu::cp_async_wait(N);
#endif
}

// ldmatrix.x4: lanes 8i..8i+7 give the addresses of the eight 16-byte rows of 8x8 matrix i; afterwards lane l
// holds, in r[i], the two bf16 of row l/4, columns 2(l%4) and 2(l%4)+1 of matrix i.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned row_addr) {
#ifdef __CUDA_ARCH__
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(row_addr));
#else
    tgemu::ldmatrix(r, 4, false, row_addr);
#endif
}

// Transposing variant: lane l holds, in r[i], rows 2(l%4) and 2(l%4)+1 of column l/4 of matrix i.
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], unsigned row_addr) {
#ifdef __CUDA_ARCH__
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(row_addr));
#else
    tgemu::ldmatrix(r, 4, true, row_addr);
#endif
}

// D += A * B for one m16n8k16 tile. Fragment layout (g = lane / 4, t = lane % 4):
//   A (16x16, row-major): a[0] = A[g][2t..2t+1],   a[1] = A[g+8][2t..2t+1],
//                         a[2] = A[g][2t+8..2t+9], a[3] = A[g+8][2t+8..2t+9]
//   B (16x8, "col"):      b0 = B[2t..2t+1][g],     b1 = B[2t+8..2t+9][g]
//   C/D (16x8, f32):      d[0..1] = C[g][2t..2t+1], d[2..3] = C[g+8][2t..2t+1]
// Each 32-bit register holds two bf16, the lower index in the low half.
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#ifdef __CUDA_ARCH__
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    tgemu::mma_m16n8k16_bf16(d, a, b0, b1);
#endif
}

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&v);
}

// The C fragments of two adjacent 16x8 accumulator tiles 2kk, 2kk+1 (columns 16kk..16kk+15) are, element for
// element, the A fragment of the 16x16 operand covering those columns: this turns P (or dS) into the next mma's A
// without touching shared memory. Rounds to bf16 here, the one place where the kernels round P and dS.
__device__ __forceinline__ void accum_to_a(unsigned (&a)[4][4], const float (&c)[8][4]) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
        a[kk][0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
        a[kk][1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
        a[kk][2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
        a[kk][3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
    }
}

// Element (n, e) of the accumulator layout, read back (as f32) from the packed A fragments built by accum_to_a.
__device__ __forceinline__ float a_element(const unsigned (&a)[4][4], int n, int e) {
    const unsigned word = a[n >> 1][(n & 1) * 2 + (e >> 1)];
    return __uint_as_float((e & 1) ? (word & 0xffff0000u) : (word << 16));
}

// ---------------------------------------------------------------------------------------------------------------
// Shared-memory tiles: 64 x D bf16, row stride D + kPad elements. The fragment loaders take the tile's 32-bit
// shared-window byte address (cheaper in registers than generic pointers).
// ---------------------------------------------------------------------------------------------------------------

template <int D> constexpr int kTileStride = D + kPad;
template <int D> constexpr int kTileBytes = kBlockM * kTileStride<D> * 2;

// Issues the copy of rows [row0, row0 + 64) of one [T, D] slice (rows `row_stride` elements apart) into `tile`;
// rows at or beyond `rows_valid` are zero-filled so padding never carries NaN into a product.
template <int D>
__device__ __forceinline__ void load_tile_async(unsigned tile, const bf16* slice, long long row_stride, int row0,
                                                int rows_valid) {
    constexpr int kChunksPerRow = D / 8;  // 16-byte chunks
#pragma unroll
    for (int c = threadIdx.x; c < kBlockM * kChunksPerRow; c += kThreads) {
        const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
        const bool valid = row0 + r < rows_valid;
        const bf16* src = valid ? slice + (row0 + r) * row_stride + col : slice;
        cp_async_16(tile + 2 * (r * kTileStride<D> + col), src, valid);
    }
}

// A fragment of rows [row0, row0 + 16), columns [col0, col0 + 16) of a row-major tile. Lane l addresses row
// row0 + l % 16 at column col0 + 8 * (l / 16): matrices 0..3 are (rows 0-7, cols 0-7), (rows 8-15, cols 0-7),
// (rows 0-7, cols 8-15), (rows 8-15, cols 8-15) = a[0..3].
template <int STRIDE>
__device__ __forceinline__ void load_a(unsigned (&a)[4], unsigned tile, int row0, int col0) {
    const int lane = threadIdx.x & 31;
    ldmatrix_x4(a, tile + 2 * ((row0 + (lane & 15)) * STRIDE + col0 + (lane >> 4) * 8));
}

// A fragment of the 16x16 block A[m][k] = tile[k0 + k][m0 + m] of a tile stored k-major (the transpose of A).
// Lane l addresses stored row k0 + 8 * (l / 16) + l % 8 at column m0 + 8 * ((l / 8) % 2): matrices are
// (k 0-7, m 0-7), (k 0-7, m 8-15), (k 8-15, m 0-7), (k 8-15, m 8-15), which after transposition are a[0..3].
template <int STRIDE>
__device__ __forceinline__ void load_a_trans(unsigned (&a)[4], unsigned tile, int k0, int m0) {
    const int lane = threadIdx.x & 31;
    ldmatrix_x4_trans(a, tile + 2 * ((k0 + (lane >> 4) * 8 + (lane & 7)) * STRIDE + m0 + ((lane >> 3) & 1) * 8));
}

// B fragments of two adjacent n8 tiles, B[k][n] = tile[n0 + n][k0 + k] (tile stored n-major, e.g. K for S = QK^T).
// Lane l addresses stored row n0 + 8 * (l / 16) + l % 8 at column k0 + 8 * ((l / 8) % 2): matrices are
// (n 0-7, k 0-7) = b0 and (n 0-7, k 8-15) = b1 of tile n0, then the same for tile n0 + 8.
template <int STRIDE>
__device__ __forceinline__ void load_b_pair(unsigned (&b)[4], unsigned tile, int n0, int k0) {
    const int lane = threadIdx.x & 31;
    ldmatrix_x4(b, tile + 2 * ((n0 + (lane >> 4) * 8 + (lane & 7)) * STRIDE + k0 + ((lane >> 3) & 1) * 8));
}

// B fragments of two adjacent n8 tiles, B[k][n] = tile[k0 + k][n0 + n] (tile stored k-major, e.g. V for O = PV).
// Lane l addresses stored row k0 + 8 * ((l / 8) % 2) + l % 8 at column n0 + 8 * (l / 16): matrices are
// (k 0-7, n 0-7) = b0, (k 8-15, n 0-7) = b1 of tile n0, then the same for tile n0 + 8; .trans hands each lane
// B[2t..2t+1][g] as the mma expects.
template <int STRIDE>
__device__ __forceinline__ void load_b_pair_trans(unsigned (&b)[4], unsigned tile, int k0, int n0) {
    const int lane = threadIdx.x & 31;
    ldmatrix_x4_trans(b, tile + 2 * ((k0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * STRIDE + n0 + (lane >> 4) * 8));
}

// acc[16 x 64] += A[16 x D] * Bt[64 x D]^T, A held as fragments, Bt an n-major shared tile (rows = the 64 columns
// of the result). Used for S = Q K^T (forward) and S^T = K Q^T, dP^T = V dO^T (backward).
template <int D>
__device__ __forceinline__ void mma_rows_x_tile_t(float (&acc)[kBlockN / 8][4], unsigned a_tile, int a_row0,
                                                  unsigned bt_tile) {
    // Kept rolled: unrolling lets ptxas hoist every k-step's ldmatrix, which spills the d128 backward kernel.
#pragma unroll 1
    for (int kk = 0; kk < D / 16; ++kk) {
        unsigned a[4];
        load_a<kTileStride<D>>(a, a_tile, a_row0, kk * 16);
#pragma unroll
        for (int np = 0; np < kBlockN / 16; ++np) {
            unsigned b[4];
            load_b_pair<kTileStride<D>>(b, bt_tile, np * 16, kk * 16);
            mma_16816(acc[2 * np], a, b[0], b[1]);
            mma_16816(acc[2 * np + 1], a, b[2], b[3]);
        }
    }
}

// acc[16 x D] += P[16 x 64] * B[64 x D]: P as packed A fragments (from accum_to_a), B a k-major shared tile.
// Used for O += P V (forward) and dV += P^T dO, dK += dS^T Q (backward).
template <int D>
__device__ __forceinline__ void mma_frags_x_tile(float (&acc)[D / 8][4], const unsigned (&p)[kBlockN / 16][4],
                                                 unsigned b_tile) {
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
            unsigned b[4];
            load_b_pair_trans<kTileStride<D>>(b, b_tile, kk * 16, dp * 16);
            mma_16816(acc[2 * dp], p[kk], b[0], b[1]);
            mma_16816(acc[2 * dp + 1], p[kk], b[2], b[3]);
        }
    }
}

// Element e of accumulator tile n sits at row g + 8 * (e / 2), column 8n + 2t + e % 2 of the warp's 16 x 64 block.
__device__ __forceinline__ int accum_row(int e) { return ((threadIdx.x & 31) >> 2) + (e >> 1) * 8; }
__device__ __forceinline__ int accum_col(int n, int e) { return n * 8 + (threadIdx.x & 3) * 2 + (e & 1); }

// Causal + tail visibility of key j to query i (positions offset by Tk - Tq).
__device__ __forceinline__ bool visible(int i, int j, int q_len, int kv_len) {
    return j <= i + (kv_len - q_len) && j < kv_len && i < q_len;
}

// The four lanes of a quad (same g) hold one row between them: butterfly over lane bits 0 and 1.
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

struct View {
    long long sb, st, sh;
    __device__ __forceinline__ long long slice(int b, int h) const { return b * sb + h * sh; }
};

// ---------------------------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------------------------

// Online-softmax state of the two rows (g and g + 8) a thread holds: running max m (log2 domain, scaled) and the
// thread's partial running sum l over its own columns (quad-reduced only at the end).
struct RowState {
    float m[2] = {neg_inf(), neg_inf()};
    float l[2] = {0.0f, 0.0f};
};

// Turns raw scores into probabilities against the updated running max and rescales l and O by exp2(m_old - m_new).
// s holds raw QK^T of key tile n0; on return it holds P in f32 (the caller rounds it to bf16 for the PV mma;
// l sums the f32 values).
template <int D>
__device__ __forceinline__ void online_softmax(float (&s)[kBlockN / 8][4], float (&o)[D / 8][4], RowState& st,
                                               int q_row0, int n0, bool needs_mask, float scale_log2, int q_len,
                                               int kv_len) {
    float tile_max[2] = {neg_inf(), neg_inf()};
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float x = s[n][e] * scale_log2;
            if (needs_mask && !visible(q_row0 + accum_row(e), n0 + accum_col(n, e), q_len, kv_len))
                x = neg_inf();
            s[n][e] = x;
            tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
        }
    }
    float alpha[2], m_use[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const float m_new = fmaxf(st.m[r], quad_max(tile_max[r]));
        m_use[r] = m_new == neg_inf() ? 0.0f : m_new;  // a row with nothing visible yet keeps p = 0, not NaN
        alpha[r] = exp2f(st.m[r] - m_use[r]);
        st.m[r] = m_new;
        st.l[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            s[n][e] = exp2f(s[n][e] - m_use[e >> 1]);
            st.l[e >> 1] += s[n][e];
        }
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) o[n][e] *= alpha[e >> 1];
    }
}

// Scaled row logsumexp (natural log) and 1/l, after the quad reduction of the thread-partial sums.
template <int D>
__device__ __forceinline__ void write_forward_outputs(const float (&acc_o)[D / 8][4], const RowState& st,
                                                      bf16* o_slice, long long o_row_stride, float* lse_rows,
                                                      int q_row0, int q_len) {
    float inv_l[2], lse_row[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const float l = quad_sum(st.l[r]);
        inv_l[r] = 1.0f / l;
        lse_row[r] = (st.m[r] + log2f(l)) * kLn2;
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = q_row0 + accum_row(2 * r);
        if (i >= q_len) continue;
        bf16* o_row = o_slice + i * o_row_stride;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            *reinterpret_cast<__nv_bfloat162*>(o_row + accum_col(n, 0)) =
                __floats2bfloat162_rn(acc_o[n][2 * r] * inv_l[r], acc_o[n][2 * r + 1] * inv_l[r]);
        }
        if ((threadIdx.x & 3) == 0) lse_rows[i] = lse_row[r];
    }
}

template <int D>
__device__ __forceinline__ void attention_fwd(const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse,
                                              int heads, int kv_heads, int q_len, int kv_len, View qv, View kv,
                                              View vv, View ov, float scale) {
    TG_DYNAMIC_SHARED(smem);
    const unsigned q_tile = smem_addr(smem);
    const unsigned k_tiles = q_tile + kTileBytes<D>;       // two buffers
    const unsigned v_tiles = k_tiles + 2 * kTileBytes<D>;  // two buffers

    const int m0 = (gridDim.x - 1 - blockIdx.x) * kBlockM;  // the longest (last) query tiles are scheduled first
    const int h = blockIdx.y, b = blockIdx.z, h_kv = h / (heads / kv_heads);
    const int warp = threadIdx.x >> 5;
    const int offset = kv_len - q_len;
    const bf16* q_slice = q + qv.slice(b, h);
    const bf16* k_slice = k + kv.slice(b, h_kv);
    const bf16* v_slice = v + vv.slice(b, h_kv);

    // The last query row of the tile sees keys [0, kv_end); key tiles past it are never loaded.
    const int kv_end = min(kv_len, min(m0 + kBlockM, q_len) + offset);
    const int n_tiles = (kv_end + kBlockN - 1) / kBlockN;

    load_tile_async<D>(q_tile, q_slice, qv.st, m0, q_len);
    load_tile_async<D>(k_tiles, k_slice, kv.st, 0, kv_len);
    load_tile_async<D>(v_tiles, v_slice, vv.st, 0, kv_len);
    cp_async_commit();

    float acc_o[D / 8][4] = {};
    RowState st;
    const float scale_log2 = scale * kLog2e;
    for (int j = 0; j < n_tiles; ++j) {
        const int n0 = j * kBlockN;
        const unsigned k_tile = k_tiles + (j & 1) * kTileBytes<D>;
        const unsigned v_tile = v_tiles + (j & 1) * kTileBytes<D>;
        if (j + 1 < n_tiles) {  // prefetch tile j + 1 into the other buffer while tile j is consumed
            load_tile_async<D>(k_tiles + ((j + 1) & 1) * kTileBytes<D>, k_slice, kv.st, n0 + kBlockN, kv_len);
            load_tile_async<D>(v_tiles + ((j + 1) & 1) * kTileBytes<D>, v_slice, vv.st, n0 + kBlockN, kv_len);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        float s[kBlockN / 8][4] = {};
        mma_rows_x_tile_t<D>(s, q_tile, warp * 16, k_tile);
        // Only tiles crossing the diagonal (or the key tail) contain an invisible key for some row.
        const bool needs_mask = n0 + kBlockN > kv_len || n0 + kBlockN - 1 > m0 + offset;
        online_softmax<D>(s, acc_o, st, m0 + warp * 16, n0, needs_mask, scale_log2, q_len, kv_len);
        unsigned p[kBlockN / 16][4];
        accum_to_a(p, s);
        mma_frags_x_tile<D>(acc_o, p, v_tile);
        __syncthreads();  // the next iteration's prefetch overwrites this tile's buffers
    }
    write_forward_outputs<D>(acc_o, st, o + ov.slice(b, h), ov.st, lse + (static_cast<long long>(b) * heads + h) * q_len,
                             m0 + warp * 16, q_len);
}

// ---------------------------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------------------------

constexpr int kDsStride = kBlockM + kPad;  // dS^T tile: 64 keys x 64 queries (+ pad) bf16

// Shared-memory carve-up of the backward block: bf16 tiles as shared-window byte addresses, the two f32 row
// vectors as pointers (read element-wise).
template <int D> struct BwdSmem {
    static constexpr int kDsBytes = kBlockN * kDsStride * 2;
    unsigned k_tile, v_tile;
    unsigned q_tiles, do_tiles;  // two buffers each
    unsigned ds_tile;
    float* lse;    // two buffers of 64
    float* delta;  // two buffers of 64

    __device__ __forceinline__ explicit BwdSmem(unsigned char* base) {
        k_tile = smem_addr(base);
        v_tile = k_tile + kTileBytes<D>;
        q_tiles = v_tile + kTileBytes<D>;
        do_tiles = q_tiles + 2 * kTileBytes<D>;
        ds_tile = do_tiles + 2 * kTileBytes<D>;
        lse = reinterpret_cast<float*>(base + 6 * kTileBytes<D> + kDsBytes);
        delta = lse + 2 * kBlockM;
    }
};

// Issues the copies of query tile m0 (Q, dO, lse, delta rows) into buffer `buf`.
template <int D>
__device__ __forceinline__ void load_query_tile_async(const BwdSmem<D>& sm, int buf, const bf16* q_slice, View qv,
                                                      const bf16* do_slice, View dov, const float* lse_rows,
                                                      const float* delta_rows, int m0, int q_len) {
    load_tile_async<D>(sm.q_tiles + buf * kTileBytes<D>, q_slice, qv.st, m0, q_len);
    load_tile_async<D>(sm.do_tiles + buf * kTileBytes<D>, do_slice, dov.st, m0, q_len);
    const int r = threadIdx.x & (kBlockM - 1);
    const bool valid = m0 + r < q_len;
    if (threadIdx.x < kBlockM)
        cp_async_4(smem_addr(sm.lse + buf * kBlockM + r), valid ? lse_rows + m0 + r : lse_rows, valid);
    else
        cp_async_4(smem_addr(sm.delta + buf * kBlockM + r), valid ? delta_rows + m0 + r : delta_rows, valid);
}

// S^T (16 keys x 64 queries) -> P^T = exp2(S^T * scale * log2e - lse * log2e); invisible pairs get 0.
__device__ __forceinline__ void probabilities_t(float (&s)[kBlockM / 8][4], const float* lse_tile, int key0,
                                                int m0, float scale_log2, int q_len, int kv_len) {
#pragma unroll
    for (int n = 0; n < kBlockM / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int col = accum_col(n, e);
            const float p = exp2f(fmaf(s[n][e], scale_log2, -lse_tile[col] * kLog2e));
            s[n][e] = visible(m0 + col, key0 + accum_row(e), q_len, kv_len) ? p : 0.0f;
        }
    }
}

// dP^T -> dS^T = P^T o (dP^T - delta[query]) (gradient w.r.t. the scaled scores; `scale` is applied later).
// P^T is read back from its bf16 fragments: keeping P only in bf16 is what lets the d128 kernel fit in 255
// registers without spilling.
__device__ __forceinline__ void scores_grad_t(float (&dp)[kBlockM / 8][4], const unsigned (&p)[kBlockM / 16][4],
                                              const float* delta_tile) {
#pragma unroll
    for (int n = 0; n < kBlockM / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) dp[n][e] = a_element(p, n, e) * (dp[n][e] - delta_tile[accum_col(n, e)]);
    }
}

// Stores this warp's 16 rows of dS^T (the bf16 fragments its dK mma consumed) for the dQ product: fragment word
// a[kk][r] covers row g + 8 (r & 1), columns 16kk + 8 (r >> 1) + 2t and +1.
__device__ __forceinline__ void store_ds_t(unsigned ds_tile, const unsigned (&ds)[kBlockM / 16][4]) {
    const int row0 = (threadIdx.x >> 5) * 16;
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            st_shared_b32(ds_tile + 2 * ((row0 + accum_row(2 * (r & 1))) * kDsStride + accum_col(2 * kk + (r >> 1), 0)),
                          ds[kk][r]);
        }
    }
}

// dQ rows [16w, 16w + 16) of the query tile += dS (16 x 64 keys) K (64 x D), added into dq_accum with atomics;
// processed 16 columns at a time to keep registers for the dK / dV accumulators.
template <int D>
__device__ __forceinline__ void accumulate_dq(float* dq_rows, unsigned ds_tile, unsigned k_tile,
                                              int rows_valid) {
    const int row0 = (threadIdx.x >> 5) * 16;
    unsigned a[kBlockN / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) load_a_trans<kDsStride>(a[kk], ds_tile, kk * 16, row0);
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
        float acc[2][4] = {};
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
            unsigned b[4];
            load_b_pair_trans<kTileStride<D>>(b, k_tile, kk * 16, dp * 16);
            mma_16816(acc[0], a[kk], b[0], b[1]);
            mma_16816(acc[1], a[kk], b[2], b[3]);
        }
#pragma unroll
        for (int half = 0; half < 2; ++half) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = row0 + accum_row(e);
                if (row < rows_valid) atomicAdd(dq_rows + row * D + accum_col(2 * dp + half, e), acc[half][e]);
            }
        }
    }
}

// Writes the warp's 16 key rows of an f32 accumulator (times `factor`) into a [Tk, D] f32 slice.
template <int D>
__device__ __forceinline__ void write_key_rows(float* slice, const float (&acc)[D / 8][4], int key0, int kv_len,
                                               float factor) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int key = key0 + accum_row(2 * r);
        if (key >= kv_len) continue;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            *reinterpret_cast<float2*>(slice + static_cast<long long>(key) * D + accum_col(n, 0)) =
                make_float2(acc[n][2 * r] * factor, acc[n][2 * r + 1] * factor);
        }
    }
}

template <int D>
__device__ __forceinline__ void attention_bwd(const bf16* q, const bf16* k, const bf16* v, const bf16* d_o,
                                              const float* lse, const float* delta, float* dq_accum,
                                              float* dk_accum, float* dv_accum, int heads, int kv_heads, int q_len,
                                              int kv_len, View qv, View kv, View vv, View dov, float scale) {
    TG_DYNAMIC_SHARED(smem);
    const BwdSmem<D> sm(smem);

    const int n0 = blockIdx.x * kBlockN;
    const int h = blockIdx.y, b = blockIdx.z, h_kv = h / (heads / kv_heads);
    const int warp = threadIdx.x >> 5;
    const int key0 = n0 + warp * 16;  // first key of this warp's rows
    const long long bh = static_cast<long long>(b) * heads + h;
    const bf16* q_slice = q + qv.slice(b, h);
    const bf16* do_slice = d_o + dov.slice(b, h);
    const float* lse_rows = lse + bh * q_len;
    const float* delta_rows = delta + bh * q_len;

    // Query i sees key n0 iff i >= n0 - (Tk - Tq): earlier query tiles contribute nothing and are skipped.
    const int m_first = max(0, n0 - (kv_len - q_len)) / kBlockM;
    const int m_tiles = (q_len + kBlockM - 1) / kBlockM;

    load_tile_async<D>(sm.k_tile, k + kv.slice(b, h_kv), kv.st, n0, kv_len);
    load_tile_async<D>(sm.v_tile, v + vv.slice(b, h_kv), vv.st, n0, kv_len);
    load_query_tile_async<D>(sm, 0, q_slice, qv, do_slice, dov, lse_rows, delta_rows, m_first * kBlockM, q_len);
    cp_async_commit();

    float acc_dk[D / 8][4] = {}, acc_dv[D / 8][4] = {};
    const float scale_log2 = scale * kLog2e;
    for (int mb = m_first; mb < m_tiles; ++mb) {
        const int buf = (mb - m_first) & 1, m0 = mb * kBlockM;
        if (mb + 1 < m_tiles) {  // prefetch the next query tile into the other buffer
            load_query_tile_async<D>(sm, buf ^ 1, q_slice, qv, do_slice, dov, lse_rows, delta_rows, m0 + kBlockM,
                                     q_len);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const unsigned q_tile = sm.q_tiles + buf * kTileBytes<D>;
        const unsigned do_tile = sm.do_tiles + buf * kTileBytes<D>;

        unsigned p[kBlockM / 16][4];
        {
            float s[kBlockM / 8][4] = {};
            mma_rows_x_tile_t<D>(s, sm.k_tile, warp * 16, q_tile);  // S^T = K Q^T
            probabilities_t(s, sm.lse + buf * kBlockM, key0, m0, scale_log2, q_len, kv_len);
            accum_to_a(p, s);
        }
        mma_frags_x_tile<D>(acc_dv, p, do_tile);  // dV += P^T dO

        unsigned ds[kBlockM / 16][4];
        {
            float dp[kBlockM / 8][4] = {};
            mma_rows_x_tile_t<D>(dp, sm.v_tile, warp * 16, do_tile);  // dP^T = V dO^T
            scores_grad_t(dp, p, sm.delta + buf * kBlockM);
            accum_to_a(ds, dp);
        }
        mma_frags_x_tile<D>(acc_dk, ds, q_tile);  // dK += dS^T Q
        store_ds_t(sm.ds_tile, ds);
        __syncthreads();

        accumulate_dq<D>(dq_accum + (bh * q_len + m0) * D, sm.ds_tile, sm.k_tile, q_len - m0);
        __syncthreads();  // the next prefetch and dS store overwrite what this iteration read
    }
    write_key_rows<D>(dk_accum + bh * kv_len * D, acc_dk, key0, kv_len, scale);
    write_key_rows<D>(dv_accum + bh * kv_len * D, acc_dv, key0, kv_len, 1.0f);
}

}  // namespace tg_attn

// ---------------------------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------------------------

#define TG_ATTN_FWD(NAME, D)                                                                                       \
    extern "C" __global__ void __launch_bounds__(tg_attn::kThreads) NAME(                                          \
        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* o, float* lse,       \
        int heads, int kv_heads, int q_len, int kv_len, int q_sb, int q_st, int q_sh, int k_sb, int k_st,           \
        int k_sh, int v_sb, int v_st, int v_sh, int o_sb, int o_st, int o_sh, float scale) {                       \
        tg_attn::attention_fwd<D>(q, k, v, o, lse, heads, kv_heads, q_len, kv_len, {q_sb, q_st, q_sh},            \
                                  {k_sb, k_st, k_sh}, {v_sb, v_st, v_sh}, {o_sb, o_st, o_sh}, scale);              \
    }

TG_ATTN_FWD(attention_fwd_d16_bf16, 16)
TG_ATTN_FWD(attention_fwd_d32_bf16, 32)
TG_ATTN_FWD(attention_fwd_d64_bf16, 64)
TG_ATTN_FWD(attention_fwd_d128_bf16, 128)

#define TG_ATTN_BWD(NAME, D)                                                                                       \
    extern "C" __global__ void __launch_bounds__(tg_attn::kThreads) NAME(                                          \
        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* d_o,           \
        const float* lse, const float* delta, float* dq_accum, float* dk_accum, float* dv_accum, int heads,         \
        int kv_heads, int q_len, int kv_len, int q_sb, int q_st, int q_sh, int k_sb, int k_st, int k_sh, int v_sb,  \
        int v_st, int v_sh, int do_sb, int do_st, int do_sh, float scale) {                                        \
        tg_attn::attention_bwd<D>(q, k, v, d_o, lse, delta, dq_accum, dk_accum, dv_accum, heads, kv_heads, q_len,  \
                                  kv_len, {q_sb, q_st, q_sh}, {k_sb, k_st, k_sh}, {v_sb, v_st, v_sh},              \
                                  {do_sb, do_st, do_sh}, scale);                                                   \
    }

TG_ATTN_BWD(attention_bwd_d16_bf16, 16)
TG_ATTN_BWD(attention_bwd_d32_bf16, 32)
TG_ATTN_BWD(attention_bwd_d64_bf16, 64)
TG_ATTN_BWD(attention_bwd_d128_bf16, 128)

// delta_i = sum_d dO[i, d] O[i, d]; lane l accumulates columns 2l, 2l + 1, 2l + 64, ... in that order, then a
// butterfly warp sum. Also zeroes the row of dq_accum the backward kernel accumulates into.
extern "C" __global__ void __launch_bounds__(128)
    attention_bwd_dot_bf16(const __nv_bfloat16* o, const __nv_bfloat16* d_o, float* delta, float* dq_accum,
                           int batch, int heads, int q_len, int head_dim, int o_sb, int o_st, int o_sh, int do_sb,
                           int do_st, int do_sh) {
    const long long row = static_cast<long long>(blockIdx.x) * 4 + (threadIdx.x >> 5);
    if (row >= static_cast<long long>(batch) * heads * q_len) return;  // whole warps leave together
    const int lane = threadIdx.x & 31;
    const int i = static_cast<int>(row % q_len);
    const int h = static_cast<int>((row / q_len) % heads), b = static_cast<int>(row / q_len / heads);
    const __nv_bfloat16* o_row = o + static_cast<long long>(b) * o_sb + static_cast<long long>(i) * o_st +
                                 static_cast<long long>(h) * o_sh;
    const __nv_bfloat16* do_row = d_o + static_cast<long long>(b) * do_sb + static_cast<long long>(i) * do_st +
                                  static_cast<long long>(h) * do_sh;
    float* dq_row = dq_accum + row * head_dim;
    float acc = 0.0f;
    for (int d = 2 * lane; d < head_dim; d += 64) {
        const float2 ov = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(o_row + d));
        const float2 gv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(do_row + d));
        acc = fmaf(gv.x, ov.x, acc);
        acc = fmaf(gv.y, ov.y, acc);
        *reinterpret_cast<float2*>(dq_row + d) = make_float2(0.0f, 0.0f);
    }
    acc = tg::warp_sum(acc);
    if (lane == 0) delta[row] = acc;
}

// dq[b, i, h, :] = bf16(scale * dq_accum[b, h, i, :]).
extern "C" __global__ void __launch_bounds__(256)
    attention_bwd_dq_convert_bf16(const float* dq_accum, __nv_bfloat16* dq, int batch, int heads, int q_len,
                                  int head_dim, int dq_sb, int dq_st, int dq_sh, float scale) {
    const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<long long>(batch) * heads * q_len * head_dim) return;
    const int d = static_cast<int>(idx % head_dim);
    const long long row = idx / head_dim;  // (b, h, i)
    const int i = static_cast<int>(row % q_len);
    const int h = static_cast<int>((row / q_len) % heads), b = static_cast<int>(row / q_len / heads);
    dq[static_cast<long long>(b) * dq_sb + static_cast<long long>(i) * dq_st + static_cast<long long>(h) * dq_sh + d] =
        __float2bfloat16_rn(dq_accum[idx] * scale);
}

// dk[b, j, g, :] = bf16(sum over the query heads h of kv head g, in order, of dk_accum[b, h, j, :]); same for dv.
extern "C" __global__ void __launch_bounds__(256)
    attention_bwd_dkv_reduce_bf16(const float* dk_accum, const float* dv_accum, __nv_bfloat16* dk,
                                  __nv_bfloat16* dv, int batch, int heads, int kv_heads, int kv_len, int head_dim,
                                  int dk_sb, int dk_st, int dk_sh, int dv_sb, int dv_st, int dv_sh) {
    const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<long long>(batch) * kv_heads * kv_len * head_dim) return;
    const int d = static_cast<int>(idx % head_dim);
    const int j = static_cast<int>((idx / head_dim) % kv_len);
    const int g = static_cast<int>((idx / head_dim / kv_len) % kv_heads);
    const int b = static_cast<int>(idx / head_dim / kv_len / kv_heads);
    const int group = heads / kv_heads;
    float sum_k = 0.0f, sum_v = 0.0f;
    for (int r = 0; r < group; ++r) {
        const long long src = ((static_cast<long long>(b) * heads + g * group + r) * kv_len + j) * head_dim + d;
        sum_k += dk_accum[src];
        sum_v += dv_accum[src];
    }
    dk[static_cast<long long>(b) * dk_sb + static_cast<long long>(j) * dk_st + static_cast<long long>(g) * dk_sh + d] =
        __float2bfloat16_rn(sum_k);
    dv[static_cast<long long>(b) * dv_sb + static_cast<long long>(j) * dv_st + static_cast<long long>(g) * dv_sh + d] =
        __float2bfloat16_rn(sum_v);
}
