//! Optimizers and schedules: AdamW with decoupled weight decay (one fused pass per parameter, gradient
//! clipping folded in), global-norm clipping, and linear warmup followed by cosine decay.

pub mod adamw;
pub mod schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use schedule::CosineSchedule;
