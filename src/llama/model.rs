//! The LLaMA network. Parameters carry their Hugging Face names; `forward` maps token ids `[B, T]` to logits
//! `[B, T, V]`, optionally appending to a KV cache for generation.
//!
//! Initialization: every weight normal with std 0.02, the two output projections of each block (attention
//! `o_proj`, MLP `down_proj`) scaled by `1/√(2L)` so the residual stream's variance does not grow with depth;
//! norm gains 1.

use super::config::Config;
use super::kv_cache::KvCache;
use super::lora::{Lora, LoraConfig, Target};
use super::recompute::Recompute;
use super::weight::Weight;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::Rope;
use crate::rng::Rng;
use crate::tape::{checkpoint, save_policy, with_save_policy, SavePolicy, Tape};
use crate::tensor::Tensor;

/// One transformer block's weights: the norms' gains, and the seven projections (dense or quantized).
#[derive(Clone)]
pub struct Block {
    pub attn_norm: Tensor,
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub wo: Weight,
    pub mlp_norm: Tensor,
    pub w_gate: Weight,
    pub w_up: Weight,
    pub w_down: Weight,
    /// The LoRA adapter of each projection, in `Target::ALL` order.
    pub lora: [Option<Lora>; 7],
}

/// A LLaMA model: configuration, parameters and rotary tables.
#[derive(Clone)]
pub struct Llama {
    pub config: Config,
    pub embed: Weight,
    pub blocks: Vec<Block>,
    pub norm: Tensor,
    /// The output head `[V, C]`; `None` when tied to the embedding.
    pub lm_head: Option<Weight>,
    /// What the blocks keep for backward when training (not saved with the model).
    pub recompute: Recompute,
    /// The dtype of the activations between ops, when it differs from the parameters' (not saved with the
    /// model). `Some(BF16)` is mixed precision: parameters, gradients and optimizer state stay f32, each
    /// parameter is cast where it is used (a recorded cast), and the logits are cast back to f32 for the loss.
    pub activations: Option<DType>,
    /// The adapters' configuration once `add_lora` has added them; the base weights are then frozen.
    pub lora: Option<LoraConfig>,
    /// Where the frozen base came from, when the model was loaded for adapters (checkpoints then hold the
    /// adapters and this reference instead of the base).
    pub base: Option<super::base::BaseRef>,
    /// The seed of this forward pass's adapter dropout masks (set by the trainer for each step; `None`, the
    /// default, applies no dropout). Not saved with the model.
    pub dropout_seed: Option<u64>,
    rope: Rope,
}

/// What a block needs besides its parameters.
#[derive(Clone)]
struct BlockInput {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
    rope: Rope,
    /// Position of the first token (the KV cache's length).
    start: usize,
    /// The block's adapter dropout seed (`Llama::dropout_seed` mixed with the layer index).
    dropout_seed: Option<u64>,
}

impl Block {
    /// The two norms' gains and the seven projections (q, k, v, o, gate, up, down), each mutably.
    fn split_mut(&mut self) -> (&mut Tensor, &mut Tensor, [&mut Weight; 7]) {
        let Block {
            attn_norm,
            wq,
            wk,
            wv,
            wo,
            mlp_norm,
            w_gate,
            w_up,
            w_down,
            lora: _,
        } = self;
        (attn_norm, mlp_norm, [wq, wk, wv, wo, w_gate, w_up, w_down])
    }

    /// The base weight of projection `t`.
    pub fn weight(&self, t: Target) -> &Weight {
        match t {
            Target::Q => &self.wq,
            Target::K => &self.wk,
            Target::V => &self.wv,
            Target::O => &self.wo,
            Target::Gate => &self.w_gate,
            Target::Up => &self.w_up,
            Target::Down => &self.w_down,
        }
    }

