//! Dtype cast. `x: [..]` of any dtype → `[..]` of `dtype`, computed through f64 (exact for every pair we store).
//! Backward: the gradient cast back to the input's dtype.

use crate::dtype::DType;
use crate::error::Result;
use crate::tape::record;
use crate::tensor::Tensor;

impl Tensor {
    /// The same values in `dtype` (rounded to nearest); a no-op when already of that dtype.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        let from = self.dtype();
        if from == dtype {
            return Ok(self.clone());
        }
        let out = Tensor::from_storage(self.storage.cast(&self.layout, dtype)?, self.shape());
        record("to_dtype", &[self], out, move |g, _| {
            Ok(vec![Some(g.to_dtype(from)?)])
        })
    }
}
