//! Matrix products on the GPU through cuBLAS (`cublasGemmStridedBatchedEx`): f32, f64, and bf16 inputs with
//! f32 accumulation. Operands are any views whose matrices have one unit stride (transposes cost nothing)
//! and whose batch dims step by one stride (broadcast batches included); other views are copied first.
//!
//! Row-major `C = A·B` is computed as the column-major `Cᵀ = Bᵀ·Aᵀ`: a row-major matrix in memory is the
//! column-major view of its transpose, so no operand moves.

use super::copy::copy_into;
use super::DeviceBuffer;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Layout;
use cudarc::cublas::sys::{cublasComputeType_t, cublasOperation_t, cudaDataType};
use std::ffi::c_void;

const OP: &str = "matmul";

/// How cuBLAS reads one operand.
struct Operand {
    address: u64,
    /// Whether the row-major matrix is stored transposed (column-major).
    transposed: bool,
    ld: i32,
    batch_stride: i64,
}

/// The stride that steps through all batch dims at once, when there is one.
fn single_batch_stride(shape: &[usize], strides: &[usize]) -> Option<usize> {
    let dims: Vec<(usize, usize)> = shape
        .iter()
        .zip(strides)
        .filter(|(n, _)| **n > 1)
        .map(|(n, s)| (*n, *s))
        .collect();
    let inner = dims.last().map_or(0, |d| d.1);
    let mut expected = inner;
    for &(n, s) in dims.iter().rev() {
        if s != expected {
            return None;
        }
        expected = s * n;
    }
    Some(inner)
}

/// `t` (a buffer read through its layout) broadcast to `batch` leading dims, as a cuBLAS operand; with the
/// copy it reads when the layout does not fit cuBLAS (keep it alive until the product is done).
fn operand(
    (buffer, layout): (&DeviceBuffer, &Layout),
    batch: &[usize],
) -> Result<(Operand, Option<DeviceBuffer>)> {
    let nd = layout.shape.len();
    let (r, c) = (layout.shape[nd - 2], layout.shape[nd - 1]);
    let lead = nd - 2;
    let mut shape = batch.to_vec();
    let mut strides = vec![0; batch.len()];
    for i in 0..lead {
        let d = batch.len() - lead + i;
        if layout.shape[i] != 1 {
            strides[d] = layout.strides[i];
        }
    }
    shape.extend([r, c]);
    let (sr, sc) = (layout.strides[lead], layout.strides[lead + 1]);
    strides.extend([sr, sc]);
    let view = Layout {
        shape,
        strides,
        offset: layout.offset,
    };
    let fits = |v: &Layout| -> Option<(bool, usize, usize)> {
        let n = v.shape.len();
        let (sr, sc) = (v.strides[n - 2], v.strides[n - 1]);
        let batch = single_batch_stride(&v.shape[..n - 2], &v.strides[..n - 2])?;
        // Rows (or columns) must not overlap: a broadcast (stride 0) matrix is copied instead.
        if (sc == 1 || c == 1) && (r == 1 || sr >= c) {
            Some((false, if r == 1 { c.max(1) } else { sr }, batch))
        } else if (sr == 1 || r == 1) && (c == 1 || sc >= r) {
            Some((true, if c == 1 { r.max(1) } else { sc }, batch))
        } else {
            None
        }
    };
    let (view, copy) = match fits(&view) {
        Some(_) => (view, None),
        None => {
            let dense = Layout::contiguous(&view.shape);
            let copy = buffer.gpu().alloc(buffer.dtype(), dense.numel())?;
            copy_into(buffer, &view, &copy, &dense)?;
            (dense, Some(copy))
        }
    };
    let (transposed, ld, batch_stride) = fits(&view).ok_or_else(|| Error::Device {
        op: OP,
        msg: format!(
            "{:?} has no cuBLAS layout even when contiguous",
            layout.shape
        ),
    })?;
    let address = copy.as_ref().unwrap_or(buffer).ptr(view.offset);
    let ld = i32::try_from(ld).map_err(|_| Error::Device {
        op: OP,
        msg: format!("leading dimension {ld} exceeds cuBLAS's 32-bit sizes"),
    })?;
    Ok((
        Operand {
            address,
            transposed,
            ld,
            batch_stride: batch_stride as i64,
        },
        copy,
    ))
}

