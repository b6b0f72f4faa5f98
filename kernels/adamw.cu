// AdamW on the GPU: the global gradient norm's partial sums and the fused update, both f32.
//
//   sumsq_f32(const float* x, long long n, long long chunk, float* partial)
//     grid ceil(n / chunk), block 256: partial[b] = sum of x[i]^2 over [b * chunk, (b + 1) * chunk), each
//     thread striding by the block size, then a butterfly block sum (a fixed order: deterministic). The host
//     adds the partials in order in f64.
//
//   adamw_f32(float* p, const float* g, float* m, float* v, long long n, float beta1, float beta2,
//             float step_size, float inv_sqrt_bias2, float eps, float scale, float decay)
//     block 256, any grid (grid-stride loop). With g' = scale * g (the clipping factor):
//     m = beta1 m + (1 - beta1) g';  v = beta2 v + (1 - beta2) g'^2;
//     p -= step_size * m / (sqrt(v) * inv_sqrt_bias2 + eps) + decay * p
//     (step_size = lr / (1 - beta1^t), inv_sqrt_bias2 = 1 / sqrt(1 - beta2^t), decay = lr * weight decay),
//     the same arithmetic as the CPU optimizer. One read of p, g, m, v and one write of p, m, v per element.
#include "common.cuh"

extern "C" __global__ void sumsq_f32(const float* x, long long n, long long chunk, float* partial) {
    __shared__ float scratch[32];
    const long long start = (long long)blockIdx.x * chunk;
    const long long end = min(n, start + chunk);
    float acc = 0.0f;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) acc = fmaf(x[i], x[i], acc);
    const float total = tg::block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, long long n, float beta1,
                                     float beta2, float step_size, float inv_sqrt_bias2, float eps, float scale,
                                     float decay) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float gi = g[i] * scale;
        const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) * inv_sqrt_bias2 + eps;
        p[i] -= step_size * mi / denom + decay * p[i];
    }
}