    /// Projection `t` of `x`: `x · Wᵀ`, plus its adapter's update when it has one.
    fn project(&self, t: Target, x: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor> {
        let y = self.weight(t).linear(x)?;
        match &self.lora[t.index()] {
            None => Ok(y),
            Some(lora) => {
                let seed = dropout_seed.map(|s| Rng::derive(s, t.index() as u64));
                y.add(&lora.apply(x, seed)?)
            }
        }
    }

    /// One pre-norm block over `x: [B, T, C]` → `[B, T, C]`, appending to `cache` (with this block's layer
    /// index) when given.
    fn forward(
        &self,
        x: &Tensor,
        a: &BlockInput,
        cache: Option<(&mut KvCache, usize, usize)>,
    ) -> Result<Tensor> {
        // Dense parameters are cast to the activations' dtype where they are used (recorded casts: gradients
        // arrive in the parameters' dtype).
        let p = self;
        let (attn_norm, mlp_norm) = (
            p.attn_norm.to_dtype(x.dtype())?,
            p.mlp_norm.to_dtype(x.dtype())?,
        );
        let (batch, seq_len, c) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let (h, hkv, d) = (a.heads, a.kv_heads, a.head_dim);
        let hn = x.rms_norm(&attn_norm, a.eps)?;
        let seed = a.dropout_seed;
        let q = p
            .project(Target::Q, &hn, seed)?
            .reshape(&[batch, seq_len, h, d])?
            .rope(&a.rope, a.start)?;
        let k = p
            .project(Target::K, &hn, seed)?
            .reshape(&[batch, seq_len, hkv, d])?
            .rope(&a.rope, a.start)?;
        let v = p
            .project(Target::V, &hn, seed)?
            .reshape(&[batch, seq_len, hkv, d])?;
        let heads = [0, 2, 1, 3];
        let (q, mut k, mut v) = (q.permute(&heads)?, k.permute(&heads)?, v.permute(&heads)?);
        if let Some((cache, layer, max_len)) = cache {
            (k, v) = cache.append(layer, k, v, max_len)?;
        }
        let attn = q
            .attention(&k, &v)?
            .permute(&heads)?
            .reshape(&[batch, seq_len, c])?;
        // The residual stream after attention: under `selective`, rebuilt in backward from the block's input
        // and the attention output (the output projection rerun), instead of kept; kept under every other
        // policy (see `Recompute`).
        let x = if save_policy() == SavePolicy::Selective {
            with_save_policy(SavePolicy::Recompute, || {
                x.add(&p.project(Target::O, &attn, seed)?)
            })?
        } else {
            let o = p.project(Target::O, &attn, seed)?;
            with_save_policy(SavePolicy::All, || x.add(&o))?
        };
        let hn = x.rms_norm(&mlp_norm, a.eps)?;
        let gated =
            p.project(Target::Gate, &hn, seed)?
                .swiglu(&p.project(Target::Up, &hn, seed)?)?;
        let down = p.project(Target::Down, &gated, seed)?;
        with_save_policy(SavePolicy::All, || x.add(&down))
    }
}

impl Llama {
    /// A freshly initialized model (see the module docs), in `dtype`.
    pub fn new(config: Config, dtype: DType, seed: u64) -> Result<Llama> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let (c, f, v) = (config.dim, config.ffn_dim, config.vocab_size);
        let kv = config.n_kv_heads * config.head_dim();
        let std = 0.02;
        let out_std = std / (2.0 * config.n_layers as f64).sqrt();
        let mut normal =
            |shape: &[usize], s: f64| Weight::Dense(Tensor::randn(shape, s, dtype, &mut rng));
        let embed = normal(&[v, c], std);
        let blocks = (0..config.n_layers)
            .map(|_| Block {
                attn_norm: Tensor::ones(&[c], dtype),
                wq: normal(&[c, c], std),
                wk: normal(&[kv, c], std),
                wv: normal(&[kv, c], std),
                wo: normal(&[c, c], out_std),
                mlp_norm: Tensor::ones(&[c], dtype),
                w_gate: normal(&[f, c], std),
                w_up: normal(&[f, c], std),
                w_down: normal(&[c, f], out_std),
                lora: Default::default(),
            })
            .collect();
        let lm_head = (!config.tie_embeddings).then(|| normal(&[v, c], std));
        Llama::from_parts(config, embed, blocks, Tensor::ones(&[c], dtype), lm_head)
    }

