// The emulated cuBLAS (`libcublas.so`): the handle functions and `cublasGemmStridedBatchedEx`, the one product
// the crate calls. Column-major as cuBLAS is: C[i + j·ldc] = α · Σ_p op(A)[i, p] · op(B)[p, j] + β · C, per batch
// at the given strides. f32 and bf16 inputs accumulate in f32 (bf16 products are exact there), bf16 outputs
// round to nearest even once; f64 runs in f64. With β = 0, C is not read (as cuBLAS promises).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda_emu.h"

namespace {

enum : int {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum : int { CUDA_R_32F = 0, CUDA_R_64F = 1, CUDA_R_16BF = 14 };
enum : int {
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_PEDANTIC = 69,
    CUBLAS_COMPUTE_64F = 70,
    CUBLAS_COMPUTE_64F_PEDANTIC = 71,
    CUBLAS_COMPUTE_32F_FAST_16BF = 75,
};

struct Handle {
    void* stream = nullptr;
};

template <typename T> double load(const void* base, long long index);
template <> double load<float>(const void* base, long long index) { return static_cast<const float*>(base)[index]; }
template <> double load<double>(const void* base, long long index) { return static_cast<const double*>(base)[index]; }
template <> double load<__nv_bfloat16>(const void* base, long long index) {
    return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[index]);
}

template <typename T> void store(void* base, long long index, double v);
template <> void store<float>(void* base, long long index, double v) {
    static_cast<float*>(base)[index] = static_cast<float>(v);
}
template <> void store<double>(void* base, long long index, double v) { static_cast<double*>(base)[index] = v; }
template <> void store<__nv_bfloat16>(void* base, long long index, double v) {
    static_cast<__nv_bfloat16*>(base)[index] = __float2bfloat16_rn(static_cast<float>(v));
}

// Acc is the accumulation type (float or double); T the storage type of A, B and C.
template <typename T, typename Acc>
void gemm(bool ta, bool tb, int m, int n, int k, Acc alpha, const void* a, int lda, long long sa, const void* b,
          int ldb, long long sb, Acc beta, void* c, int ldc, long long sc, int batches) {
    for (int batch = 0; batch < batches; ++batch) {
        const long long oa = batch * sa, ob = batch * sb, oc = batch * sc;
        for (int j = 0; j < n; ++j) {
            for (int i = 0; i < m; ++i) {
                Acc sum = 0;
                for (int p = 0; p < k; ++p) {
                    const long long ia = ta ? p + static_cast<long long>(i) * lda : i + static_cast<long long>(p) * lda;
                    const long long ib = tb ? j + static_cast<long long>(p) * ldb : p + static_cast<long long>(j) * ldb;
                    sum += static_cast<Acc>(load<T>(a, oa + ia)) * static_cast<Acc>(load<T>(b, ob + ib));
                }
                const long long ic = oc + i + static_cast<long long>(j) * ldc;
                Acc out = alpha * sum;
                if (beta != Acc(0)) out += beta * static_cast<Acc>(load<T>(c, ic));
                store<T>(c, ic, static_cast<double>(out));
            }
        }
    }
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int cublasCreate_v2(void** handle) {
    *handle = new Handle;
    return CUBLAS_STATUS_SUCCESS;
}

__attribute__((visibility("default"))) int cublasDestroy_v2(void* handle) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete static_cast<Handle*>(handle);
    return CUBLAS_STATUS_SUCCESS;
}

__attribute__((visibility("default"))) int cublasSetStream_v2(void* handle, void* stream) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    static_cast<Handle*>(handle)->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

__attribute__((visibility("default"))) const char* cublasGetStatusName(int status) {
    switch (status) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

__attribute__((visibility("default"))) const char* cublasGetStatusString(int status) {
    return cublasGetStatusName(status);
}

__attribute__((visibility("default"))) int cublasGemmStridedBatchedEx(
    void* handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* a, int a_type, int lda,
    long long stride_a, const void* b, int b_type, int ldb, long long stride_b, const void* beta, void* c, int c_type,
    int ldc, long long stride_c, int batches, int compute, int /*algo*/) {
    if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0 || batches < 0 || transa < 0 || transa > 1 || transb < 0 || transb > 1) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const bool ta = transa == 1, tb = transb == 1;
    if (lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m || lda < 1 || ldb < 1 || ldc < 1) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (a_type != b_type || a_type != c_type) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0 || batches == 0) return CUBLAS_STATUS_SUCCESS;
    const bool f32_compute = compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_PEDANTIC ||
                             compute == CUBLAS_COMPUTE_32F_FAST_16BF;
    const bool f64_compute = compute == CUBLAS_COMPUTE_64F || compute == CUBLAS_COMPUTE_64F_PEDANTIC;
    if (a_type == CUDA_R_32F && f32_compute) {
        gemm<float, float>(ta, tb, m, n, k, *static_cast<const float*>(alpha), a, lda, stride_a, b, ldb, stride_b,
                           *static_cast<const float*>(beta), c, ldc, stride_c, batches);
    } else if (a_type == CUDA_R_16BF && f32_compute) {
        gemm<__nv_bfloat16, float>(ta, tb, m, n, k, *static_cast<const float*>(alpha), a, lda, stride_a, b, ldb,
                                   stride_b, *static_cast<const float*>(beta), c, ldc, stride_c, batches);
    } else if (a_type == CUDA_R_64F && f64_compute) {
        gemm<double, double>(ta, tb, m, n, k, *static_cast<const double*>(alpha), a, lda, stride_a, b, ldb, stride_b,
                             *static_cast<const double*>(beta), c, ldc, stride_c, batches);
    } else {
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
