//! Hugging Face tokenizers (`tokenizer.json` + `tokenizer_config.json`) read into the GGUF metadata that
//! [`VocabTokenizer`](crate::data::bpe_vocab::VocabTokenizer) is built from, as llama.cpp's converter would
//! write it. Supported: BPE models, either byte-level (a `ByteLevel` step; the pre-tokenizer GPT-2's pattern,
//! GPT-2's with single digits as SmolLM2 uses, Llama 3's `Split` pattern, or our own tokenizer's) or
//! SentencePiece-style (`▁` for spaces, byte fallback, as Llama 2 and TinyLlama): merge ranks become the
//! scores the SentencePiece merge order follows. Added tokens become control tokens (special) or user-defined
//! ones; `bos_token`, `eos_token`, `add_bos_token` and the chat template (`chat_template` in the config, or a
//! `chat_template.jinja` file beside it) are kept. Anything else is an error naming the file and what is
//! not supported; malformed files are errors, never panics.

use crate::data::bpe_vocab::token_type;
use crate::data::bpe_vocab::PreTokenizer;
use crate::error::{Error, Result};
use crate::io::gguf::Value;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Llama 3's pre-tokenizer pattern, as its `tokenizer.json` spells it.
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The GGUF-style `tokenizer.*` metadata of the Hugging Face tokenizer in `dir`, whose `tokenizer.json` holds
/// `json`.
pub fn metadata_from_hf(dir: &Path, json: &[u8]) -> Result<BTreeMap<String, Value>> {
    let path = dir.join("tokenizer.json");
    let err = |msg: String| Error::format(&path, msg);
    let root: Json = serde_json::from_slice(json).map_err(|e| err(format!("invalid json: {e}")))?;
    let config_path = dir.join("tokenizer_config.json");
    let config: Json = if config_path.is_file() {
        let text = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
        serde_json::from_slice(&text)
            .map_err(|e| Error::format(&config_path, format!("invalid json: {e}")))?
    } else {
        Json::Null
    };
    let model = &root["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(err(format!(
            "tokenizer model {} is not supported (BPE only)",
            model["type"]
        )));
    }
    // Tokens by id: the vocabulary and the added tokens.
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| err("model.vocab is not an object".into()))?;
    let mut by_id: BTreeMap<u64, (String, i32)> = BTreeMap::new();
    let mut put = |id: Option<u64>, text: &str, ty: i32| -> Result<()> {
        let id = id
            .filter(|&id| id < u32::MAX as u64)
            .ok_or_else(|| err(format!("token {text:?} has no valid id")))?;
        match by_id.insert(id, (text.to_string(), ty)) {
            Some((old, _)) if old != text => {
                Err(err(format!("id {id} is both {old:?} and {text:?}")))
            }
            _ => Ok(()),
        }
    };
    for (text, id) in vocab {
        put(id.as_u64(), text, token_type::NORMAL)?;
    }
    let no_added = Vec::new();
    let added = root["added_tokens"].as_array().unwrap_or(&no_added);
    for token in added {
        let text = token["content"]
            .as_str()
            .ok_or_else(|| err(format!("added token {token} has no content")))?;
        let ty = if token["special"].as_bool().unwrap_or(false) {
            token_type::CONTROL
        } else {
            token_type::USER_DEFINED
        };
        put(token["id"].as_u64(), text, ty)?;
    }
    let n = by_id.keys().next_back().map_or(0, |&id| id + 1);
    if by_id.len() as u64 != n {
        let missing = (0..n).find(|id| !by_id.contains_key(id)).unwrap_or(0);
        return Err(err(format!("token id {missing} has no token ({n} ids)")));
    }
    let (mut tokens, mut types): (Vec<String>, Vec<i32>) = by_id.into_values().unzip();
    let ids: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let merges: Vec<String> = match model["merges"].as_array() {
        None => Vec::new(),
        Some(list) => list
            .iter()
            .map(|m| match m {
                Json::String(s) => Ok(s.clone()),
                Json::Array(pair) if pair.len() == 2 => {
                    match (pair[0].as_str(), pair[1].as_str()) {
                        (Some(a), Some(b)) => Ok(format!("{a} {b}")),
                        _ => Err(err(format!("merge {m} is not two strings"))),
                    }
                }
                _ => Err(err(format!("merge {m} is not a string or a pair"))),
            })
            .collect::<Result<_>>()?,
    };
    let mut meta = BTreeMap::new();
    let string = |s: &str| Value::String(s.to_string());
    let byte_level =
        mentions(&root["pre_tokenizer"], "ByteLevel") || mentions(&root["decoder"], "ByteLevel");
    if byte_level {
        let pre = byte_level_pre_tokenizer(&root["pre_tokenizer"]).ok_or_else(|| {
            err(format!(
                "pre-tokenizer {} is not supported (GPT-2's, SmolLM2's, Llama 3's and ours are)",
                root["pre_tokenizer"]
            ))
        })?;
        meta.insert("tokenizer.ggml.model".into(), string("gpt2"));
        meta.insert("tokenizer.ggml.pre".into(), string(pre.name()));
        let ignore = model["ignore_merges"].as_bool().unwrap_or(false);
        meta.insert("tokenizer.ggml.ignore_merges".into(), Value::Bool(ignore));
    } else if model["byte_fallback"].as_bool() == Some(true)
        || mentions(&root["normalizer"], "\u{2581}")
    {
        // SentencePiece-style: the merge that first makes a token ranks it.
        let mut scores = vec![f32::NEG_INFINITY; tokens.len()];
        for (rank, merge) in merges.iter().enumerate() {
            let joined: String = merge.split(' ').collect();
            if let Some(&id) = ids.get(joined.as_str()) {
                let score = &mut scores[id as usize];
                *score = score.max(-(rank as f32));
            }
        }
        let unk = model["unk_token"].as_str();
        for (i, t) in tokens.iter().enumerate() {
            if types[i] == token_type::NORMAL {
                if Some(t.as_str()) == unk {
                    types[i] = token_type::UNKNOWN;
                } else if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
                    types[i] = token_type::BYTE;
                }
            }
        }
        let floor = -(merges.len() as f32) - 1.0;
        let scores = scores
            .into_iter()
            .map(|s| Value::F32(s.max(floor)))
            .collect();
        meta.insert("tokenizer.ggml.model".into(), string("llama"));
        meta.insert("tokenizer.ggml.scores".into(), Value::Array(scores));
        meta.insert(
            "tokenizer.ggml.add_space_prefix".into(),
            Value::Bool(mentions(&root["normalizer"], "Prepend")),
        );
        if let Some(id) = unk.and_then(|u| ids.get(u)) {
            meta.insert("tokenizer.ggml.unknown_token_id".into(), Value::U32(*id));
        }
    } else {
        return Err(err(
            "neither byte-level nor SentencePiece-style BPE (no ByteLevel step, no byte fallback)"
                .into(),
        ));
    }
    for (key, name) in [("bos_token", "bos"), ("eos_token", "eos")] {
        let text = match &config[key] {
            Json::String(s) => Some(s.as_str()),
            Json::Object(o) => o.get("content").and_then(Json::as_str),
            _ => None,
        };
        if let Some(text) = text {
            let id = ids.get(text).ok_or_else(|| {
                Error::format(&config_path, format!("{key} {text:?} is not a token"))
            })?;
            meta.insert(format!("tokenizer.ggml.{name}_token_id"), Value::U32(*id));
        }
    }
    if let Some(add) = config["add_bos_token"].as_bool() {
        meta.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(add));
    }
    if let Some(template) = chat_template(dir, &config)? {
        meta.insert("tokenizer.chat_template".into(), Value::String(template));
    }
    meta.insert(
        "tokenizer.ggml.merges".into(),
        Value::Array(merges.into_iter().map(Value::String).collect()),
    );
    meta.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    meta.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(tokens.drain(..).map(Value::String).collect()),
    );
    Ok(meta)
}

