//! Pretrained models from either world: a Hugging Face folder (`config.json` + safetensors, with our
//! `tokenizer.json` when it was trained here) or a GGUF file (weights dequantized to f32 or kept in their
//! blocks, llama.cpp's q/k row permutation undone, the tokenizer read from its metadata); either may have its
//! projections quantized on load (`Quantization`).

use super::base::BaseRef;
use super::chat::ChatTemplate;
use super::checkpoint::BASE_FILE;
use super::model::Llama;
use super::peft::{load_adapter, ADAPTER_CONFIG};
use crate::data::bpe_vocab::{PreTokenizer, VocabTokenizer};
use crate::data::hf_tokenizer::hf_from_metadata;
use crate::data::Encoder;
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::io::gguf::{GgmlType, Gguf, Value};
use crate::io::write_file_atomically;
use crate::llama::gguf;
use std::collections::BTreeMap;
use std::path::Path;

/// A model's own tokenizer: ours (byte-level BPE trained here) or one read from GGUF metadata (kept with the
/// `tokenizer.*` metadata it was built from, as JSON — a fraction of the parsed values' memory — so a finetuned
/// checkpoint can save it).
pub enum TextTokenizer {
    Ours(Tokenizer),
    Vocab(Box<VocabTokenizer>, Vec<u8>),
}

impl TextTokenizer {
    /// The tokenizer of GGUF `metadata` (its `tokenizer.*` entries; `path` names it in errors).
    fn from_metadata(metadata: &BTreeMap<String, Value>, path: &Path) -> Result<TextTokenizer> {
        let tokenizer = VocabTokenizer::from_metadata(metadata, path)?;
        let json = serde_json::to_vec(metadata).expect("metadata serializes");
        Ok(TextTokenizer::Vocab(Box::new(tokenizer), json))
    }
}

/// A checkpoint folder's tokenizer in Hugging Face's `tokenizers` format (ours or a model's).
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The Hugging Face tokenizer's settings (class, special tokens, chat template).
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Our tokenizer's own file in a checkpoint folder (exact: merges by id), beside the Hugging Face files.
pub const OUR_TOKENIZER_FILE: &str = "tapegrad-tokenizer.json";
/// A GGUF tokenizer's metadata in a checkpoint folder.
pub const GGUF_TOKENIZER_FILE: &str = "tokenizer.gguf.json";

