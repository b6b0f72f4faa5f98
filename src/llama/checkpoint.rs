//! Checkpoints. Weights go to `model.safetensors` with Hugging Face names (f32) beside a transformers-style
//! `config.json`, so a trained model loads in transformers; training checkpoints add `optimizer.safetensors`
//! (both AdamW moments, `m.<name>` / `v.<name>`) and `state.json` (step, data position, RNG, schedule).
//!
//! Atomicity: a checkpoint is written into `step-NNNNNNNN.tmp/`, every file fsynced, the folder renamed to
//! `step-NNNNNNNN/` and the parent fsynced; only then is `latest` (a one-line file, itself written atomically)
//! pointed at it. A crash leaves either the old or the new checkpoint, never a torn one in `latest`.

use super::config::Config;
use super::model::Llama;
use super::peft::save_adapter;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::io::{fnv1a_64, write_file_atomically};
use crate::optim::AdamW;
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype as StDtype, TensorView};
use std::path::{Path, PathBuf};

/// Serializes named f32 tensors (contiguous) to safetensors bytes.
pub fn to_safetensors(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let owned: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_dtype(DType::F32)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let views = owned
        .iter()
        .map(|(n, t)| {
            let view = TensorView::new(StDtype::F32, t.shape().to_vec(), t.as_bytes()?)
                .map_err(|e| Error::invalid("safetensors", format!("{n}: {e}")))?;
            Ok((n.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, &None).map_err(|e| Error::invalid("safetensors", e.to_string()))
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file_atomically(path, |w| w.write_all(bytes))
}

/// The model's parameters with their names, in `visit` order.
pub fn named_parameters(model: &Llama) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    model.visit(&mut |n, t| out.push((n.to_string(), t.clone())));
    out
}

/// Every weight with its name, in `visit_weights` order, quantized ones dequantized to f32.
pub fn dense_weights(model: &Llama) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    let mut failed = None;
    model.visit_weights(&mut |n, w| match w.dequantized() {
        Ok(t) => out.push((n.to_string(), t)),
        Err(e) => failed = failed.take().or(Some(e)),
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A transformers `config.json` for `config`.
pub fn hf_config_json(config: &Config) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim(),
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "tie_word_embeddings": config.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": "float32",
    })
}

/// Writes `model.safetensors` and `config.json` into `dir` (created if needed): a plain Hugging Face folder,
/// quantized weights dequantized.
pub fn save_model(model: &Llama, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_bytes(
        &dir.join("model.safetensors"),
        &to_safetensors(&dense_weights(model)?)?,
    )?;
    let json = serde_json::to_vec_pretty(&hf_config_json(&model.config)).expect("json");
    write_bytes(&dir.join("config.json"), &json)
}

/// Loads a model saved by `save_model` (or any Hugging Face LLaMA folder).
pub fn load_model(dir: &Path) -> Result<Llama> {
    super::hf::load_hf(dir)
}

/// The base reference of a checkpoint holding adapters over a model file.
pub const BASE_FILE: &str = "base.json";

/// Writes a training checkpoint for `step` under `root` and points `root/latest` at it; keeps the newest
/// `keep` checkpoints. `state` is the caller's resumable state (data position, RNG, schedule...);
/// `write_extra` may add files (a tokenizer) to the folder before it is renamed into place.
pub fn save_checkpoint(
    root: &Path,
    step: u64,
    model: &Llama,
    optimizer: &AdamW,
    state: &serde_json::Value,
    keep: usize,
    write_extra: &dyn Fn(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let quantized = model.quantized_weights();
    if !quantized.is_empty() && (model.lora.is_none() || model.base.is_none()) {
        return Err(Error::invalid(
            "checkpoint",
            format!(
                "a model with frozen quantized weights ({quantized:?}) is checkpointed as adapters over the \
                 file it was loaded from; this one has no adapters or no base reference"
            ),
        ));
    }
    let name = format!("step-{step:08}");
    let final_dir = root.join(&name);
    let tmp = root.join(format!("{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    match (&model.lora, &model.base) {
        (Some(_), Some(base)) => {
            save_adapter(model, &tmp, &base.path.display().to_string())?;
            let json = serde_json::to_vec_pretty(base).expect("json");
            write_bytes(&tmp.join(BASE_FILE), &json)?;
        }
        (Some(_), None) => {
            save_model(model, &tmp)?;
            save_adapter(model, &tmp, "model.safetensors")?;
        }
        (None, _) => save_model(model, &tmp)?,
    }
    let params = named_parameters(model);
    let mut moments = Vec::with_capacity(2 * params.len());
    for (i, (n, t)) in params.iter().enumerate() {
        moments.push((
            format!("m.{n}"),
            Tensor::from_slice(&optimizer.m[i], t.shape())?,
        ));
        moments.push((
            format!("v.{n}"),
            Tensor::from_slice(&optimizer.v[i], t.shape())?,
        ));
    }
    write_bytes(
        &tmp.join("optimizer.safetensors"),
        &to_safetensors(&moments)?,
    )?;
    let full_state = serde_json::json!({
        "step": step,
        "optimizer_step": optimizer.step,
        "optimizer": optimizer.config,
        "train": state,
    });
    write_bytes(
        &tmp.join("state.json"),
        &serde_json::to_vec_pretty(&full_state).expect("json"),
    )?;
    write_extra(&tmp)?;
    write_checksums(&tmp)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    if let Ok(f) = std::fs::File::open(root) {
        let _ = f.sync_all();
    }
    write_bytes(&root.join("latest"), name.as_bytes())?;
    prune(root, keep)?;
    Ok(final_dir)
}

/// The finished checkpoint folders (`step-*`, not `.tmp`) under `root`, oldest first.
fn step_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
        })
        .collect();
    steps.sort();
    Ok(steps)
}

