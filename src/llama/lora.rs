//! LoRA adapters (Hu et al., 2021) on a block's projections: `W x + (α/r)·B A dropout(x)` with `A: [r, in]`
//! initialised as PEFT does (Kaiming-uniform, bound `1/√in`), `B: [out, r]` zero, so a fresh adapter leaves the
//! model unchanged. The base weight `W` (dense or quantized) is frozen; only `A` and `B` train.
//!
//! Dropout on the adapter's input is drawn from a seed per step (`Llama::dropout_seed`), the projection and
//! the layer, so a replayed block (recomputation) draws the same mask.

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// A projection of a block, in the order of `Block`'s fields (and of the flag `--lora-targets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    /// Every projection, in block order.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The projection's module under a block, as Hugging Face names it (`self_attn.q_proj`, ...).
    pub fn module(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// The short name (`q`, `k`, `v`, `o`, `gate`, `up`, `down`).
    pub fn short(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    /// The index in `Target::ALL`.
    pub fn index(self) -> usize {
        Target::ALL
            .iter()
            .position(|&t| t == self)
            .expect("every target is listed")
    }

    /// A target from its short name or its Hugging Face module name (`q`, `q_proj`, `self_attn.q_proj`).
    pub fn parse(name: &str) -> Result<Target> {
        let name = name.trim();
        Target::ALL
            .into_iter()
            .find(|t| {
                let module = t.module();
                let leaf = module.rsplit('.').next().unwrap_or(module);
                name == t.short() || name == leaf || name == module
            })
            .ok_or_else(|| {
                Error::invalid(
                    "--lora-targets",
                    format!("{name:?} is not one of q, k, v, o, gate, up, down (or q_proj, ..., down_proj)"),
                )
            })
    }

    /// A comma-separated list of targets, each named once.
    pub fn parse_list(list: &str) -> Result<Vec<Target>> {
        let mut out = Vec::new();
        for name in list.split(',').filter(|n| !n.trim().is_empty()) {
            let t = Target::parse(name)?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            return Err(Error::invalid("--lora-targets", "no projection named"));
        }
        Ok(out)
    }
}

/// How adapters are added: rank `r`, `α` (the update is scaled by `α / r`, or `α / √r` with rsLoRA), dropout
/// on their input, and which projections get one.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<Target>,
    /// Rank-stabilized scaling (`α / √r`), as PEFT's `use_rslora`.
    pub rslora: bool,
}

impl LoraConfig {
    /// Rank `rank` with PEFT's usual companions: `α = 2r`, no dropout, all seven projections.
    pub fn new(rank: usize) -> LoraConfig {
        LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            dropout: 0.0,
            targets: Target::ALL.to_vec(),
            rslora: false,
        }
    }

    /// The factor of the adapters' update: `α / r` (`α / √r` with rsLoRA).
    pub fn scale(&self) -> f64 {
        let r = self.rank as f64;
        self.alpha / if self.rslora { r.sqrt() } else { r }
    }

    /// Checks the rank, α and dropout.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::invalid("--lora", "the rank must be at least 1"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::invalid(
                "--lora-alpha",
                format!("{} is not a positive number", self.alpha),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                "--lora-dropout",
                format!("{} is not in [0, 1)", self.dropout),
            ));
        }
        if self.targets.is_empty() {
            return Err(Error::invalid("--lora-targets", "no projection named"));
        }
        Ok(())
    }
}

/// One adapter: `A: [r, in]`, `B: [out, r]`, the scale `α / r` and the input dropout probability.
#[derive(Clone, Debug)]
pub struct Lora {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f64,
}

impl Lora {
    /// A fresh adapter for a weight `[out, in]`, as PEFT initialises one.
    pub fn new(out: usize, inp: usize, config: &LoraConfig, rng: &mut Rng) -> Lora {
        let dtype = crate::dtype::DType::F32;
        let bound = 1.0 / (inp.max(1) as f64).sqrt();
        Lora {
            a: Tensor::uniform(&[config.rank, inp], -bound, bound, dtype, rng),
            b: Tensor::zeros(&[out, config.rank], dtype),
            scale: config.scale(),
            dropout: config.dropout,
        }
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        self.a.shape()[0]
    }

    /// `(α/r)·B A dropout(x)` for `x: [.., in]` → `[.., out]`, in `x`'s dtype. `seed` draws the dropout mask
    /// (none without one: evaluation).
    pub fn apply(&self, x: &Tensor, seed: Option<u64>) -> Result<Tensor> {
        let x = match seed {
            Some(seed) if self.dropout > 0.0 => {
                let keep = 1.0 - self.dropout;
                let mut rng = Rng::new(seed);
                let mask: Vec<f32> = (0..x.numel())
                    .map(|_| {
                        if rng.uniform() < keep {
                            (1.0 / keep) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, x.shape())?
                    .to_dtype(x.dtype())?
                    .to_device(x.device())?;
                x.mul(&mask)?
            }
            _ => x.clone(),
        };
        let dtype = x.dtype();
        x.linear(&self.a.to_dtype(dtype)?)?
            .linear(&self.b.to_dtype(dtype)?)?
            .scale(self.scale)
    }

    /// The update `(α/r)·B A` as a dense `[out, in]` f32 tensor (what merging adds to the base).
    pub fn delta(&self) -> Result<Tensor> {
        let f32 = crate::dtype::DType::F32;
        self.b
            .to_dtype(f32)?
            .matmul(&self.a.to_dtype(f32)?)?
            .scale(self.scale)
    }
}