impl TextTokenizer {
    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            TextTokenizer::Ours(t) => t.encode(text.as_bytes()),
            TextTokenizer::Vocab(t, _) => t.encode(text),
        }
    }

    /// Text of `ids` (invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            TextTokenizer::Ours(t) => t.decode_lossy(ids),
            TextTokenizer::Vocab(t, _) => t.decode(ids),
        }
    }

    /// Writes the tokenizer into a checkpoint folder: ours as `OUR_TOKENIZER_FILE`, one read from GGUF
    /// metadata as `GGUF_TOKENIZER_FILE`, and either (a byte-level GGUF vocabulary) also as Hugging Face's
    /// `TOKENIZER_FILE` + `TOKENIZER_CONFIG_FILE`, so transformers' `AutoTokenizer` reads the folder.
    pub fn save(&self, dir: &Path) -> Result<()> {
        match self {
            TextTokenizer::Ours(t) => {
                t.save(dir.join(OUR_TOKENIZER_FILE))?;
                let metadata = t.gguf_metadata(PreTokenizer::Tapegrad);
                let (tokenizer, config) =
                    hf_from_metadata(&metadata)?.expect("ours is a byte-level vocabulary");
                write_json(dir, TOKENIZER_FILE, &tokenizer)?;
                write_json(dir, TOKENIZER_CONFIG_FILE, &config)
            }
            TextTokenizer::Vocab(_, json) => {
                let path = dir.join(GGUF_TOKENIZER_FILE);
                std::fs::write(&path, json).map_err(|e| Error::io(&path, e))?;
                let metadata: BTreeMap<String, Value> = serde_json::from_slice(json)
                    .map_err(|e| Error::invalid("tokenizer metadata", e.to_string()))?;
                if let Some((tokenizer, config)) = hf_from_metadata(&metadata)? {
                    write_json(dir, TOKENIZER_FILE, &tokenizer)?;
                    write_json(dir, TOKENIZER_CONFIG_FILE, &config)?;
                }
                Ok(())
            }
        }
    }

    /// Reads the tokenizer a checkpoint folder holds, if any: ours (`OUR_TOKENIZER_FILE`, or a
    /// `TOKENIZER_FILE` in our own format, as older checkpoints hold it), GGUF metadata, or a Hugging Face
    /// `tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Option<TextTokenizer>> {
        let ours = dir.join(OUR_TOKENIZER_FILE);
        if ours.is_file() {
            return Ok(Some(TextTokenizer::Ours(Tokenizer::load(&ours)?)));
        }
        let gguf_meta = dir.join(GGUF_TOKENIZER_FILE);
        if gguf_meta.is_file() {
            let text = std::fs::read(&gguf_meta).map_err(|e| Error::io(&gguf_meta, e))?;
            let metadata: BTreeMap<String, Value> = serde_json::from_slice(&text)
                .map_err(|e| Error::format(&gguf_meta, format!("bad tokenizer metadata: {e}")))?;
            return TextTokenizer::from_metadata(&metadata, &gguf_meta).map(Some);
        }
        let hf = dir.join(TOKENIZER_FILE);
        if hf.is_file() {
            let text = std::fs::read(&hf).map_err(|e| Error::io(&hf, e))?;
            if is_our_format(&text) {
                return Ok(Some(TextTokenizer::Ours(Tokenizer::load(&hf)?)));
            }
            let metadata = crate::data::hf_tokenizer::metadata_from_hf(dir, &text)?;
            return TextTokenizer::from_metadata(&metadata, &hf).map(Some);
        }
        Ok(None)
    }

    /// The number of token ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Ours(t) => t.vocab_size(),
            TextTokenizer::Vocab(t, _) => t.vocab_size(),
        }
    }

    /// The beginning-of-sequence id, if the tokenizer has one.
    pub fn bos_id(&self) -> Option<u32> {
        match self {
            TextTokenizer::Ours(t) => Some(t.bos_id()),
            TextTokenizer::Vocab(t, _) => t.bos_id(),
        }
    }

    /// A prompt's ids as the model expects them: [`TextTokenizer::encode`], after BOS where the vocabulary says
    /// prompts start with it (Llama 2's does; SmolLM2's and our own do not).
    pub fn encode_prompt(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        if let TextTokenizer::Vocab(t, _) = self {
            if let (true, Some(bos)) = (t.adds_bos(), t.bos_id()) {
                ids.push(bos);
            }
        }
        ids.extend(self.encode(text));
        ids
    }

    /// The end-of-sequence id, if the tokenizer has one.
    pub fn eos_id(&self) -> Option<u32> {
        match self {
            TextTokenizer::Ours(t) => Some(t.eos_id()),
            TextTokenizer::Vocab(t, _) => t.eos_id(),
        }
    }

    /// Token ids of `text` in which the texts of special tokens (`<|im_start|>`, `</s>`, ...) are those
    /// tokens, as a rendered chat template needs; the rest as [`TextTokenizer::encode`].
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        match self {
            TextTokenizer::Ours(t) => t.encode_with_special(text),
            TextTokenizer::Vocab(t, _) => t.encode_with_special(text),
        }
    }

    /// The chat template the tokenizer came with (a GGUF file's `tokenizer.chat_template`), rendered with the
    /// tokenizer's BOS and EOS texts; `None` when it has none.
    pub fn chat_template(&self) -> Result<Option<ChatTemplate>> {
        let TextTokenizer::Vocab(_, json) = self else {
            return Ok(None);
        };
        let metadata: BTreeMap<String, Value> = serde_json::from_slice(json)
            .map_err(|e| Error::invalid("tokenizer metadata", e.to_string()))?;
        match metadata.get(CHAT_TEMPLATE_KEY).and_then(Value::as_str) {
            Some(source) => self.template(source.to_string()).map(Some),
            None => Ok(None),
        }
    }

    /// The chat template in `file` when one is given (the `--chat-template` flag), else the tokenizer's own
    /// ([`TextTokenizer::chat_template`]; an error saying so when it has none).
    pub fn chat_template_or_file(&self, file: Option<&Path>) -> Result<ChatTemplate> {
        match file {
            Some(file) => {
                let source = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
                self.template(source)
            }
            None => self.chat_template()?.ok_or_else(|| {
                Error::invalid(
                    "chat template",
                    "the model's tokenizer has none; give one with --chat-template FILE",
                )
            }),
        }
    }

    /// `source` compiled with this tokenizer's BOS and EOS spellings (`<s>`, `</s>` for ours).
    fn template(&self, source: String) -> Result<ChatTemplate> {
        let [bos, eos] = match self {
            TextTokenizer::Ours(t) => t.special_names(),
            TextTokenizer::Vocab(t, _) => {
                let text = |id: Option<u32>| id.and_then(|id| t.token(id)).unwrap_or("");
                [text(t.bos_id()), text(t.eos_id())]
            }
        };
        ChatTemplate::new(source, bos, eos)
    }
}

/// The GGUF metadata key of a model's chat template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// Writes `json` (pretty) to `dir/name`, atomically.
fn write_json(dir: &Path, name: &str, json: &serde_json::Value) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(json).expect("json serializes");
    write_file_atomically(&dir.join(name), |w| w.write_all(&bytes))
}

/// Whether a `tokenizer.json` is in our own format (older checkpoints), not Hugging Face's.
fn is_our_format(json: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Format {
        format: Option<String>,
    }
    serde_json::from_slice::<Format>(json)
        .ok()
        .and_then(|f| f.format)
        .is_some_and(|f| f == crate::data::tokenizer::FORMAT_NAME)
}