fn prune(root: &Path, keep: usize) -> Result<()> {
    let steps = step_dirs(root)?;
    let excess = steps.len().saturating_sub(keep.max(1));
    for old in &steps[..excess] {
        std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
    }
    Ok(())
}

/// A loaded training checkpoint.
pub struct Checkpoint {
    /// The folder it was read from.
    pub dir: PathBuf,
    pub step: u64,
    pub model: Llama,
    pub optimizer: AdamW,
    pub state: serde_json::Value,
}

/// The checkpoint folder `root/latest` names, or `root` itself when it has no `latest`.
pub fn latest_dir(root: &Path) -> Result<PathBuf> {
    let latest = root.join("latest");
    if !latest.exists() {
        return Ok(root.to_path_buf());
    }
    let name = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
    let name = name.trim();
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(Error::format(
            &latest,
            format!("{name:?} is not a checkpoint name"),
        ));
    }
    Ok(root.join(name))
}

/// Loads the checkpoint `root/latest` points at (or `root` itself when it is a checkpoint folder).
pub fn load_checkpoint(root: &Path) -> Result<Checkpoint> {
    load_checkpoint_dir(&latest_dir(root)?)
}

/// The newest checkpoint under `root` whose files all match their checksums: the one `latest` names, or else
/// the newest intact `step-*` folder. Returns it with a message for each damaged checkpoint passed over.
pub fn load_latest_intact(root: &Path) -> Result<(Checkpoint, Vec<String>)> {
    let first = latest_dir(root)?;
    let steps = step_dirs(root)?;
    let candidates =
        std::iter::once(first.clone()).chain(steps.into_iter().rev().filter(|p| *p != first));
    let mut passed_over = Vec::new();
    for dir in candidates {
        match load_checkpoint_dir(&dir) {
            Ok(ckpt) => return Ok((ckpt, passed_over)),
            Err(e) => passed_over.push(format!("checkpoint {} is unusable ({e})", dir.display())),
        }
    }
    Err(Error::format(
        root,
        format!("no intact checkpoint: {}", passed_over.join("; ")),
    ))
}

/// Name of the file listing every other file of a checkpoint with its length and FNV-1a 64 hash.
pub const CHECKSUMS_FILE: &str = "checksums.json";

fn write_checksums(dir: &Path) -> Result<()> {
    let mut sums = serde_json::Map::new();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .filter(|n| n != CHECKSUMS_FILE)
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        sums.insert(name, serde_json::json!({"bytes": bytes.len(), "fnv1a64": format!("{:016x}", fnv1a_64(&bytes))}));
    }
    write_bytes(
        &dir.join(CHECKSUMS_FILE),
        &serde_json::to_vec_pretty(&sums).expect("json"),
    )
}

