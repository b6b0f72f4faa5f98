// Embedding gather and its scatter-add backward (`ops::embedding`), T = float or double.
//
// Entry points (t = f32, f64; ids are u32, checked < V on the host):
//
//   embedding_fwd_<t>(const T* w, const unsigned* ids, T* y, long long n_ids, int dim)
//     y[k, c] = w[ids[k], c]; w [V, dim] and y [n_ids, dim] contiguous. Any 1-D grid, any block size.
//
//   embedding_bwd_<t>(const T* g, const unsigned* uniq, const unsigned* starts, const unsigned* positions,
//                     T* dw, int n_uniq, int dim)
//     Deterministic scatter-add without atomics: the host groups the positions of each distinct id (uniq[u],
//     its positions positions[starts[u] .. starts[u + 1]], ascending). Block (u, cy) sums, for columns
//     c = cy * blockDim.x + threadIdx.x, g[p, c] over those positions in ascending order, starting from 0 (the
//     CPU's order, so the result is bit-identical to it), and writes dw[uniq[u], c]. Rows of dw whose id never
//     occurs are left alone (the host zero-fills dw). grid (n_uniq, ceil(dim / blockDim.x)), any block size.
#include "common.cuh"

namespace tg_embedding {

template <typename T>
__device__ __forceinline__ void fwd(const T* __restrict__ w, const unsigned* __restrict__ ids, T* __restrict__ y,
                                    long long n_ids, int dim) {
    const long long n = n_ids * dim;
    for (long long i = tg::global_thread(); i < n; i += tg::grid_threads()) {
        const long long k = i / dim, c = i - k * dim;
        y[i] = w[static_cast<long long>(ids[k]) * dim + c];
    }
}

template <typename T>
__device__ __forceinline__ void bwd(const T* __restrict__ g, const unsigned* __restrict__ uniq,
                                    const unsigned* __restrict__ starts, const unsigned* __restrict__ positions,
                                    T* __restrict__ dw, int n_uniq, int dim) {
    const int u = blockIdx.x;
    const long long c = static_cast<long long>(blockIdx.y) * blockDim.x + threadIdx.x;
    if (u >= n_uniq || c >= dim) return;
    T acc = T(0);
    for (unsigned k = starts[u]; k < starts[u + 1]; ++k) acc += g[static_cast<long long>(positions[k]) * dim + c];
    dw[static_cast<long long>(uniq[u]) * dim + c] = acc;
}

}  // namespace tg_embedding

extern "C" __global__ void embedding_fwd_f32(const float* w, const unsigned* ids, float* y, long long n_ids, int dim) {
    tg_embedding::fwd<float>(w, ids, y, n_ids, dim);
}
extern "C" __global__ void embedding_fwd_f64(const double* w, const unsigned* ids, double* y, long long n_ids,
                                             int dim) {
    tg_embedding::fwd<double>(w, ids, y, n_ids, dim);
}
extern "C" __global__ void embedding_bwd_f32(const float* g, const unsigned* uniq, const unsigned* starts,
                                             const unsigned* positions, float* dw, int n_uniq, int dim) {
    tg_embedding::bwd<float>(g, uniq, starts, positions, dw, n_uniq, dim);
}
extern "C" __global__ void embedding_bwd_f64(const double* g, const unsigned* uniq, const unsigned* starts,
                                             const unsigned* positions, double* dw, int n_uniq, int dim) {
    tg_embedding::bwd<double>(g, uniq, starts, positions, dw, n_uniq, dim);
}