/// How a loaded model holds its matrices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quantization {
    /// Every weight dense in f32 (a GGUF file's blocks dequantized): the model can train all of them.
    #[default]
    Dense,
    /// A GGUF file's block-format matrices stay in their blocks (frozen); a Hugging Face folder loads dense.
    Keep,
    /// The seven projections of every block quantized to this format (from f32, or requantized from a GGUF
    /// file's blocks); the embedding and the head as with `Keep`.
    To(GgmlType),
}

impl Quantization {
    /// The flag's value that gives this (`dense`, `keep`, `q8_0`, ...).
    pub fn flag(self) -> String {
        match self {
            Quantization::Dense => "dense".into(),
            Quantization::Keep => "keep".into(),
            Quantization::To(ty) => ty.to_string().to_lowercase(),
        }
    }

    /// From a flag's value: `dense`, `keep`, or a block format to quantize to (`q8_0`, `q4_0`, `q4_1`).
    pub fn parse(flag: &str, value: &str) -> Result<Quantization> {
        match value {
            "dense" => return Ok(Quantization::Dense),
            "keep" => return Ok(Quantization::Keep),
            _ => {}
        }
        crate::io::quantize::QUANTIZABLE
            .iter()
            .find(|t| t.to_string().eq_ignore_ascii_case(value))
            .map(|&t| Quantization::To(t))
            .ok_or_else(|| {
                Error::invalid(
                    flag,
                    format!(
                        "{value:?} is not dense, keep or one of {}",
                        crate::io::quantize::names(&crate::io::quantize::QUANTIZABLE)
                    ),
                )
            })
    }
}

/// Loads a Hugging Face folder or a `.gguf` file, every weight dense, with its tokenizer when it has one.
pub fn load_pretrained(path: &Path) -> Result<(Llama, Option<TextTokenizer>)> {
    load_pretrained_with(path, Quantization::Dense)
}

/// Loads a Hugging Face folder or a `.gguf` file with its matrices held as `quantization` says, with its
/// tokenizer when it has one. A folder holding adapters (PEFT's files) gets them added: over its own weights,
/// or over the base file its `base.json` names (loaded as it was in training, after checking its checksum).
pub fn load_pretrained_with(
    path: &Path,
    quantization: Quantization,
) -> Result<(Llama, Option<TextTokenizer>)> {
    let (mut model, tokenizer) = load_weights(path, quantization != Quantization::Dense)?;
    if let Quantization::To(ty) = quantization {
        model.quantize_projections(ty)?;
    }
    Ok((model, tokenizer))
}

fn load_weights(path: &Path, keep_quantized: bool) -> Result<(Llama, Option<TextTokenizer>)> {
    if path.is_dir() {
        let reference = path.join(BASE_FILE);
        let mut model = if reference.is_file() {
            // Adapters over a base file: the base as it was held in training, checked against its checksum.
            let text = std::fs::read(&reference).map_err(|e| Error::io(&reference, e))?;
            let base: BaseRef = serde_json::from_slice(&text)
                .map_err(|e| Error::format(&reference, format!("bad base reference: {e}")))?;
            let mut model = base.load()?.0;
            model.base = Some(base);
            model
        } else {
            super::hf::load_hf(path)?
        };
        if path.join(ADAPTER_CONFIG).is_file() {
            load_adapter(&mut model, path)?;
        }
        return Ok((model, TextTokenizer::load(path)?));
    }
    if !path.is_file() {
        return Err(Error::invalid(
            "--model",
            format!("{} is neither a folder nor a file", path.display()),
        ));
    }
    let mut file = Gguf::open(path)?;
    // A file without a vocabulary (a bare export) loads without a tokenizer.
    let metadata = file.take_metadata("tokenizer.");
    let tokenizer = match metadata.contains_key("tokenizer.ggml.model") {
        true => Some(TextTokenizer::from_metadata(&metadata, path)?),
        false => None,
    };
    let config = gguf::config_from_gguf(&file)?;
    let mut weights = gguf::weights_from_gguf(&std::sync::Arc::new(file), &config, keep_quantized)?;
    let model = super::hf::model_from_tensors(config, &mut weights, path)?;
    Ok((model, tokenizer))
}

impl Encoder for TextTokenizer {
    fn encode_text(&self, text: &[u8]) -> Vec<u32> {
        match self {
            TextTokenizer::Ours(t) => t.encode_text(text),
            TextTokenizer::Vocab(t, _) => t.encode(&String::from_utf8_lossy(text)),
        }
    }

    fn fingerprint(&self) -> u64 {
        match self {
            TextTokenizer::Ours(t) => t.fingerprint(),
            TextTokenizer::Vocab(_, json) => crate::io::fnv1a_64(json),
        }
    }

    fn vocab_size(&self) -> usize {
        TextTokenizer::vocab_size(self)
    }
}
