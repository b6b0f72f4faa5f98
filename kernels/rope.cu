// Rotary position embeddings, rotate-half convention (`ops::rope`), T = float or double.
//
// Entry points (t = f32, f64):
//
//   rope_<t>(const T* x, T* y, const double* cos, const double* sin, long long n_pairs, int t_len, int heads,
//            int half, long long start_pos, double sign)
//     x, y: [B, T, H, 2 * half] contiguous; cos, sin: the f64 tables [max_len, half]. For every pair
//     p < n_pairs = B * T * H * half, with i = p % half, row r = p / half (a (b, t, h) head vector), t = (r / H) % T,
//     pos = start_pos + t: c = cos[pos, i], s = sign * sin[pos, i] (both rounded to T, as the CPU does), and
//     y[r, i] = x1 * c - x2 * s, y[r, i + half] = x2 * c + x1 * s with x1 = x[r, i], x2 = x[r, i + half].
//     sign = 1 forward, -1 for the backward (the inverse rotation). Any 1-D grid, any block size.
#include "common.cuh"

namespace tg_rope {

template <typename T>
__device__ __forceinline__ void rope(const T* __restrict__ x, T* __restrict__ y, const double* __restrict__ cos_t,
                                     const double* __restrict__ sin_t, long long n_pairs, int t_len, int heads,
                                     int half, long long start_pos, double sign) {
    for (long long p = tg::global_thread(); p < n_pairs; p += tg::grid_threads()) {
        const long long r = p / half, i = p - r * half;
        const long long t = (r / heads) % t_len;
        const long long table = (start_pos + t) * half + i;
        const T c = static_cast<T>(cos_t[table]), s = static_cast<T>(sign * sin_t[table]);
        const long long at = r * 2 * half + i;
        const T x1 = x[at], x2 = x[at + half];
        y[at] = x1 * c - x2 * s;
        y[at + half] = x2 * c + x1 * s;
    }
}

}  // namespace tg_rope

extern "C" __global__ void rope_f32(const float* x, float* y, const double* cos_t, const double* sin_t,
                                    long long n_pairs, int t_len, int heads, int half, long long start_pos,
                                    double sign) {
    tg_rope::rope<float>(x, y, cos_t, sin_t, n_pairs, t_len, heads, half, start_pos, sign);
}
extern "C" __global__ void rope_f64(const double* x, double* y, const double* cos_t, const double* sin_t,
                                    long long n_pairs, int t_len, int heads, int half, long long start_pos,
                                    double sign) {
    tg_rope::rope<double>(x, y, cos_t, sin_t, n_pairs, t_len, heads, half, start_pos, sign);
}