/// Whether `json` holds `needle` as a string anywhere (a step's type, a pattern, ...).
fn mentions(json: &Json, needle: &str) -> bool {
    match json {
        Json::String(s) => s == needle,
        Json::Array(a) => a.iter().any(|j| mentions(j, needle)),
        Json::Object(o) => o.values().any(|j| mentions(j, needle)),
        _ => false,
    }
}

/// The pre-tokenizer a byte-level `tokenizer.json` describes, if it is one we split as it does.
fn byte_level_pre_tokenizer(pre: &Json) -> Option<PreTokenizer> {
    let steps: Vec<&Json> = match pre["type"].as_str() {
        Some("Sequence") => pre["pretokenizers"].as_array()?.iter().collect(),
        Some(_) => vec![pre],
        None => return None,
    };
    let byte_level = |j: &Json, regex: bool| {
        j["type"] == "ByteLevel"
            && j["use_regex"].as_bool().unwrap_or(true) == regex
            && !j["add_prefix_space"].as_bool().unwrap_or(false)
    };
    let split = |j: &Json, pattern: &str| {
        j["type"] == "Split"
            && j["pattern"]["Regex"] == pattern
            && j["behavior"] == "Isolated"
            && !j["invert"].as_bool().unwrap_or(false)
    };
    match steps[..] {
        [b] if byte_level(b, true) => Some(PreTokenizer::Gpt2),
        [d, b]
            if d["type"] == "Digits" && d["individual_digits"] == true && byte_level(b, true) =>
        {
            Some(PreTokenizer::Gpt2IndividualDigits)
        }
        [s, b] if split(s, LLAMA3_PATTERN) && byte_level(b, false) => Some(PreTokenizer::Llama3),
        [s, b] if split(s, crate::data::tokenizer::HF_PATTERN) && byte_level(b, false) => {
            Some(PreTokenizer::Tapegrad)
        }
        _ => None,
    }
}

