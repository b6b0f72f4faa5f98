//! File formats and file safety, below the model and the data pipeline: the GGUF reader and ggml's block
//! quantizations, crash-safe writes, and the checksum that names cached files and guards checkpoints. Nothing
//! here knows about LLaMA (its name maps live in `llama`) or about tokenizers.

pub mod atomic;
pub mod checksum;
pub mod gguf;
pub mod quant;
mod quant_avx2;
pub mod quantize;

pub use atomic::write_file_atomically;
pub use checksum::fnv1a_64;
