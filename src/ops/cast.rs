//! Dtype cast. `x: [..]` of any dtype → `[..]` of `dtype`, computed through f64 (exact for every pair we store).
//! Backward: the gradient cast back to the input's dtype.

use crate::backend::cpu::elementwise;
use crate::backend::Storage;
use crate::backend::StorageElement;
use crate::dtype::DType;
use crate::error::Result;
use crate::tape::record;
use crate::tensor::Tensor;
use half::{bf16, f16};

fn convert<S: StorageElement + Default, D: StorageElement + Default>(x: &Tensor) -> Vec<D> {
    let src = elementwise::gather(x.data::<S>(), &x.layout);
    src.into_iter().map(|v| D::from_f64(v.to_f64())).collect()
}

fn convert_from<S: StorageElement + Default>(x: &Tensor, dtype: DType) -> Storage {
    match dtype {
        DType::F32 => Storage::F32(convert::<S, f32>(x)),
        DType::F64 => Storage::F64(convert::<S, f64>(x)),
        DType::BF16 => Storage::BF16(convert::<S, bf16>(x)),
        DType::F16 => Storage::F16(convert::<S, f16>(x)),
    }
}

/// `x` converted to a contiguous tensor of `dtype`, on `x`'s device.
fn cast_kernel(x: &Tensor, dtype: DType) -> Result<Tensor> {
    #[cfg(feature = "cuda-backend")]
    if x.is_cuda() {
        return crate::backend::cuda::copy::cast(x, dtype);
    }
    let storage = match x.dtype() {
        DType::F32 => convert_from::<f32>(x, dtype),
        DType::F64 => convert_from::<f64>(x, dtype),
        DType::BF16 => convert_from::<bf16>(x, dtype),
        DType::F16 => convert_from::<f16>(x, dtype),
    };
    Ok(Tensor::from_storage(storage, x.shape()))
}

impl Tensor {
    /// The same values in `dtype` (rounded to nearest); a no-op when already of that dtype.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        let from = self.dtype();
        if from == dtype {
            return Ok(self.clone());
        }
        let out = cast_kernel(self, dtype)?;
        record("to_dtype", &[self], out, move |g, _| {
            Ok(vec![Some(g.to_dtype(from)?)])
        })
    }
}
