//! How a LLaMA block trades memory for recomputation during training.
//!
//! | mode | kept per block for backward | recomputed in backward |
//! |---|---|---|
//! | `none` | every input an op's backward reads | nothing |
//! | `selective` | residual stream, projections' outputs, attention output and logsumexp | both RMSNorms, RoPE, SwiGLU |
//! | `full` | the block's input only | the whole block (a checkpoint region) |
//!
//! The residual adds stay kept under `selective`: recomputing the residual stream would need the projections'
//! outputs it sums, which are as large.

use crate::error::{Error, Result};

/// The recomputation mode of a LLaMA block (see the module docs). The default, `Selective`, gives the
/// smallest product of step time and peak memory on every bench config (docs/benchmarks.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recompute {
    /// Keep everything.
    None,
    /// Recompute norms, RoPE and SwiGLU; keep matmul and attention outputs.
    #[default]
    Selective,
    /// Keep only each block's input; replay the block in backward.
    Full,
}

impl std::str::FromStr for Recompute {
    type Err = Error;

    fn from_str(s: &str) -> Result<Recompute> {
        match s {
            "none" => Ok(Recompute::None),
            "selective" => Ok(Recompute::Selective),
            "full" => Ok(Recompute::Full),
            other => Err(Error::invalid(
                "recompute",
                format!("unknown mode {other:?} (expected none, selective or full)"),
            )),
        }
    }
}

impl std::fmt::Display for Recompute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Recompute::None => "none",
            Recompute::Selective => "selective",
            Recompute::Full => "full",
        })
    }
}