/// The chat template of a Hugging Face tokenizer: `chat_template` in its config (a string, or a list of named
/// templates of which `default` is taken), or the folder's `chat_template.jinja`.
fn chat_template(dir: &Path, config: &Json) -> Result<Option<String>> {
    match &config["chat_template"] {
        Json::String(s) => return Ok(Some(s.clone())),
        Json::Array(list) => {
            let named = |name: &str| {
                list.iter()
                    .find(|t| t["name"] == name)
                    .and_then(|t| t["template"].as_str())
            };
            if let Some(t) =
                named("default").or_else(|| list.first().and_then(|t| t["template"].as_str()))
            {
                return Ok(Some(t.to_string()));
            }
        }
        _ => {}
    }
    let file = dir.join("chat_template.jinja");
    if file.is_file() {
        return std::fs::read_to_string(&file)
            .map(Some)
            .map_err(|e| Error::io(&file, e));
    }
    Ok(None)
}

/// A byte-level (`gpt2`) vocabulary's GGUF metadata as Hugging Face's `tokenizer.json` and
/// `tokenizer_config.json` (the inverse of [`metadata_from_hf`]), so transformers' `AutoTokenizer` reads a
/// checkpoint of a model that came as GGUF; `None` for a SentencePiece-style (`llama`) vocabulary, whose
/// merges the metadata does not list.
pub fn hf_from_metadata(meta: &BTreeMap<String, Value>) -> Result<Option<(Json, Json)>> {
    let get = |key: &str| meta.get(key);
    let bad = |what: &str| {
        Error::invalid(
            "tokenizer metadata",
            format!("{what} is missing or malformed"),
        )
    };
    if get("tokenizer.ggml.model").and_then(Value::as_str) != Some("gpt2") {
        return Ok(None);
    }
    let pre_name = get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let pre = PreTokenizer::from_name(pre_name).ok_or_else(|| bad("tokenizer.ggml.pre"))?;
    let strings = |key: &str| -> Result<Vec<&str>> {
        get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_str).collect())
            .ok_or_else(|| bad(key))
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i64> = match get("tokenizer.ggml.token_type").and_then(Value::as_array) {
        Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
        None => vec![token_type::NORMAL as i64; tokens.len()],
    };
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, &t) in tokens.iter().enumerate() {
        vocab.entry(t.to_string()).or_insert(serde_json::json!(id));
        let ty = types.get(id).copied().unwrap_or(1) as i32;
        if ty == token_type::CONTROL || ty == token_type::USER_DEFINED {
            added.push(
                serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": ty == token_type::USER_DEFINED,
                "special": ty == token_type::CONTROL}),
            );
        }
    }
    let byte_level = |use_regex: bool| {
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                           "use_regex": use_regex})
    };
    let split = |pattern: &str| {
        serde_json::json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
                           "invert": false})
    };
    let pre_tokenizer = match pre {
        PreTokenizer::Gpt2 => byte_level(true),
        PreTokenizer::Gpt2IndividualDigits => {
            serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]})
        }
        PreTokenizer::Llama3 => serde_json::json!({"type": "Sequence", "pretokenizers": [
            split(LLAMA3_PATTERN), byte_level(false)]}),
        PreTokenizer::Tapegrad => serde_json::json!({"type": "Sequence", "pretokenizers": [
            split(crate::data::tokenizer::HF_PATTERN), byte_level(false)]}),
    };
    let ignore_merges = get("tokenizer.ggml.ignore_merges")
        .and_then(Value::as_bool)
        .unwrap_or(pre == PreTokenizer::Llama3);
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre_tokenizer, "post_processor": null, "decoder": byte_level(true),
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges},
    });
    let token = |key: &str| {
        get(key)
            .and_then(Value::as_u64)
            .and_then(|id| tokens.get(id as usize))
            .map(|t| Json::String(t.to_string()))
            .unwrap_or(Json::Null)
    };
    let mut config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "clean_up_tokenization_spaces": false,
    });
    if let Some(template) = get("tokenizer.chat_template").and_then(Value::as_str) {
        config["chat_template"] = Json::String(template.to_string());
    }
    Ok(Some((tokenizer, config)))
}
