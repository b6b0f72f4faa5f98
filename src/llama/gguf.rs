//! The LLaMA view of a GGUF file (the reader is [`crate::io::gguf`]): hyper-parameters from its metadata and
//! every tensor as `f32` under its Hugging Face name. [`load_llama`] also undoes the row permutation that
//! llama.cpp's converter applies to the query and key projections, so the weights match the original Hugging
//! Face checkpoint (rotate-half RoPE convention).

use std::path::Path;

use crate::error::{Error, Result};
use rayon::prelude::*;

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::{is_block_format, QuantMatrix};
use crate::io::gguf::{Gguf, TensorInfo};
use crate::llama::config::Config;
use crate::llama::weight::Weight;
use crate::tensor::Tensor;

/// A LLaMA checkpoint read from GGUF: hyper-parameters and every tensor as `f32` under its Hugging Face name,
/// with q/k projections un-permuted (see [`load_llama`]).
#[derive(Clone)]
pub struct GgufLlama {
    /// The hyper-parameters; `tie_embeddings` is true when the file has no `output.weight`.
    pub config: Config,
    /// `(hugging face name, row-major shape, data)` for every tensor in the file, in file order.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl std::fmt::Debug for GgufLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufLlama")
            .field("config", &self.config)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufLlama {
    /// The tensor with Hugging Face name `name`.
    pub fn tensor(&self, name: &str) -> Option<(&[usize], &[f32])> {
        self.tensors
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, d)| (s.as_slice(), d.as_slice()))
    }
}

/// Which of llama.cpp's permuted projections a tensor is, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Permuted {
    No,
    Query,
    Key,
}

/// Maps a llama.cpp tensor name to its Hugging Face name; names it does not know are returned unchanged.
pub fn hf_name(gguf_name: &str) -> String {
    hf_name_and_permutation(gguf_name).0
}

fn hf_name_and_permutation(gguf_name: &str) -> (String, Permuted) {
    match gguf_name {
        "token_embd.weight" => return ("model.embed_tokens.weight".into(), Permuted::No),
        "output_norm.weight" => return ("model.norm.weight".into(), Permuted::No),
        "output.weight" => return ("lm_head.weight".into(), Permuted::No),
        _ => {}
    }
    let Some(rest) = gguf_name.strip_prefix("blk.") else {
        return (gguf_name.to_owned(), Permuted::No);
    };
    let Some((layer, rest)) = rest.split_once('.') else {
        return (gguf_name.to_owned(), Permuted::No);
    };
    if layer.is_empty() || !layer.bytes().all(|c| c.is_ascii_digit()) {
        return (gguf_name.to_owned(), Permuted::No);
    }
    let Some((stem, suffix)) = rest.rsplit_once('.') else {
        return (gguf_name.to_owned(), Permuted::No);
    };
    let (module, permuted) = match stem {
        "attn_norm" => ("input_layernorm", Permuted::No),
        "attn_q" => ("self_attn.q_proj", Permuted::Query),
        "attn_k" => ("self_attn.k_proj", Permuted::Key),
        "attn_v" => ("self_attn.v_proj", Permuted::No),
        "attn_output" => ("self_attn.o_proj", Permuted::No),
        "ffn_norm" => ("post_attention_layernorm", Permuted::No),
        "ffn_gate" => ("mlp.gate_proj", Permuted::No),
        "ffn_up" => ("mlp.up_proj", Permuted::No),
        "ffn_down" => ("mlp.down_proj", Permuted::No),
        _ => return (gguf_name.to_owned(), Permuted::No),
    };
    (format!("model.layers.{layer}.{module}.{suffix}"), permuted)
}

