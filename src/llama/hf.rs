//! Hugging Face checkpoints: `config.json` (the transformers 4 layout with a top-level `rope_theta`, and the
//! transformers 5 layout with `rope_parameters`) and `model.safetensors`, single or sharded through
//! `model.safetensors.index.json`, memory-mapped. Unknown RoPE scaling types are errors, not silent defaults.

use super::config::Config;
use super::model::{Block, Llama};
use super::weight::Weight;
use crate::error::{Error, Result};
use crate::io::quant::{dequant_bf16, dequant_f16, dequant_f32, dequant_f64};
use crate::tensor::Tensor;
use safetensors::tensor::Dtype as StDtype;
use safetensors::SafeTensors;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The model configuration described by a transformers `config.json`.
pub fn config_from_json(json: &Value, path: &Path) -> Result<Config> {
    let int = |key: &str| -> Result<usize> {
        json.get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| Error::format(path, format!("missing or non-integer {key}")))
    };
    let float = |key: &str, default: f64| json.get(key).and_then(Value::as_f64).unwrap_or(default);
    if let Some(t) = json.get("model_type").and_then(Value::as_str) {
        if !matches!(t, "llama" | "mistral") {
            return Err(Error::format(
                path,
                format!("model_type {t:?} is not a llama model"),
            ));
        }
    }
    let (theta, rope_type) = match json.get("rope_parameters") {
        Some(p) => (
            p.get("rope_theta").and_then(Value::as_f64).unwrap_or(1e4),
            p.get("rope_type")
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
        None => (
            float("rope_theta", 1e4),
            json.get("rope_scaling").filter(|v| !v.is_null()).map(|s| {
                s.get("rope_type")
                    .or(s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_string()
            }),
        ),
    };
    if let Some(t) = rope_type.filter(|t| t != "default") {
        return Err(Error::format(
            path,
            format!("rope type {t:?} is not supported (only the default rotary embedding)"),
        ));
    }
    let heads = int("num_attention_heads")?;
    let dim = int("hidden_size")?;
    let config = Config {
        vocab_size: int("vocab_size")?,
        dim,
        n_layers: int("num_hidden_layers")?,
        n_heads: heads,
        n_kv_heads: json
            .get("num_key_value_heads")
            .and_then(Value::as_u64)
            .map_or(heads, |v| v as usize),
        ffn_dim: int("intermediate_size")?,
        max_seq_len: json
            .get("max_position_embeddings")
            .and_then(Value::as_u64)
            .map_or(2048, |v| v as usize),
        norm_eps: float("rms_norm_eps", 1e-6),
        rope_theta: theta,
        tie_embeddings: json
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    if let Some(d) = json.get("head_dim").and_then(Value::as_u64) {
        if d as usize != dim / heads.max(1) {
            return Err(Error::format(
                path,
                format!("head_dim {d} differs from hidden_size / num_attention_heads"),
            ));
        }
    }
    config
        .validate()
        .map_err(|e| Error::format(path, e.to_string()))?;
    Ok(config)
}

/// The safetensors files of a checkpoint folder: `model.safetensors`, or the shards an index names.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    let text = std::fs::read(&index_path).map_err(|e| Error::io(&index_path, e))?;
    let index: Value = serde_json::from_slice(&text)
        .map_err(|e| Error::format(&index_path, format!("bad json: {e}")))?;
    let map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::format(&index_path, "no weight_map"))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for file in map.values() {
        let name = file
            .as_str()
            .ok_or_else(|| Error::format(&index_path, "a weight_map entry is not a file name"))?;
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Error::format(
                &index_path,
                format!("shard name {name:?} leaves the folder"),
            ));
        }
        let path = dir.join(name);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every floating-point tensor of a safetensors file, as f32 (f32, f16, bf16 and f64 are read; integer tensors
/// are skipped — see `read_i64`). The file is memory-mapped.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and dropped before this function returns; a file truncated underneath us
    // could fault, as with any memory-mapped reader.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&map)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let convert: fn(&[u8], &mut [f32]) = match view.dtype() {
            StDtype::F32 => dequant_f32,
            StDtype::F64 => dequant_f64,
            StDtype::F16 => dequant_f16,
            StDtype::BF16 => dequant_bf16,
            _ => continue,
        };
        let mut values = vec![0.0f32; view.shape().iter().product()];
        convert(view.data(), &mut values);
        out.insert(name, Tensor::from_vec(values, view.shape())?);
    }
    Ok(out)
}

/// An i64 tensor (token ids) of a safetensors file: its shape and values.
pub fn read_i64(path: &Path, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    let view = st
        .tensor(name)
        .map_err(|e| Error::format(path, format!("{name}: {e}")))?;
    if view.dtype() != StDtype::I64 {
        return Err(Error::format(
            path,
            format!("{name} is {:?}, not I64", view.dtype()),
        ));
    }
    let values = view
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Ok((view.shape().to_vec(), values))
}

/// Loads a Hugging Face LLaMA folder (`config.json` + safetensors), checking every name and shape.
pub fn load_hf(dir: &Path) -> Result<Llama> {
    let config_path = dir.join("config.json");
    let text = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let json: Value = serde_json::from_slice(&text)
        .map_err(|e| Error::format(&config_path, format!("bad json: {e}")))?;
    let config = config_from_json(&json, &config_path)?;
    let mut tensors = HashMap::new();
    for file in safetensors_files(dir)? {
        tensors.extend(
            read_tensors(&file)?
                .into_iter()
                .map(|(n, t)| (n, Weight::Dense(t))),
        );
    }
    if config.tie_embeddings {
        tensors.remove("lm_head.weight");
    }
    model_from_tensors(config, &mut tensors, dir)
}

/// Builds a model from named weights (dense, or quantized where the model reads them as matrices: the
/// projections, the embedding and the head), checking every name and shape.
pub fn model_from_tensors(
    config: Config,
    tensors: &mut HashMap<String, Weight>,
    path: &Path,
) -> Result<Llama> {
    let mut take = |name: &str| -> Result<Weight> {
        tensors
            .remove(name)
            .ok_or_else(|| Error::format(path, format!("missing tensor {name}")))
    };
    let gain = |name: &str, w: Weight| -> Result<Tensor> {
        w.dense().cloned().ok_or_else(|| {
            Error::format(
                path,
                format!("{name} is quantized; a norm's gain must be dense"),
            )
        })
    };
    let embed = take("model.embed_tokens.weight")?;
    let blocks = (0..config.n_layers)
        .map(|i| {
            let mut p = |s: &str| take(&format!("model.layers.{i}.{s}"));
            Ok(Block {
                attn_norm: gain("input_layernorm.weight", p("input_layernorm.weight")?)?,
                wq: p("self_attn.q_proj.weight")?,
                wk: p("self_attn.k_proj.weight")?,
                wv: p("self_attn.v_proj.weight")?,
                wo: p("self_attn.o_proj.weight")?,
                mlp_norm: gain(
                    "post_attention_layernorm.weight",
                    p("post_attention_layernorm.weight")?,
                )?,
                w_gate: p("mlp.gate_proj.weight")?,
                w_up: p("mlp.up_proj.weight")?,
                w_down: p("mlp.down_proj.weight")?,
                lora: Default::default(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let norm = gain("model.norm.weight", take("model.norm.weight")?)?;
    let lm_head = if config.tie_embeddings {
        None
    } else {
        Some(take("lm_head.weight")?)
    };
    // `from_parts` checks every shape against the config; its error gains the file's name here.
    Llama::from_parts(config, embed, blocks, norm, lm_head)
        .map_err(|e| Error::format(path, e.to_string()))
}
