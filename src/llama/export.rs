//! A model written as a GGUF file that llama.cpp (and Ollama, and transformers' `gguf_file=`) runs: the
//! `llama.*` hyper-parameters, llama.cpp's tensor names with its q/k row permutation applied (the inverse of
//! what [`super::gguf`] undoes on reading), the matrices in f32, f16, Q8_0 or Q4_0 (norms stay f32; a matrix
//! whose rows are not whole blocks is written f16), the tokenizer and the chat template. A tokenizer read from
//! GGUF metadata is written back as it was; ours as a `gpt2` byte-level vocabulary (tokens in GPT-2's alphabet,
//! merges, BOS/EOS as control tokens) with the `smollm` pre-tokenizer, llama.cpp's closest to our rules
//! (single digits; it differs from ours around non-ASCII punctuation, which we count as letters).

use super::checkpoint::dense_weights;
use super::gguf::permute_qk;
use super::model::Llama;
use super::pretrained::TextTokenizer;
use crate::data::bpe_vocab::PreTokenizer;
use crate::error::{Error, Result};
use crate::io::gguf::{GgmlType, GgufWriter, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The types a model can be exported in.
pub const EXPORT_TYPES: [GgmlType; 4] =
    [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0];

/// llama.cpp's name for a Hugging Face tensor name, and how many heads its rows are permuted over (q: the
/// attention heads, k: the key/value heads); `None` for a name that is not part of a LLaMA.
fn gguf_name(model: &Llama, hf: &str) -> Option<(String, Option<usize>)> {
    let cfg = &model.config;
    match hf {
        "model.embed_tokens.weight" => return Some(("token_embd.weight".into(), None)),
        "model.norm.weight" => return Some(("output_norm.weight".into(), None)),
        "lm_head.weight" => return Some(("output.weight".into(), None)),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, module) = rest.split_once('.')?;
    let (stem, heads) = match module {
        "input_layernorm.weight" => ("attn_norm", None),
        "self_attn.q_proj.weight" => ("attn_q", Some(cfg.n_heads)),
        "self_attn.k_proj.weight" => ("attn_k", Some(cfg.n_kv_heads)),
        "self_attn.v_proj.weight" => ("attn_v", None),
        "self_attn.o_proj.weight" => ("attn_output", None),
        "post_attention_layernorm.weight" => ("ffn_norm", None),
        "mlp.gate_proj.weight" => ("ffn_gate", None),
        "mlp.up_proj.weight" => ("ffn_up", None),
        "mlp.down_proj.weight" => ("ffn_down", None),
        _ => return None,
    };
    Some((format!("blk.{layer}.{stem}.weight"), heads))
}

/// GGUF's `general.file_type` for a file whose matrices are `ty`.
fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        _ => 7,
    }
}

/// `data` (row-major `[rows, cols]`) in `ty`: f32, f16, or blocks of Q8_0 / Q4_0.
fn encode(data: &[f32], ty: GgmlType) -> Result<Vec<u8>> {
    match ty {
        GgmlType::F32 => Ok(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        GgmlType::F16 => Ok(data
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect()),
        _ => crate::io::quantize::quantize(data, ty),
    }
}

/// Writes `model` (a LoRA model has its adapters merged first; quantized weights are dequantized and
/// re-encoded) with `tokenizer` to `path` as GGUF v3, its matrices in `ty` (one of [`EXPORT_TYPES`]), named
/// `name` (`general.name`).
pub fn export_gguf(
    model: &Llama,
    tokenizer: Option<&TextTokenizer>,
    path: &Path,
    ty: GgmlType,
    name: &str,
) -> Result<()> {
    if !EXPORT_TYPES.contains(&ty) {
        return Err(Error::invalid(
            "gguf export",
            format!("type {ty} is not one of F32, F16, Q8_0, Q4_0"),
        ));
    }
    let cfg = &model.config;
    let mut w = GgufWriter::new();
    let u32v = |v: usize| Value::U32(v as u32);
    w.kv("general.architecture", Value::String("llama".into()))
        .kv("general.name", Value::String(name.into()))
        .kv("general.file_type", Value::U32(file_type(ty)))
        .kv("general.alignment", Value::U32(32))
        .kv("llama.context_length", u32v(cfg.max_seq_len))
        .kv("llama.embedding_length", u32v(cfg.dim))
        .kv("llama.block_count", u32v(cfg.n_layers))
        .kv("llama.feed_forward_length", u32v(cfg.ffn_dim))
        .kv("llama.attention.head_count", u32v(cfg.n_heads))
        .kv("llama.attention.head_count_kv", u32v(cfg.n_kv_heads))
        .kv("llama.rope.dimension_count", u32v(cfg.dim / cfg.n_heads))
        .kv("llama.rope.freq_base", Value::F32(cfg.rope_theta as f32))
        .kv(
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(cfg.norm_eps as f32),
        )
        .kv("llama.vocab_size", u32v(cfg.vocab_size));
    if let Some(t) = tokenizer {
        for (key, value) in tokenizer_metadata(t)? {
            w.kv(&key, value);
        }
    }
    let mut merged;
    let model = if model.lora.is_some() {
        merged = model.clone();
        merged.merge_lora()?;
        &merged
    } else {
        model
    };
    for (hf, tensor) in dense_weights(model)? {
        let Some((gguf, heads)) = gguf_name(model, &hf) else {
            return Err(Error::invalid(
                "gguf export",
                format!("tensor {hf} has no llama.cpp name"),
            ));
        };
        let shape = tensor.shape().to_vec();
        let mut data = tensor.to_dtype(crate::DType::F32)?.to_vec::<f32>()?;
        if let Some(heads) = heads {
            data = permute_qk(&data, shape[0], shape[1], heads).ok_or_else(|| {
                Error::invalid(
                    "gguf export",
                    format!("{hf}: {shape:?} is not {heads} even heads"),
                )
            })?;
        }
        let tensor_ty = match ty {
            _ if shape.len() != 2 => GgmlType::F32,
            GgmlType::Q8_0 | GgmlType::Q4_0 if !shape[1].is_multiple_of(32) => GgmlType::F16,
            other => other,
        };
        w.tensor(&gguf, &shape, tensor_ty, encode(&data, tensor_ty)?)?;
    }
    w.write(path)
}

/// The `tokenizer.*` metadata of `tokenizer` (see the module docs).
fn tokenizer_metadata(tokenizer: &TextTokenizer) -> Result<BTreeMap<String, Value>> {
    match tokenizer {
        TextTokenizer::Vocab(_, json) => serde_json::from_slice(json)
            .map_err(|e| Error::invalid("tokenizer metadata", e.to_string())),
        TextTokenizer::Ours(t) => Ok(t.gguf_metadata(PreTokenizer::Gpt2IndividualDigits)),
    }
}
