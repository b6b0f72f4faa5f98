//! Adapters in the layout PEFT reads and writes: a folder with `adapter_config.json` (LoRA's rank, α, dropout
//! and target modules) and `adapter_model.safetensors`, whose keys are those PEFT gives a `LlamaForCausalLM`
//! (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`, ...). `PeftModel.from_pretrained(base,
//! dir)` loads what `save_adapter` writes, and `load_adapter` loads what PEFT saves (rsLoRA's `α/√r` scale
//! included; DoRA, biases and per-layer patterns are refused by name).

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

use super::checkpoint::to_safetensors;
use super::lora::{Lora, LoraConfig, Target};
use super::model::Llama;
use crate::error::{Error, Result};
use crate::io::write_file_atomically;
use crate::tensor::Tensor;

/// The adapter configuration's file in an adapter folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter weights' file in an adapter folder.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// What PEFT puts before a parameter's name in the base model.
const PREFIX: &str = "base_model.model.";

/// Writes the model's adapters into `dir` (created if needed) in PEFT's layout; `base` names the base model
/// in the configuration (`base_model_name_or_path`).
pub fn save_adapter(model: &Llama, dir: &Path, base: &str) -> Result<()> {
    let config = model
        .lora
        .as_ref()
        .ok_or_else(|| Error::invalid("adapter", "the model has no adapters to save"))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors = Vec::new();
    model.visit(&mut |name, t| tensors.push((format!("{PREFIX}{name}"), t.clone())));
    let bytes = to_safetensors(&tensors)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    write_file_atomically(&path, |w| std::io::Write::write_all(w, &bytes))?;
    let modules: Vec<&str> = config
        .targets
        .iter()
        .map(|t| t.module().rsplit('.').next().unwrap_or_default())
        .collect();
    let json = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": config.rslora,
        "use_dora": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    });
    let text = serde_json::to_vec_pretty(&json).expect("json");
    let path = dir.join(ADAPTER_CONFIG);
    write_file_atomically(&path, |w| std::io::Write::write_all(w, &text))
}

/// Reads the LoRA configuration of an adapter folder, refusing what this engine does not compute.
pub fn read_adapter_config(dir: &Path) -> Result<LoraConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let json: Value = serde_json::from_slice(&text)
        .map_err(|e| Error::format(&path, format!("bad json: {e}")))?;
    let fail = |msg: String| Error::format(&path, msg);
    if let Some(kind) = json["peft_type"].as_str().filter(|k| *k != "LORA") {
        return Err(fail(format!("peft_type {kind} is not LORA")));
    }
    let unsupported = [
        ("use_dora", json["use_dora"].as_bool() == Some(true)),
        (
            "fan_in_fan_out",
            json["fan_in_fan_out"].as_bool() == Some(true),
        ),
        ("bias", json["bias"].as_str().is_some_and(|b| b != "none")),
        (
            "layers_to_transform",
            !json["layers_to_transform"].is_null(),
        ),
        (
            "modules_to_save",
            json["modules_to_save"]
                .as_array()
                .is_some_and(|m| !m.is_empty()),
        ),
        (
            "rank_pattern",
            json["rank_pattern"]
                .as_object()
                .is_some_and(|m| !m.is_empty()),
        ),
        (
            "alpha_pattern",
            json["alpha_pattern"]
                .as_object()
                .is_some_and(|m| !m.is_empty()),
        ),
    ];
    if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(fail(format!("{key} = {} is not supported", json[key])));
    }
    let rank = json["r"]
        .as_u64()
        .ok_or_else(|| fail("r is missing or not a whole number".into()))? as usize;
    let alpha = json["lora_alpha"]
        .as_f64()
        .ok_or_else(|| fail("lora_alpha is missing".into()))?;
    let targets = match &json["target_modules"] {
        Value::Array(names) => names
            .iter()
            .map(|n| Target::parse(n.as_str().unwrap_or_default()))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| fail(e.to_string()))?,
        other => {
            return Err(fail(format!(
                "target_modules {other} is not a list of module names"
            )))
        }
    };
    let config = LoraConfig {
        rank,
        alpha,
        dropout: json["lora_dropout"].as_f64().unwrap_or(0.0),
        targets,
        rslora: json["use_rslora"].as_bool() == Some(true),
    };
    config.validate().map_err(|e| fail(e.to_string()))?;
    Ok(config)
}

/// Adds the adapters of a PEFT folder to `model` (which must have none): its configuration and every
/// adapter's `A` and `B`, checked against the projections' shapes. The base is frozen from then on.
pub fn load_adapter(model: &mut Llama, dir: &Path) -> Result<()> {
    let config = read_adapter_config(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let mut tensors: HashMap<String, Tensor> = super::hf::read_tensors(&path)?;
    let scale = config.scale();
    let mut adapters = Vec::new();
    for (i, block) in model.blocks.iter().enumerate() {
        for &t in &config.targets {
            let shape = block.weight(t).shape();
            let name = format!("{PREFIX}model.layers.{i}.{}", t.module());
            let mut take = |which: &str, want: [usize; 2]| -> Result<Tensor> {
                let key = format!("{name}.{which}.weight");
                let tensor = tensors
                    .remove(&key)
                    .ok_or_else(|| Error::format(&path, format!("missing tensor {key}")))?;
                if tensor.shape() != want {
                    return Err(Error::format(
                        &path,
                        format!("{key} is {:?}, expected {want:?}", tensor.shape()),
                    ));
                }
                Ok(tensor)
            };
            let a = take("lora_A", [config.rank, shape[1]])?;
            let b = take("lora_B", [shape[0], config.rank])?;
            let dropout = config.dropout;
            adapters.push((
                i,
                t,
                Lora {
                    a,
                    b,
                    scale,
                    dropout,
                },
            ));
        }
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(Error::format(
            &path,
            format!("{extra} is not an adapter of this model's targets"),
        ));
    }
    // Everything checked: the model changes only now.
    model.add_lora(&config, 0)?;
    for (i, t, lora) in adapters {
        model.blocks[i].lora[t.index()] = Some(lora);
    }
    Ok(())
}