    /// A model from given weights (shapes are checked against the config).
    pub fn from_parts(
        config: Config,
        embed: Weight,
        blocks: Vec<Block>,
        norm: Tensor,
        lm_head: Option<Weight>,
    ) -> Result<Llama> {
        config.validate()?;
        let rope = Rope::new(config.head_dim(), config.max_seq_len, config.rope_theta)?;
        let model = Llama {
            config,
            embed,
            blocks,
            norm,
            lm_head,
            recompute: Recompute::default(),
            activations: None,
            lora: None,
            base: None,
            dropout_seed: None,
            rope,
        };
        model.check_shapes()?;
        Ok(model)
    }

    fn check_shapes(&self) -> Result<()> {
        let expected = parameter_shapes(&self.config);
        let mut problems = Vec::new();
        let mut seen = 0;
        self.visit_weights(&mut |name, w| {
            seen += 1;
            match expected.iter().find(|(n, _)| n == name) {
                Some((_, shape)) if *shape == w.shape() => {}
                Some((_, shape)) => {
                    problems.push(format!("{name} is {:?}, expected {shape:?}", w.shape()))
                }
                None => problems.push(format!("{name} is not a parameter of this config")),
            }
        });
        if self.blocks.len() != self.config.n_layers || seen != expected.len() {
            problems.push(format!(
                "{} blocks for {} layers",
                self.blocks.len(),
                self.config.n_layers
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid("model", problems.join("; ")))
        }
    }

    /// Visits every weight, dense or quantized, with its Hugging Face name, in a fixed order (the order of
    /// `parameter_shapes`); the norms' gains come as dense weights.
    pub fn visit_weights(&self, f: &mut dyn FnMut(&str, &Weight)) {
        f("model.embed_tokens.weight", &self.embed);
        for (i, b) in self.blocks.iter().enumerate() {
            for (suffix, w) in block_weights(b) {
                f(&format!("model.layers.{i}.{suffix}"), &w);
            }
        }
        f("model.norm.weight", &Weight::Dense(self.norm.clone()));
        if let Some(head) = &self.lm_head {
            f("lm_head.weight", head);
        }
    }

    /// Visits every parameter with its name: with adapters (`add_lora`), each adapter's `A` and `B`
    /// (`model.layers.N.self_attn.q_proj.lora_A.weight`, ...), in block and `Target::ALL` order; without, every
    /// dense weight (quantized ones are frozen) in the order of `visit_weights`.
    pub fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        if self.lora.is_some() {
            for (i, b) in self.blocks.iter().enumerate() {
                for t in Target::ALL {
                    if let Some(l) = &b.lora[t.index()] {
                        let name = format!("model.layers.{i}.{}", t.module());
                        f(&format!("{name}.lora_A.weight"), &l.a);
                        f(&format!("{name}.lora_B.weight"), &l.b);
                    }
                }
            }
            return;
        }
        self.visit_weights(&mut |name, w| {
            if let Some(t) = w.dense() {
                f(name, t)
            }
        });
    }

