//! How a LLaMA block trades memory for recomputation during training.
//!
//! | mode | kept per block for backward | recomputed in backward |
//! |---|---|---|
//! | `none` | every input an op's backward reads | nothing |
//! | `selective` | the block's input, the q, k, v, gate and up projections' outputs, attention output and logsumexp | both RMSNorms, RoPE, SwiGLU, the residual stream after attention (with the output projection) |
//! | `full` | the block's input only | the whole block (a checkpoint region) |
//!
//! Under `selective`, the residual stream after attention is rebuilt from the block's input and the attention
//! output by rerunning the output projection, a `C × C` product (about 3% of a training step's matrix work in a
//! block), which saves `C` values a token (of `6·C + 2·F` with as many key and value heads as query heads); the
//! stream after the MLP is the next block's input, kept.

use crate::error::{Error, Result};

/// The recomputation mode of a LLaMA block (see the module docs). The default, `Selective`, gives the
/// smallest product of step time and peak memory on every bench config (docs/benchmarks.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recompute {
    /// Keep everything.
    None,
    /// Recompute norms, RoPE, SwiGLU and the residual stream after attention; keep the other matmul outputs
    /// and the attention output.
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
