//! `Weight`: a matrix of the model — a projection, the token embedding or the output head — held either as a
//! dense tensor (a parameter, trainable) or as a frozen `QuantMatrix` in a ggml block format, used straight
//! from its blocks (`Tensor::linear_quantized`; the embedding reads only the rows its tokens select).

use crate::backend::QuantMatrix;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::io::gguf::GgmlType;
use crate::tensor::Tensor;

/// A weight matrix `[rows, cols]`: dense, or quantized and frozen.
#[derive(Clone, Debug)]
pub enum Weight {
    Dense(Tensor),
    Quantized(QuantMatrix),
}

impl From<Tensor> for Weight {
    fn from(t: Tensor) -> Weight {
        Weight::Dense(t)
    }
}

impl Weight {
    /// The shape.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Weight::Dense(t) => t.shape().to_vec(),
            Weight::Quantized(q) => q.shape().to_vec(),
        }
    }

    /// The dense tensor, when the weight is one.
    pub fn dense(&self) -> Option<&Tensor> {
        match self {
            Weight::Dense(t) => Some(t),
            Weight::Quantized(_) => None,
        }
    }

    /// The dense tensor, mutably, when the weight is one.
    pub fn dense_mut(&mut self) -> Option<&mut Tensor> {
        match self {
            Weight::Dense(t) => Some(t),
            Weight::Quantized(_) => None,
        }
    }

    /// The block format of a quantized weight.
    pub fn quant_type(&self) -> Option<GgmlType> {
        match self {
            Weight::Dense(_) => None,
            Weight::Quantized(q) => Some(q.ggml_type()),
        }
    }

    /// `x · Wᵀ` in `x`'s dtype: a dense weight is cast to it (a recorded cast), a quantized one is read from
    /// its blocks.
    pub fn linear(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Weight::Dense(w) => x.linear(&w.to_dtype(x.dtype())?),
            Weight::Quantized(q) => x.linear_quantized(q),
        }
    }

    /// The mean cross-entropy of `self.linear(x)` against `targets` (one per row of `x`), `ignore` skipped: on
    /// the CPU a dense weight runs the fused head (`Tensor::linear_cross_entropy`: no logits tensor); on a GPU
    /// (where the fused loop computes in f32 while `linear` autocasts to bf16) and over a quantized weight the
    /// logits are made and handed to `cross_entropy`.
    pub fn cross_entropy(
        &self,
        x: &Tensor,
        targets: &[u32],
        ignore: Option<u32>,
    ) -> Result<Tensor> {
        match self {
            Weight::Dense(w) if x.device() == crate::backend::Device::Cpu => {
                x.linear_cross_entropy(&w.to_dtype(x.dtype())?, targets, ignore)
            }
            _ => {
                let logits = self.linear(x)?;
                let vocab = logits.shape().last().copied().unwrap_or(1);
                logits
                    .reshape(&[logits.numel() / vocab.max(1), vocab])?
                    .cross_entropy(targets, ignore)
            }
        }
    }

    /// Rows `ids` of the weight (an embedding lookup), `ids_shape + [cols]`, in `dtype`. A quantized weight is
    /// frozen, so its rows are dequantized into a constant.
    pub fn embedding(&self, ids: &[u32], ids_shape: &[usize], dtype: DType) -> Result<Tensor> {
        let q = match self {
            Weight::Dense(w) => return w.embedding(ids, ids_shape)?.to_dtype(dtype),
            Weight::Quantized(q) => q,
        };
        let [rows, cols] = q.shape();
        if ids_shape.iter().product::<usize>() != ids.len() {
            return Err(Error::shape(
                "embedding",
                format!("{} ids do not fill shape {ids_shape:?}", ids.len()),
            ));
        }
        let mut out = vec![0f32; ids.len() * cols];
        for (&id, row) in ids.iter().zip(out.chunks_exact_mut(cols.max(1))) {
            let id = id as usize;
            if id >= rows {
                return Err(Error::Index {
                    op: "embedding",
                    msg: format!("token id {id} is out of range for a vocabulary of {rows}"),
                });
            }
            q.dequantize_rows(id..id + 1, row);
        }
        let mut shape = ids_shape.to_vec();
        shape.push(cols);
        Tensor::from_vec(out, &shape)?.to_dtype(dtype)
    }

    /// The weight as a dense f32 tensor (a full copy of a quantized one).
    pub fn dequantized(&self) -> Result<Tensor> {
        match self {
            Weight::Dense(t) => Ok(t.clone()),
            Weight::Quantized(q) => Tensor::from_vec(q.dequantize(), &q.shape()),
        }
    }

    /// The weight quantized to `ty` (a dense weight must be f32, bf16 or f16, with rows of whole blocks; a
    /// quantized one is dequantized first).
    pub fn quantized(&self, ty: GgmlType) -> Result<Weight> {
        let t = self.dequantized()?.to_dtype(DType::F32)?;
        let shape = t.shape().to_vec();
        if shape.len() != 2 {
            return Err(Error::shape(
                "quantize",
                format!("a weight of shape {shape:?} is not a matrix"),
            ));
        }
        let values = t.to_vec::<f32>()?;
        Ok(Weight::Quantized(QuantMatrix::quantize(
            &values, shape[0], shape[1], ty,
        )?))
    }
}