/// Checks every file a checkpoint's checksum list names (a torn or altered file is an error naming it).
pub fn verify_checksums(dir: &Path) -> Result<()> {
    let path = dir.join(CHECKSUMS_FILE);
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let sums: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)
        .map_err(|e| Error::format(&path, format!("bad json: {e}")))?;
    for (name, expected) in &sums {
        let file = dir.join(name);
        if name.contains(['/', '\\']) {
            return Err(Error::format(
                &path,
                format!("{name:?} is not a file of the checkpoint"),
            ));
        }
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let hash = format!("{:016x}", fnv1a_64(&bytes));
        if expected["bytes"].as_u64() != Some(bytes.len() as u64)
            || expected["fnv1a64"].as_str() != Some(&hash)
        {
            return Err(Error::format(
                &file,
                "does not match its checksum (torn or altered)",
            ));
        }
    }
    Ok(())
}

/// Loads the training checkpoint in folder `dir`, after checking its files against their checksums.
pub fn load_checkpoint_dir(dir: &Path) -> Result<Checkpoint> {
    let dir = dir.to_path_buf();
    verify_checksums(&dir)?;
    let model = super::pretrained::load_pretrained(&dir)?.0;
    let state_path = dir.join("state.json");
    let text = std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let full: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::format(&state_path, format!("bad json: {e}")))?;
    let field = |k: &str| {
        full.get(k)
            .cloned()
            .ok_or_else(|| Error::format(&state_path, format!("missing {k}")))
    };
    let step = field("step")?
        .as_u64()
        .ok_or_else(|| Error::format(&state_path, "step is not a number"))?;
    let config = serde_json::from_value(field("optimizer")?)
        .map_err(|e| Error::format(&state_path, format!("bad optimizer config: {e}")))?;
    let opt_path = dir.join("optimizer.safetensors");
    let mut moments = super::hf::read_tensors(&opt_path)?;
    let params = named_parameters(&model);
    let mut optimizer = AdamW::new(config, &[]);
    optimizer.step = field("optimizer_step")?.as_u64().unwrap_or(step);
    for (n, t) in &params {
        for (prefix, dst) in [("m", &mut optimizer.m), ("v", &mut optimizer.v)] {
            let key = format!("{prefix}.{n}");
            let m = moments
                .remove(&key)
                .ok_or_else(|| Error::format(&opt_path, format!("missing {key}")))?;
            if m.shape() != t.shape() {
                return Err(Error::format(
                    &opt_path,
                    format!("{key} is {:?}, expected {:?}", m.shape(), t.shape()),
                ));
            }
            dst.push(m.to_vec::<f32>()?);
        }
    }
    Ok(Checkpoint {
        dir: dir.clone(),
        step,
        model,
        optimizer,
        state: field("train")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("tapegrad-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    #[test]
    fn only_finished_step_folders_count_and_the_oldest_are_pruned() {
        let root = temp_root("steps");
        for dir in [
            "step-00000020",
            "step-00000010",
            "step-00000030.tmp",
            "other",
        ] {
            std::fs::create_dir(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("step-00000040"), b"a file, not a checkpoint").unwrap();
        let names = |root: &Path| -> Vec<String> {
            step_dirs(root)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(&root), ["step-00000010", "step-00000020"]);
        prune(&root, 1).unwrap();
        assert_eq!(names(&root), ["step-00000020"]);
        // The unfinished folder, the other folder and the file are not checkpoints: pruning leaves them.
        for kept in ["step-00000030.tmp", "other", "step-00000040"] {
            assert!(root.join(kept).exists(), "{kept}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn latest_names_a_folder_inside_the_root_or_is_an_error() {
        let root = temp_root("latest");
        assert_eq!(
            latest_dir(&root).unwrap(),
            root,
            "no `latest`: the root itself"
        );
        std::fs::write(root.join("latest"), b"step-00000010\n").unwrap();
        assert_eq!(latest_dir(&root).unwrap(), root.join("step-00000010"));
        for bad in ["", "  ", "../elsewhere", "a/b", "a\\b", ".hidden"] {
            std::fs::write(root.join("latest"), bad.as_bytes()).unwrap();
            let err = latest_dir(&root).expect_err(bad).to_string();
            assert!(err.contains("is not a checkpoint name"), "{bad:?}: {err}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
