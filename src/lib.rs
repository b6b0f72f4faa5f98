//! # tapegrad
//!
//! A pure-Rust tensor engine with tape-based reverse-mode autodiff and a LLaMA module.
//!
//! ```
//! use tapegrad::{DType, Rng, Tape, Tensor};
//!
//! # fn main() -> tapegrad::Result<()> {
//! let mut rng = Rng::new(0);
//! // Fit y = x · w to a fixed target with plain gradient descent.
//! let x = Tensor::randn(&[8, 4], 1.0, DType::F32, &mut rng);
//! let target = Tensor::randn(&[8, 1], 1.0, DType::F32, &mut rng);
//! let mut w = Tensor::zeros(&[4, 1], DType::F32);
//! for _ in 0..100 {
//!     let tape = Tape::new();
//!     let tracked = tape.watch(&w);
//!     let err = x.matmul(&tracked)?.sub(&target)?;
//!     let loss = err.mul(&err)?.mean(&[0, 1], false)?;
//!     let grads = tape.backward(&loss)?;
//!     w = w.sub(&grads.get(&tracked).unwrap().scale(0.1)?)?;
//! }
//! # Ok(())
//! # }
//! ```

pub mod backend;
pub mod data;
pub mod dist;
pub mod dtype;
pub mod error;
pub mod io;
pub mod llama;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod shape;
pub mod tape;
pub mod tensor;

pub use backend::{memory, Device, QuantMatrix};
pub use dtype::DType;
pub use error::{Error, Result};
pub use rng::Rng;
pub use tape::{checkpoint, no_grad, with_save_policy, Gradients, SavePolicy, Tape};
pub use tensor::Tensor;