/// Undoes llama.cpp's q/k row permutation in place of a copy.
///
/// llama.cpp's converter stores the Hugging Face weight `w` of shape `[n_head·D, C]` (D = head dim) as
/// `w.reshape(n_head, 2, D/2, C).swapaxes(1, 2).reshape(n_head·D, C)`, which interleaves the two halves of
/// each head (rotate-half RoPE → llama.cpp's adjacent-pair RoPE). So stored row `h·D + 2i + j` is original row
/// `h·D + j·D/2 + i` (i < D/2, j ∈ {0, 1}); this function moves every row back. `cols` is the product of the
/// remaining dims (1 for a bias). Returns `None` when `rows` is not `n_head` heads of even size.
pub fn unpermute_qk(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Option<Vec<f32>> {
    if data.len() != rows * cols {
        return None;
    }
    Some(reorder_rows(data, &unpermute_order(rows, n_head)?))
}

/// llama.cpp's q/k row permutation, as its converter applies it (the inverse of [`unpermute_qk`]): the
/// Hugging Face weight `[n_head·D, cols]` as a GGUF file stores it; `None` when `rows` is not `n_head` heads of
/// even size.
pub fn permute_qk(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Option<Vec<f32>> {
    if data.len() != rows * cols {
        return None;
    }
    // Stored row `order[r]` holds original row `r`.
    let order = unpermute_order(rows, n_head)?;
    let mut inverse = vec![0; rows];
    for (r, &stored) in order.iter().enumerate() {
        inverse[stored] = r;
    }
    Some(reorder_rows(data, &inverse))
}

/// Rows of `data` (row-major, `order.len()` rows) in `order`: row `i` of the result is row `order[i]`.
fn reorder_rows(data: &[f32], order: &[usize]) -> Vec<f32> {
    let cols = data.len() / order.len().max(1);
    order
        .iter()
        .flat_map(|&r| data[r * cols..(r + 1) * cols].iter().copied())
        .collect()
}

/// The row order that undoes the permutation: original row `h·D + j·D/2 + i` is stored row `h·D + 2i + j`
/// (see [`unpermute_qk`]); `None` when `rows` is not `n_head` heads of even size.
pub fn unpermute_order(rows: usize, n_head: usize) -> Option<Vec<usize>> {
    if n_head == 0 || !rows.is_multiple_of(n_head) || !(rows / n_head).is_multiple_of(2) {
        return None;
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut order = vec![0; rows];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                order[h * head_dim + j * half + i] = h * head_dim + 2 * i + j;
            }
        }
    }
    Some(order)
}

/// Opens the GGUF LLaMA checkpoint at `path` and reads it fully: see [`llama_from_gguf`].
pub fn load_llama(path: impl AsRef<Path>) -> Result<GgufLlama> {
    llama_from_gguf(&Gguf::open(path)?)
}