    /// Every parameter, mutably, in the order of `visit`.
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        if self.lora.is_some() {
            return self
                .blocks
                .iter_mut()
                .flat_map(|b| b.lora.iter_mut().flatten())
                .flat_map(|l| [&mut l.a, &mut l.b])
                .collect();
        }
        self.dense_mut()
    }

    /// Every dense weight (trainable or frozen under LoRA), mutably, in the order of `visit_weights`.
    fn dense_mut(&mut self) -> Vec<&mut Tensor> {
        let mut out: Vec<&mut Tensor> = self.embed.dense_mut().into_iter().collect();
        for b in &mut self.blocks {
            let (attn_norm, mlp_norm, projections) = b.split_mut();
            let [q, k, v, o, gate, up, down] = projections.map(|w| w.dense_mut());
            out.push(attn_norm);
            out.extend([q, k, v, o].into_iter().flatten());
            out.push(mlp_norm);
            out.extend([gate, up, down].into_iter().flatten());
        }
        out.push(&mut self.norm);
        out.extend(self.lm_head.as_mut().and_then(|h| h.dense_mut()));
        out
    }

    /// The block formats of the quantized weights, with how many of each (empty for a dense model).
    pub fn quantized_weights(&self) -> Vec<(crate::io::gguf::GgmlType, usize)> {
        let mut out: Vec<(crate::io::gguf::GgmlType, usize)> = Vec::new();
        self.visit_weights(&mut |_, w| {
            if let Some(ty) = w.quant_type() {
                match out.iter_mut().find(|(t, _)| *t == ty) {
                    Some((_, n)) => *n += 1,
                    None => out.push((ty, 1)),
                }
            }
        });
        out
    }

    /// Quantizes the seven projections of every block to `ty` (those already in `ty` are kept as they are);
    /// they are frozen from then on. The embedding, the head and the norms stay as they are.
    pub fn quantize_projections(&mut self, ty: crate::io::gguf::GgmlType) -> Result<()> {
        for b in &mut self.blocks {
            for w in b.split_mut().2 {
                if w.quant_type() != Some(ty) {
                    *w = w.quantized(ty)?;
                }
            }
        }
        Ok(())
    }

    /// Adds a fresh LoRA adapter (A random, B zero: the model's outputs do not change) to the projections
    /// `config` names in every block, and freezes the base: from now on the parameters (`visit`,
    /// `params_mut`, `watch`) are the adapters only.
    pub fn add_lora(&mut self, config: &LoraConfig, seed: u64) -> Result<()> {
        config.validate()?;
        if self.lora.is_some() {
            return Err(Error::invalid("lora", "the model has adapters already"));
        }
        let mut rng = Rng::new(seed);
        for b in &mut self.blocks {
            for &t in &config.targets {
                let shape = b.weight(t).shape();
                b.lora[t.index()] = Some(Lora::new(shape[0], shape[1], config, &mut rng));
            }
        }
        self.lora = Some(config.clone());
        Ok(())
    }

    /// Shortens the context to `positions` (no more than it is): the rotary tables are rebuilt that long, so a
    /// generation that knows its length holds kilobytes of them instead of megabytes.
    pub fn limit_context(&mut self, positions: usize) -> Result<()> {
        let positions = positions.max(1);
        if positions < self.config.max_seq_len {
            self.rope = Rope::new(self.config.head_dim(), positions, self.config.rope_theta)?;
            self.config.max_seq_len = positions;
        }
        Ok(())
    }

    /// Folds every adapter into its base weight (`W + (α/r)·B A`, dense f32; a quantized base is dequantized)
    /// and removes the adapters: the model computes the same function as a plain one.
    pub fn merge_lora(&mut self) -> Result<()> {
        for b in &mut self.blocks {
            for t in Target::ALL {
                if let Some(l) = b.lora[t.index()].take() {
                    let base = b.weight(t).dequantized()?.to_dtype(DType::F32)?;
                    let merged = base.add(&l.delta()?.to_device(base.device())?)?.detach();
                    *b.split_mut().2[t.index()] = Weight::Dense(merged);
                }
            }
        }
        self.lora = None;
        Ok(())
    }

    /// Visits every parameter mutably, in the order of `visit`.
    pub fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        let mut names = Vec::new();
        self.visit(&mut |n, _| names.push(n.to_string()));
        for (name, t) in names.iter().zip(self.params_mut()) {
            f(name, t);
        }
    }

    /// Replaces every parameter by its leaf on `tape`, returning them (in `visit` order) for `Gradients::get`.
    pub fn watch(&mut self, tape: &Tape) -> Vec<Tensor> {
        let mut leaves = Vec::new();
        self.visit_mut(&mut |_, t| {
            *t = tape.watch(t);
            leaves.push(t.clone());
        });
        leaves
    }

    /// Moves every parameter to `device` (the rotary tables follow on first use there). Quantized weights
    /// keep their blocks in host memory; a product on a GPU uploads them there on first use (and keeps them).
    pub fn to_device(&mut self, device: crate::backend::Device) -> Result<()> {
        for p in self.dense_mut() {
            *p = p.to_device(device)?;
        }
        let adapters = self
            .blocks
            .iter_mut()
            .flat_map(|b| b.lora.iter_mut().flatten());
        for l in adapters {
            l.a = l.a.to_device(device)?;
            l.b = l.b.to_device(device)?;
        }
        Ok(())
    }

    /// Where the parameters live.
    pub fn device(&self) -> crate::backend::Device {
        self.norm.device()
    }

    /// Detaches every parameter from any tape.
    pub fn unwatch(&mut self) {
        self.visit_mut(&mut |_, t| *t = t.detach());
    }

    /// Logits `[B, T, V]` for token ids `[B, T]` (row-major). With a cache, the ids continue the cached
    /// sequence and their keys and values are appended.
    pub fn forward(
        &self,
        ids: &[u32],
        batch: usize,
        seq_len: usize,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        self.forward_positions(ids, batch, seq_len, cache, false)
    }

    /// As [`Llama::forward`], with the logits of each sequence's last position only, `[B, 1, V]`: what a
    /// decoder needs from a prompt, without the output head's work (and memory) for the other positions.
    pub fn forward_last(
        &self,
        ids: &[u32],
        batch: usize,
        seq_len: usize,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        self.forward_positions(ids, batch, seq_len, cache, true)
    }

    fn forward_positions(
        &self,
        ids: &[u32],
        batch: usize,
        seq_len: usize,
        cache: Option<&mut KvCache>,
        last_only: bool,
    ) -> Result<Tensor> {
        let x = self.hidden(ids, batch, seq_len, cache, last_only)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        head.linear(&x)?.to_dtype(self.norm.dtype())
    }

    /// The final norm's output `[B, T, dim]` (`[B, 1, dim]` with `last_only`): what the output head reads.
    fn hidden(
        &self,
        ids: &[u32],
        batch: usize,
        seq_len: usize,
        mut cache: Option<&mut KvCache>,
        last_only: bool,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let start = cache.as_ref().map_or(0, |c| c.len());
        if start + seq_len > cfg.max_seq_len {
            return Err(Error::invalid(
                "seq_len",
                format!(
                    "positions up to {} exceed the model's max_seq_len {}",
                    start + seq_len,
                    cfg.max_seq_len
                ),
            ));
        }
        let input = BlockInput {
            heads: cfg.n_heads,
            kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim(),
            eps: cfg.norm_eps,
            rope: self.rope.clone(),
            start,
            dropout_seed: None,
        };
        let dtype = self.norm.dtype();
        let mut x = self
            .embed
            .embedding(ids, &[batch, seq_len], self.activations.unwrap_or(dtype))?
            .to_device(self.norm.device())?;
        for (layer, b) in self.blocks.iter().enumerate() {
            let input = BlockInput {
                dropout_seed: self.dropout_seed.map(|s| Rng::derive(s, layer as u64 + 7)),
                ..input.clone()
            };
            let with_cache = cache.as_deref_mut().map(|c| (c, layer, cfg.max_seq_len));
            x = match (self.recompute, with_cache) {
                (_, Some(with_cache)) => b.forward(&x, &input, Some(with_cache))?,
                (Recompute::None, None) => b.forward(&x, &input, None)?,
                (Recompute::Selective, None) => {
                    with_save_policy(SavePolicy::Selective, || b.forward(&x, &input, None))?
                }
                (Recompute::Full, None) => {
                    let (b, x, input) = (b.clone(), x.clone(), input.clone());
                    checkpoint(move || b.forward(&x, &input, None))?
                }
            };
        }
        if let Some(cache) = cache {
            cache.advance(seq_len);
        }
        let act = x.dtype();
        let x = if last_only {
            x.narrow(1, seq_len.saturating_sub(1), seq_len.min(1))?
        } else {
            x
        };
        x.rms_norm(&self.norm.to_dtype(act)?, cfg.norm_eps)
    }

    /// Mean next-token cross-entropy (nats) of `inputs` against `targets`, both `[B, T]`, over the targets
    /// that are not [`super::sft::IGNORE`] (0 when none is).
    pub fn loss(
        &self,
        inputs: &[u32],
        targets: &[u32],
        batch: usize,
        seq_len: usize,
    ) -> Result<Tensor> {
        let x = self.hidden(inputs, batch, seq_len, None, false)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        head.cross_entropy(&x, targets, Some(super::sft::IGNORE))?
            .to_dtype(self.norm.dtype())
    }
}

