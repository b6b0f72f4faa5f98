//! LLaMA hyper-parameters: the paper's presets (7B–65B), the shared bench configs (`small`, `medium`,
//! `gpu-125m`) and `tiny` for tests; parameter and FLOP counts.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The shape of a LLaMA model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    /// Model width `C`.
    pub dim: usize,
    pub n_layers: usize,
    /// Query heads `H`.
    pub n_heads: usize,
    /// Key/value heads `Hkv` (grouped-query attention when below `n_heads`).
    pub n_kv_heads: usize,
    /// Feed-forward width `F`.
    pub ffn_dim: usize,
    /// The longest sequence the rotary tables cover.
    pub max_seq_len: usize,
    pub norm_eps: f64,
    pub rope_theta: f64,
    /// Whether the output head reuses the embedding table.
    pub tie_embeddings: bool,
}

/// The SwiGLU hidden size of the paper: `2/3 · 4 · dim`, rounded up to a multiple of `multiple`.
pub fn swiglu_hidden(dim: usize, multiple: usize) -> usize {
    let hidden = (2 * 4 * dim).div_ceil(3);
    hidden.div_ceil(multiple) * multiple
}

/// A preset and, for the paper's models, its learning rate and batch size in tokens.
pub struct Preset {
    pub name: &'static str,
    pub config: Config,
    pub learning_rate: f64,
    pub batch_tokens: usize,
}

fn config(vocab: usize, dim: usize, layers: usize, heads: usize, max_seq_len: usize) -> Config {
    Config {
        vocab_size: vocab,
        dim,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: heads,
        ffn_dim: swiglu_hidden(dim, 256),
        max_seq_len,
        norm_eps: 1e-6,
        rope_theta: 1e4,
        tie_embeddings: false,
    }
}

/// Every named preset.
pub fn presets() -> Vec<Preset> {
    let paper = |name, dim, heads, layers, lr| Preset {
        name,
        config: Config {
            norm_eps: 1e-6,
            ..config(32000, dim, layers, heads, 2048)
        },
        learning_rate: lr,
        batch_tokens: 4 << 20,
    };
    let bench = |name, vocab, dim, layers, heads, seq, batch| Preset {
        name,
        config: config(vocab, dim, layers, heads, seq),
        learning_rate: 1e-3,
        batch_tokens: seq * batch,
    };
    let mut tiny = bench("tiny", 512, 64, 2, 4, 64, 4);
    tiny.config.ffn_dim = 176;
    tiny.config.n_kv_heads = 2;
    vec![
        tiny,
        bench("small", 4096, 256, 4, 8, 256, 16),
        bench("medium", 8192, 512, 8, 8, 512, 8),
        bench("gpu-125m", 32000, 768, 12, 12, 1024, 16),
        paper("7b", 4096, 32, 32, 3e-4),
        paper("13b", 5120, 40, 40, 3e-4),
        paper("33b", 6656, 52, 60, 1.5e-4),
        paper("65b", 8192, 64, 80, 1.5e-4),
    ]
}

impl Config {
    /// The preset called `name` (tiny, small, medium, gpu-125m, 7b, 13b, 33b, 65b).
    pub fn preset(name: &str) -> Result<Preset> {
        presets()
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = presets().iter().map(|p| p.name).collect();
                Error::invalid(
                    "config",
                    format!("unknown preset {name:?} (known: {})", names.join(", ")),
                )
            })
    }

    /// Head dimension `D = C / H`.
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::invalid("config", msg));
        if [
            self.vocab_size,
            self.dim,
            self.n_layers,
            self.n_heads,
            self.n_kv_heads,
            self.ffn_dim,
            self.max_seq_len,
        ]
        .contains(&0)
        {
            return bad(format!("every size must be positive: {self:?}"));
        }
        if !self.dim.is_multiple_of(self.n_heads) || !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "dim {} must split into {} heads of even size",
                self.dim, self.n_heads
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} heads do not group into {} key/value heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        Ok(())
    }

    /// Weights of every linear layer, the output head included (not the embedding lookup): `N_matmul`.
    pub fn matmul_params(&self) -> usize {
        let kv = self.n_kv_heads * self.head_dim();
        let per_layer = 2 * self.dim * self.dim + 2 * self.dim * kv + 3 * self.dim * self.ffn_dim;
        self.n_layers * per_layer + self.vocab_size * self.dim
    }

    /// Every parameter: matmul weights, embedding (unless tied) and norm gains.
    pub fn param_count(&self) -> usize {
        let embedding = if self.tie_embeddings {
            0
        } else {
            self.vocab_size * self.dim
        };
        self.matmul_params() + embedding + (2 * self.n_layers + 1) * self.dim
    }

    /// Training FLOPs per token at sequence length `seq_len`: `6 · N_matmul + 6 · L · T · C` (attention's
    /// QKᵀ and PV, forward and backward, the causal half counted).
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        6.0 * self.matmul_params() as f64 + 6.0 * (self.n_layers * seq_len * self.dim) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_paper_and_the_bench_table() {
        let seven = Config::preset("7b").unwrap();
        assert_eq!(
            (
                seven.config.dim,
                seven.config.n_heads,
                seven.config.n_layers
            ),
            (4096, 32, 32)
        );
        assert_eq!(seven.config.ffn_dim, 11008);
        assert_eq!(Config::preset("65b").unwrap().learning_rate, 1.5e-4);
        // GUIDE's bench table: small 5.5 M, medium 35.7 M, gpu-125m ~135 M parameters.
        let count = |n: &str| Config::preset(n).unwrap().config.param_count() as f64 / 1e6;
        assert!((count("small") - 5.5).abs() < 0.1, "{}", count("small"));
        assert!((count("medium") - 35.7).abs() < 0.1, "{}", count("medium"));
        assert!(
            (count("gpu-125m") - 135.0).abs() < 2.0,
            "{}",
            count("gpu-125m")
        );
        assert!((count("7b") - 6738.0).abs() < 10.0, "{}", count("7b"));
        assert!(Config::preset("nope").is_err());
    }
}