/// `a · b` for `a: [.., M, K]`, `b: [.., K, N]` (buffers read through their layouts, batch dims broadcast)
/// into a fresh contiguous `out_shape` buffer.
pub(crate) fn matmul(
    a: (&DeviceBuffer, &Layout),
    b: (&DeviceBuffer, &Layout),
    out_shape: &[usize],
) -> Result<DeviceBuffer> {
    let dtype = a.0.dtype();
    if b.0.dtype() != dtype {
        return Err(Error::DType {
            op: OP,
            msg: format!("operands are {dtype} and {}", b.0.dtype()),
        });
    }
    let (data_type, compute) = match dtype {
        DType::F32 => (
            cudaDataType::CUDA_R_32F,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
        DType::BF16 => (
            cudaDataType::CUDA_R_16BF,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
        DType::F64 => (
            cudaDataType::CUDA_R_64F,
            cublasComputeType_t::CUBLAS_COMPUTE_64F,
        ),
        other => {
            return Err(Error::DType {
                op: OP,
                msg: format!("{other} matrix products are not supported on the GPU"),
            })
        }
    };
    let n_out = out_shape.len();
    let (m, n) = (out_shape[n_out - 2], out_shape[n_out - 1]);
    let k = a.1.shape[a.1.shape.len() - 1];
    let batch = &out_shape[..n_out - 2];
    let count: usize = batch.iter().product();
    let gpu = a.0.gpu().clone();
    let numel: usize = out_shape.iter().product();
    if numel == 0 || k == 0 {
        return gpu.alloc_zeroed(dtype, numel);
    }
    let out = gpu.alloc(dtype, numel)?;
    let (oa, _keep_a) = operand(a, batch)?;
    let (ob, _keep_b) = operand(b, batch)?;
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let size = |v: usize| {
        i32::try_from(v).map_err(|_| Error::Device {
            op: OP,
            msg: format!("size {v} exceeds cuBLAS's 32-bit sizes"),
        })
    };
    let (m32, n32, k32, count32) = (size(m)?, size(n)?, size(k)?, size(count)?);
    let (one32, zero32, one64, zero64) = (1.0f32, 0.0f32, 1.0f64, 0.0f64);
    let (alpha, beta): (*const c_void, *const c_void) = if dtype == DType::F64 {
        (
            &one64 as *const f64 as *const c_void,
            &zero64 as *const f64 as *const c_void,
        )
    } else {
        (
            &one32 as *const f32 as *const c_void,
            &zero32 as *const f32 as *const c_void,
        )
    };
    gpu.with_blas(|blas| {
        // SAFETY: every address is a live buffer of this device holding the elements the layouts describe
        // (`operand` checked the strides), the output holds count · M · N elements, and alpha/beta point to
        // host scalars of the compute type that outlive the call.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *blas.handle(),
                op(ob.transposed),
                op(oa.transposed),
                n32,
                m32,
                k32,
                alpha,
                ob.address as *const c_void,
                data_type,
                ob.ld,
                ob.batch_stride,
                oa.address as *const c_void,
                data_type,
                oa.ld,
                oa.batch_stride,
                beta,
                out.ptr(0) as *mut c_void,
                data_type,
                n32,
                (m * n) as i64,
                count32,
                compute,
                cudarc::cublas::sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Device {
            op: OP,
            msg: format!("cuBLAS gemm {:?} · {:?}: {e}", a.1.shape, b.1.shape),
        })
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::single_batch_stride;

    #[test]
    fn batch_dims_collapse_to_one_stride_when_linear() {
        assert_eq!(single_batch_stride(&[2, 3], &[30, 10]), Some(10));
        assert_eq!(single_batch_stride(&[2, 3], &[0, 0]), Some(0));
        assert_eq!(single_batch_stride(&[1, 3], &[99, 10]), Some(10));
        assert_eq!(single_batch_stride(&[2, 3], &[10, 30]), None);
        assert_eq!(single_batch_stride(&[], &[]), Some(0));
    }
}