/// What `Llama::causal_lm` computes.
pub struct CausalLmOutput {
    /// `[B, T, V]`.
    pub logits: Tensor,
    /// Mean cross-entropy of position t predicting token t + 1, over the `B · (T − 1)` predicted positions.
    pub loss: f64,
    /// `d loss / d parameter` with Hugging Face names, when asked for.
    pub grads: Option<Vec<(String, Tensor)>>,
}

impl Llama {
    /// Logits, the next-token loss as transformers computes it with `labels = input_ids`, and optionally every
    /// parameter's gradient. `ids` are `[B, T]` row-major, `T ≥ 2`.
    pub fn causal_lm(
        &mut self,
        ids: &[u32],
        batch: usize,
        seq_len: usize,
        with_grads: bool,
    ) -> Result<CausalLmOutput> {
        if seq_len < 2 || ids.len() != batch * seq_len {
            return Err(Error::invalid(
                "ids",
                format!(
                    "{} ids do not form {batch} rows of {seq_len} (at least 2) tokens",
                    ids.len()
                ),
            ));
        }
        let tape = Tape::new();
        let leaves = if with_grads {
            self.watch(&tape)
        } else {
            Vec::new()
        };
        let result = (|| {
            let logits = self.forward(ids, batch, seq_len, None)?;
            let v = self.config.vocab_size;
            let shifted = logits
                .narrow(1, 0, seq_len - 1)?
                .reshape(&[batch * (seq_len - 1), v])?;
            let targets: Vec<u32> = (0..batch)
                .flat_map(|b| ids[b * seq_len + 1..(b + 1) * seq_len].to_vec())
                .collect();
            let loss = shifted.cross_entropy(&targets, None)?;
            Ok::<_, Error>((logits, loss))
        })();
        self.unwatch();
        let (logits, loss) = result?;
        let grads = if with_grads {
            let mut grads = tape.backward(&loss)?;
            let mut names = Vec::new();
            self.visit(&mut |n, _| names.push(n.to_string()));
            let list = names
                .into_iter()
                .zip(&leaves)
                .map(|(n, l)| {
                    let g = match grads.remove(l) {
                        Some(g) => g,
                        None => Tensor::zeros_on(l.shape(), l.dtype(), l.device())?,
                    };
                    Ok((n, g))
                })
                .collect::<Result<_>>()?;
            Some(list)
        } else {
            None
        };
        Ok(CausalLmOutput {
            logits: logits.detach(),
            loss: loss.item()?,
            grads,
        })
    }
}