/// Reads a LLaMA checkpoint from an opened GGUF file: checks `general.architecture == "llama"`, reads the
/// `llama.*` hyper-parameters (`attention.head_count_kv` defaults to `head_count`, `rope.freq_base` to 1e4),
/// takes the vocabulary size from the token embedding, dequantizes every tensor to `f32` (in parallel), renames
/// it to its Hugging Face name ([`hf_name`]) and un-permutes the q and k projections ([`unpermute_qk`], with
/// `n_heads` for q and `n_kv_heads` for k). Tensors with unknown names are kept under their GGUF names.
pub fn llama_from_gguf(gguf: &Gguf) -> Result<GgufLlama> {
    let config = config_from_gguf(gguf)?;
    let tensors = gguf
        .tensor_infos()
        .par_iter()
        .map(|info| {
            let (shape, data) = gguf.tensor_f32(&info.name)?;
            let (name, rows) = hf_name_and_rows(gguf, &config, info)?;
            let data = match rows {
                None => data,
                Some(order) => reorder_rows(&data, &order),
            };
            Ok((name, shape, data))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(GgufLlama { config, tensors })
}

/// Every tensor of an opened GGUF LLaMA file as a model weight under its Hugging Face name: the matrices
/// stored in a block format ([`is_block_format`]) stay in it as [`QuantMatrix`]es when `keep_quantized`
/// (reading the file's own pages; the q/k projections get their rows reordered in a copy), everything else is
/// dequantized to f32.
pub fn weights_from_gguf(
    gguf: &Arc<Gguf>,
    config: &Config,
    keep_quantized: bool,
) -> Result<HashMap<String, Weight>> {
    gguf.tensor_infos()
        .par_iter()
        .map(|info| {
            let (name, rows) = hf_name_and_rows(gguf, config, info)?;
            let shape = info.shape();
            if keep_quantized && is_block_format(info.ggml_type) && shape.len() == 2 {
                let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = gguf.clone();
                let range = gguf.tensor_range(&info.name)?;
                let q =
                    QuantMatrix::from_shared(info.ggml_type, [shape[0], shape[1]], owner, range)
                        .map_err(|e| Error::format(gguf.path(), format!("{}: {e}", info.name)))?;
                let q = match rows {
                    None => q,
                    Some(order) => q.select_rows(&order)?,
                };
                return Ok((name, Weight::Quantized(q)));
            }
            let (shape, data) = gguf.tensor_f32(&info.name)?;
            let data = match rows {
                None => data,
                Some(order) => reorder_rows(&data, &order),
            };
            Ok((name, Weight::Dense(Tensor::from_vec(data, &shape)?)))
        })
        .collect()
}

/// The Hugging Face name of a tensor and, for the q and k projections, the stored row each original row is
/// ([`unpermute_order`], with `n_heads` for q and `n_kv_heads` for k).
fn hf_name_and_rows(
    gguf: &Gguf,
    config: &Config,
    info: &TensorInfo,
) -> Result<(String, Option<Vec<usize>>)> {
    let (name, permuted) = hf_name_and_permutation(&info.name);
    let heads = match permuted {
        Permuted::No => return Ok((name, None)),
        Permuted::Query => config.n_heads,
        Permuted::Key => config.n_kv_heads,
    };
    let shape = info.shape();
    let rows = shape.first().copied().unwrap_or(1);
    let order = unpermute_order(rows, heads).ok_or_else(|| {
        Error::format(
            gguf.path(),
            format!(
                "tensor {}: shape {shape:?} does not split into {heads} heads of even size",
                info.name
            ),
        )
    })?;
    Ok((name, Some(order)))
}

/// The hyper-parameters of an opened GGUF LLaMA file (see [`llama_from_gguf`]).
pub fn config_from_gguf(gguf: &Gguf) -> Result<Config> {
    let path = gguf.path();
    let fail = |msg: String| Error::format(path, msg);
    let arch = gguf.require_str("general.architecture")?;
    if arch != "llama" {
        return Err(fail(format!(
            "general.architecture is {arch:?}, expected \"llama\""
        )));
    }
    let usize_key = |key: &str| -> Result<usize> {
        let v = gguf.require_u64(key)?;
        usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| {
            fail(format!(
                "metadata key {key} must be a positive size, got {v}"
            ))
        })
    };
    let max_seq_len = usize_key("llama.context_length")?;
    let dim = usize_key("llama.embedding_length")?;
    let n_layers = usize_key("llama.block_count")?;
    let ffn_dim = usize_key("llama.feed_forward_length")?;
    let n_heads = usize_key("llama.attention.head_count")?;
    let n_kv_heads = match gguf.get_u64("llama.attention.head_count_kv")? {
        None => n_heads,
        Some(_) => usize_key("llama.attention.head_count_kv")?,
    };
    if n_heads % n_kv_heads != 0 {
        return Err(fail(format!(
            "llama.attention.head_count {n_heads} is not a multiple of head_count_kv {n_kv_heads}"
        )));
    }
    let rope_theta = gguf.get_f64("llama.rope.freq_base")?.unwrap_or(1e4);
    let norm_eps = gguf.require_f64("llama.attention.layer_norm_rms_epsilon")?;
    if !(rope_theta.is_finite() && rope_theta > 0.0 && norm_eps.is_finite() && norm_eps >= 0.0) {
        return Err(fail(format!(
            "bad rope.freq_base {rope_theta} or layer_norm_rms_epsilon {norm_eps}"
        )));
    }

    let embd = gguf
        .tensor_info("token_embd.weight")
        .ok_or_else(|| fail("missing tensor token_embd.weight".into()))?;
    let embd_shape = embd.shape();
    if embd_shape.len() != 2 || embd_shape[1] != dim {
        return Err(fail(format!(
            "token_embd.weight has shape {embd_shape:?}, expected [vocab, {dim}]"
        )));
    }
    let vocab_size = embd_shape[0];
    let tie_embeddings = gguf.tensor_info("output.weight").is_none();

    let config = Config {
        vocab_size,
        dim,
        n_layers,
        n_heads,
        n_kv_heads,
        ffn_dim,
        max_seq_len,
        norm_eps,
        rope_theta,
        tie_embeddings,
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::gguf::tests::{f32_bytes, temp_file, Writer};
    use crate::io::gguf::Value;

    /// llama.cpp's permutation, as its converter writes it, for checking the inverse.
    fn permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
        let d = rows / n_head;
        let mut out = vec![0f32; w.len()];
        // out.reshape(n_head, D/2, 2, C)[h, i, j] = w.reshape(n_head, 2, D/2, C)[h, j, i]
        for hd in 0..n_head {
            for i in 0..d / 2 {
                for j in 0..2 {
                    let dst = (hd * d + i * 2 + j) * cols;
                    let src = (hd * d + j * (d / 2) + i) * cols;
                    out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (rows, cols, n_head) = (12, 5, 3);
        let w: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let p = permute(&w, rows, cols, n_head);
        assert_ne!(p, w);
        // Head 0, D = 4: stored rows are original rows 0, 2, 1, 3.
        assert_eq!(&p[cols..2 * cols], &w[2 * cols..3 * cols]);
        assert_eq!(unpermute_qk(&p, rows, cols, n_head).unwrap(), w);
        assert_eq!(permute_qk(&w, rows, cols, n_head).unwrap(), p);
        assert!(permute_qk(&w, rows, cols, 5).is_none());
        assert!(unpermute_qk(&p, rows, cols, 5).is_none());
        assert!(unpermute_qk(&p, rows, cols, 12).is_none());
    }

    #[test]
    fn hf_names() {
        assert_eq!(hf_name("token_embd.weight"), "model.embed_tokens.weight");
        assert_eq!(hf_name("output.weight"), "lm_head.weight");
        assert_eq!(hf_name("output_norm.weight"), "model.norm.weight");
        assert_eq!(
            hf_name("blk.12.attn_norm.weight"),
            "model.layers.12.input_layernorm.weight"
        );
        assert_eq!(
            hf_name("blk.0.attn_output.weight"),
            "model.layers.0.self_attn.o_proj.weight"
        );
        assert_eq!(
            hf_name("blk.3.ffn_norm.weight"),
            "model.layers.3.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name("blk.3.ffn_down.weight"),
            "model.layers.3.mlp.down_proj.weight"
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), "blk.x.attn_q.weight");
        assert_eq!(hf_name("rope_freqs.weight"), "rope_freqs.weight");
    }

    /// A two-layer llama checkpoint with F32 weights whose values encode their HF row index.
    fn tiny_llama(tied: bool) -> (Writer, Vec<f32>, Vec<f32>) {
        let (dim, heads, kv_heads, ffn, vocab) = (8usize, 2usize, 1usize, 16usize, 10usize);
        let head_dim = dim / heads;
        let mut w = Writer::new();
        w.kv("general.architecture", Value::String("llama".into()))
            .kv("llama.context_length", Value::U32(64))
            .kv("llama.embedding_length", Value::U32(dim as u32))
            .kv("llama.block_count", Value::U32(2))
            .kv("llama.feed_forward_length", Value::U32(ffn as u32))
            .kv("llama.attention.head_count", Value::U32(heads as u32))
            .kv("llama.attention.head_count_kv", Value::U32(kv_heads as u32))
            .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
        let mat = |rows: usize, cols: usize, base: f32| -> Vec<f32> {
            (0..rows * cols)
                .map(|i| base + (i / cols) as f32 + (i % cols) as f32 / 100.0)
                .collect()
        };
        let q = mat(dim, dim, 1000.0);
        let k = mat(kv_heads * head_dim, dim, 2000.0);
        w.tensor(
            "token_embd.weight",
            &[dim as u64, vocab as u64],
            0,
            f32_bytes(&mat(vocab, dim, 0.0)),
        );
        for l in 0..2 {
            let t = |n: &str| format!("blk.{l}.{n}.weight");
            w.tensor(
                &t("attn_norm"),
                &[dim as u64],
                0,
                f32_bytes(&vec![1.0; dim]),
            );
            w.tensor(
                &t("attn_q"),
                &[dim as u64, dim as u64],
                0,
                f32_bytes(&permute(&q, dim, dim, heads)),
            );
            w.tensor(
                &t("attn_k"),
                &[dim as u64, (kv_heads * head_dim) as u64],
                0,
                f32_bytes(&permute(&k, kv_heads * head_dim, dim, kv_heads)),
            );
            w.tensor(
                &t("attn_v"),
                &[dim as u64, (kv_heads * head_dim) as u64],
                0,
                f32_bytes(&k),
            );
            w.tensor(
                &t("attn_output"),
                &[dim as u64, dim as u64],
                0,
                f32_bytes(&q),
            );
            w.tensor(&t("ffn_norm"), &[dim as u64], 0, f32_bytes(&vec![1.0; dim]));
            for n in ["ffn_gate", "ffn_up"] {
                w.tensor(
                    &t(n),
                    &[dim as u64, ffn as u64],
                    0,
                    f32_bytes(&mat(ffn, dim, 0.0)),
                );
            }
            w.tensor(
                &t("ffn_down"),
                &[ffn as u64, dim as u64],
                0,
                f32_bytes(&mat(dim, ffn, 0.0)),
            );
        }
        w.tensor(
            "output_norm.weight",
            &[dim as u64],
            0,
            f32_bytes(&vec![1.0; dim]),
        );
        if !tied {
            w.tensor(
                "output.weight",
                &[dim as u64, vocab as u64],
                0,
                f32_bytes(&mat(vocab, dim, 0.0)),
            );
        }
        (w, q, k)
    }

    #[test]
    fn load_tiny_llama() {
        for tied in [true, false] {
            let (w, q, k) = tiny_llama(tied);
            let path = temp_file(&w.to_bytes());
            let m = load_llama(&path);
            std::fs::remove_file(&path).unwrap();
            let m = m.unwrap();
            assert_eq!(
                (
                    m.config.vocab_size,
                    m.config.dim,
                    m.config.n_layers,
                    m.config.n_heads,
                    m.config.n_kv_heads,
                    m.config.ffn_dim
                ),
                (10, 8, 2, 2, 1, 16)
            );
            assert_eq!((m.config.max_seq_len, m.config.rope_theta), (64, 1e4));
            assert!((m.config.norm_eps - 1e-5).abs() < 1e-10);
            assert_eq!(m.config.tie_embeddings, tied);
            assert_eq!(m.tensors.len(), 1 + 2 * 9 + 1 + usize::from(!tied));
            let (shape, data) = m.tensor("model.layers.1.self_attn.q_proj.weight").unwrap();
            assert_eq!((shape, data), (&[8usize, 8][..], &q[..]));
            let (shape, data) = m.tensor("model.layers.0.self_attn.k_proj.weight").unwrap();
            assert_eq!((shape, data), (&[4usize, 8][..], &k[..]));
            let (shape, _) = m.tensor("model.layers.0.mlp.down_proj.weight").unwrap();
            assert_eq!(shape, [8, 16]);
            assert_eq!(m.tensor("model.embed_tokens.weight").unwrap().0, [10, 8]);
            assert_eq!(m.tensor("lm_head.weight").is_some(), !tied);
        }
    }

    #[test]
    fn load_llama_rejects_other_architectures() {
        let (mut w, _, _) = tiny_llama(true);
        w.kvs[0].1 = Value::String("gpt2".into());
        let path = temp_file(&w.to_bytes());
        let r = load_llama(&path);
        std::fs::remove_file(&path).unwrap();
        match r {
            Err(Error::Format { msg, .. }) => assert!(msg.contains("expected \"llama\""), "{msg}"),
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    #[test]
    fn smollm2_real_file() {
        let Some(path) = crate::io::gguf::tests::smollm2_gguf() else {
            return;
        };
        let g = Gguf::open(&path).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.tensor_infos().len(), 272);
        let t0 = std::time::Instant::now();
        let m = load_llama(&path).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        println!("load_llama(SmolLM2-135M Q4_1): {secs:.3} s");
        assert_eq!(
            (
                m.config.n_layers,
                m.config.dim,
                m.config.ffn_dim,
                m.config.n_heads,
                m.config.n_kv_heads
            ),
            (30, 576, 1536, 9, 3)
        );
        assert_eq!((m.config.vocab_size, m.config.max_seq_len), (49152, 8192));
        assert_eq!(m.config.rope_theta, 1e5);
        assert!((m.config.norm_eps - 1e-5).abs() < 1e-9);
        assert!(m.config.tie_embeddings);
        assert_eq!(m.tensors.len(), 272);
        assert_eq!(
            m.tensor("model.embed_tokens.weight").unwrap().0,
            [49152, 576]
        );
        assert_eq!(
            m.tensor("model.layers.29.self_attn.k_proj.weight")
                .unwrap()
                .0,
            [192, 576]
        );
        assert_eq!(
            m.tensor("model.layers.0.mlp.down_proj.weight").unwrap().0,
            [576, 1536]
        );
        for (name, _, data) in &m.tensors {
            assert!(
                data.iter().all(|x| x.is_finite()),
                "{name} has non-finite values"
            );
        }
        let norm = m.tensor("model.norm.weight").unwrap().1;
        assert!(norm.iter().any(|&x| x != 0.0));
    }
}
