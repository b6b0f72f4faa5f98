//! The LLaMA model (Touvron et al., 2023): pre-normalization with RMSNorm, SwiGLU feed-forward, rotary
//! embeddings, causal attention with optional grouped-query heads, optional tied embeddings; generation with a
//! KV cache; checkpoints in the Hugging Face safetensors layout.

pub mod base;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod export;
pub mod generate;
pub mod gguf;
pub mod hf;
pub mod kv_cache;
pub mod lora;
pub mod model;
pub mod parallel;
pub mod peft;
pub mod plot;
pub mod pretrained;
pub mod recompute;
pub mod sft;
pub mod stream;
pub mod tasks;
pub mod train;
pub mod weight;

pub use config::{Config, Preset};
pub use generate::{generate, Sampling};
pub use kv_cache::KvCache;
pub use lora::{LoraConfig, Target};
pub use model::Llama;
pub use recompute::Recompute;
pub use weight::Weight;