const BLOCK_NAMES: [&str; 9] = [
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

fn block_weights(b: &Block) -> [(&'static str, Weight); 9] {
    let w = [
        Weight::Dense(b.attn_norm.clone()),
        b.wq.clone(),
        b.wk.clone(),
        b.wv.clone(),
        b.wo.clone(),
        Weight::Dense(b.mlp_norm.clone()),
        b.w_gate.clone(),
        b.w_up.clone(),
        b.w_down.clone(),
    ];
    let mut w = w.map(Some);
    std::array::from_fn(|i| (BLOCK_NAMES[i], w[i].take().expect("taken once")))
}

/// Every weight's Hugging Face name and shape for `config`, in `visit_weights` order.
pub fn parameter_shapes(config: &Config) -> Vec<(String, Vec<usize>)> {
    let (c, f, v) = (config.dim, config.ffn_dim, config.vocab_size);
    let kv = config.n_kv_heads * config.head_dim();
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, c])];
    let block = [
        vec![c],
        vec![c, c],
        vec![kv, c],
        vec![kv, c],
        vec![c, c],
        vec![c],
        vec![f, c],
        vec![f, c],
        vec![c, f],
    ];
    for i in 0..config.n_layers {
        for (name, shape) in BLOCK_NAMES.iter().zip(&block) {
            out.push((format!("model.layers.{i}.{name}"), shape.clone()));
        }
    }
    out.push(("model.norm.weight".into(), vec![c]));
    if !config.tie_embeddings {
        out.push(("lm_head.weight".into(), vec![v, c]));
    }
    out
}
