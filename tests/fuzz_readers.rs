//! Byte-mutation fuzzing of every file reader (proptest, so it runs in CI): valid safetensors, token shards,
//! tokenizer files, Hugging Face configs, Hugging Face `tokenizer.json` files (byte-level and
//! SentencePiece-style), chat templates, SFT conversation files and benchmark task files (JSON lines, OLMo's gzip request files) are
//! corrupted — bytes flipped, truncated, junk inserted — and each
//! reader must return `Ok` or an `Err`, never panic, hang or allocate from untrusted sizes; a tokenizer that
//! still reads must encode and decode, a template that still compiles must render or refuse. (GGUF has the
//! same check in `io::gguf`'s unit tests.)

mod common;

use proptest::prelude::*;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::OnceLock;
use tapegrad::data::bpe_vocab::PreTokenizer;
use tapegrad::data::bpe_vocab::VocabTokenizer;
use tapegrad::data::hf_tokenizer::{hf_from_metadata, metadata_from_hf};
use tapegrad::data::{Shard, Tokenizer};
use tapegrad::llama::chat::{ChatTemplate, Message};
use tapegrad::llama::checkpoint::to_safetensors;
use tapegrad::llama::hf::{config_from_json, read_tensors};
use tapegrad::llama::pretrained::TextTokenizer;
use tapegrad::llama::sft::{read_conversations, tokenize_conversation};
use tapegrad::llama::tasks::{self, Task};
use tapegrad::Tensor;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("tapegrad-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// Valid files of each kind, made once.
fn originals() -> &'static [(&'static str, Vec<u8>)] {
    static FILES: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let tensors = vec![
            (
                "a".to_string(),
                Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap(),
            ),
            (
                "b".to_string(),
                Tensor::from_vec(vec![0.5f32; 4], &[4]).unwrap(),
            ),
        ];
        let safetensors = to_safetensors(&tensors).unwrap();
        let shard_path = dir().join("valid.tgs");
        Shard::write(&shard_path, &[1, 2, 3, 500, 7, 9, 11], 600).unwrap();
        let tokenizer = Tokenizer::train(
            &[b"the cat sat on the mat, the cat ate 42 rats".as_slice()],
            270,
        )
        .unwrap();
        let tok_path = dir().join("valid-tokenizer.json");
        tokenizer.save(&tok_path).unwrap();
        let config = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/tiny-llama/model/config.json"),
        )
        .unwrap();
        let metadata = tokenizer.gguf_metadata(PreTokenizer::Tapegrad);
        let hf = serde_json::to_vec(&hf_from_metadata(&metadata).unwrap().unwrap().0).unwrap();
        let template = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/llama-2.jinja"),
        )
        .unwrap();
        vec![
            ("safetensors", safetensors),
            ("shard", std::fs::read(&shard_path).unwrap()),
            ("tokenizer", std::fs::read(&tok_path).unwrap()),
            ("config", config),
            ("hf-tokenizer", hf),
            ("hf-spm", spm_tokenizer_json()),
            ("chat-template", template),
            ("sft", sft_lines()),
        ]
        .into_iter()
        .chain(
            EVAL_KINDS
                .iter()
                .map(|&(kind, task)| (kind, eval_file(kind, task))),
        )
        .collect()
    })
}

/// The benchmark readers fuzzed, by kind name.
const EVAL_KINDS: [(&str, Task); 10] = [
    ("eval-hellaswag", Task::Hellaswag),
    ("eval-piqa", Task::Piqa),
    ("eval-arc", Task::ArcEasy),
    ("eval-winogrande", Task::Winogrande),
    ("eval-boolq", Task::Boolq),
    ("eval-openbookqa", Task::Openbookqa),
    ("eval-siqa", Task::Siqa),
    ("eval-lambada", Task::Lambada),
    ("eval-mmlu", Task::Mmlu),
    ("eval-arc-gzip", Task::ArcChallenge),
];

/// The made-up evaluation folder every benchmark case starts from.
fn eval_base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let folder = dir().join("evals");
        common::write_eval_fixture(&folder);
        folder
    })
}

/// The file of `task` a case replaces: an MMLU subject's test questions; an OLMo request file unpacked (the
/// `-gzip` kind mutates the packed bytes instead).
fn eval_target(kind: &str, task: Task) -> (PathBuf, bool) {
    let file = match task {
        Task::Mmlu => PathBuf::from(task.file()).join("anatomy/test.jsonl"),
        _ => PathBuf::from(task.file()),
    };
    let unpacked = task.file().ends_with(".gz") && !kind.ends_with("-gzip");
    (file, unpacked)
}

/// The unmutated bytes of a benchmark kind.
fn eval_file(kind: &str, task: Task) -> Vec<u8> {
    let (file, unpacked) = eval_target(kind, task);
    let bytes = std::fs::read(eval_base().join(file)).unwrap();
    if !unpacked {
        return bytes;
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Loads a benchmark from a copy of the made-up folder whose file of `kind` holds `bytes` (packed again where
/// the kind mutates unpacked requests); true if it loads.
fn read_eval(kind: &str, bytes: &[u8], case: u64) -> bool {
    let task = EVAL_KINDS.iter().find(|(k, _)| *k == kind).unwrap().1;
    let (file, unpacked) = eval_target(kind, task);
    let folder = dir().join(format!("evals-{case}"));
    let path = folder.join(&file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if task == Task::Mmlu {
        let dev = PathBuf::from(task.file()).join("anatomy/dev.jsonl");
        std::fs::copy(eval_base().join(&dev), folder.join(&dev)).unwrap();
    }
    if unpacked {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
    } else {
        std::fs::write(&path, bytes).unwrap();
    }
    let loaded = tasks::load(task, &folder, task.default_shots(), None);
    std::fs::remove_dir_all(&folder).unwrap();
    match loaded {
        Ok(docs) => {
            for doc in &docs {
                assert!(
                    doc.gold < doc.requests.len(),
                    "a loaded document's answer is a choice"
                );
            }
            true
        }
        Err(_) => false,
    }
}

/// A small SentencePiece-style `tokenizer.json`: specials, the 256 byte tokens, `▁`, `a`, `b` and two merges.
fn spm_tokenizer_json() -> Vec<u8> {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(t.to_string(), i.into());
    }
    for b in 0..256 {
        vocab.insert(format!("<0x{b:02X}>"), (3 + b).into());
    }
    for (i, t) in ["\u{2581}", "a", "b", "\u{2581}a", "\u{2581}ab"]
        .iter()
        .enumerate()
    {
        vocab.insert(t.to_string(), (259 + i).into());
    }
    let json = serde_json::json!({
        "added_tokens": [{"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true}],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
        "pre_tokenizer": null,
        "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "vocab": vocab,
                  "merges": ["\u{2581} a", "\u{2581}a b"]},
    });
    serde_json::to_vec(&json).unwrap()
}

/// The first conversations of the bundled SFT set, in both of its layouts.
fn sft_lines() -> Vec<u8> {
    let all = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sft/pirate.jsonl"),
    )
    .unwrap();
    let lines: Vec<&str> = all.lines().take(10).collect();
    assert!(lines.iter().any(|l| l.contains("\"instruction\"")));
    (lines.join("\n") + "\n").into_bytes()
}

/// Reads an SFT file and, if it reads, renders and tokenizes its conversations.
fn read_sft(path: &std::path::Path) -> bool {
    let Ok(chats) = read_conversations(path) else {
        return false;
    };
    let template = ChatTemplate::new(
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
        "<s>",
        "</s>",
    )
    .unwrap();
    let tokenizer = TextTokenizer::Ours(Tokenizer::train(&[b"ab".as_slice()], 258).unwrap());
    for chat in &chats {
        let e = tokenize_conversation(&template, &tokenizer, chat).unwrap();
        assert_eq!(e.ids.len(), e.trained.len());
    }
    true
}

/// Reads a Hugging Face `tokenizer.json` and, if it reads, encodes and decodes with it.
fn read_hf(bytes: &[u8], case: u64) -> bool {
    let folder = dir().join(format!("hf-{case}"));
    std::fs::create_dir_all(&folder).unwrap();
    let read = metadata_from_hf(&folder, bytes)
        .and_then(|meta| VocabTokenizer::from_metadata(&meta, folder.join("tokenizer.json")));
    std::fs::remove_dir_all(&folder).unwrap();
    match read {
        Ok(t) => {
            let ids = t.encode_with_special("ab a</s> é 42");
            let _ = t.decode(&ids);
            true
        }
        Err(_) => false,
    }
}

/// Compiles a chat template and, if it compiles, renders a conversation with it.
fn render_template(bytes: &[u8]) -> bool {
    let Ok(source) = std::str::from_utf8(bytes) else {
        return false;
    };
    match ChatTemplate::new(source, "<s>", "</s>") {
        Ok(t) => {
            let chat = [Message::new("system", "s"), Message::new("user", "u")];
            let _ = t.render(&chat, true);
            true
        }
        Err(_) => false,
    }
}

/// Applies one mutation chosen by `kind` at positions drawn from `seeds`.
fn mutate(bytes: &[u8], kind: u8, seeds: &[u64]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let at = |s: u64, n: usize| (s % n.max(1) as u64) as usize;
    match kind % 4 {
        0 => {
            for &s in seeds {
                let i = at(s, out.len());
                out[i] ^= 1 << ((s >> 32) % 8);
            }
        }
        1 => out.truncate(at(seeds[0], bytes.len())),
        2 => {
            let i = at(seeds[0], out.len());
            let junk: Vec<u8> = seeds.iter().map(|s| (s >> 8) as u8).collect();
            out.splice(i..i, junk);
        }
        _ => {
            // Overwrite with a large little-endian number, as a hostile length or offset field would be.
            let i = at(seeds[0], out.len().saturating_sub(8));
            let end = (i + 8).min(out.len());
            out[i..end].copy_from_slice(&u64::MAX.to_le_bytes()[..end - i]);
        }
    }
    out
}

/// Runs the reader of `kind` on `bytes`; only a panic fails.
fn read(kind: &str, bytes: &[u8], case: u64) {
    let path = dir().join(format!("case-{case}-{kind}"));
    std::fs::write(&path, bytes).unwrap();
    match kind {
        "safetensors" => drop(read_tensors(&path)),
        "shard" => {
            if let Ok(shard) = Shard::open(&path) {
                let _ = shard.to_vec();
            }
        }
        "tokenizer" => {
            if let Ok(t) = Tokenizer::load(&path) {
                let ids = t.encode(b"the cat 42");
                assert_eq!(
                    t.decode(&ids),
                    b"the cat 42",
                    "a tokenizer that loads still round-trips"
                );
            }
        }
        "hf-tokenizer" | "hf-spm" => drop(read_hf(bytes, case)),
        "chat-template" => drop(render_template(bytes)),
        "sft" => drop(read_sft(&path)),
        eval if eval.starts_with("eval-") => drop(read_eval(kind, bytes, case)),
        _ => {
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) {
                let _ = config_from_json(&json, &path);
            }
        }
    }
    std::fs::remove_file(&path).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn corrupted_files_are_errors_never_panics(which in 0usize..18, kind in 0u8..4, seeds in prop::collection::vec(any::<u64>(), 1..6), case: u64) {
        let (name, bytes) = &originals()[which];
        read(name, &mutate(bytes, kind, &seeds), case);
    }
}

#[test]
fn the_unmutated_files_read_cleanly() {
    assert_eq!(originals().len(), 18, "the proptest draws from every kind");
    for (name, bytes) in originals() {
        let path = dir().join(format!("clean-{name}"));
        std::fs::write(&path, bytes).unwrap();
        match *name {
            "safetensors" => assert_eq!(read_tensors(&path).unwrap().len(), 2),
            "shard" => assert_eq!(
                Shard::open(&path).unwrap().to_vec(),
                vec![1, 2, 3, 500, 7, 9, 11]
            ),
            "tokenizer" => assert!(Tokenizer::load(&path).is_ok()),
            "hf-tokenizer" | "hf-spm" => assert!(read_hf(bytes, 0)),
            "chat-template" => assert!(render_template(bytes)),
            "sft" => assert!(read_sft(&path)),
            eval if eval.starts_with("eval-") => assert!(read_eval(name, bytes, 0), "{name}"),
            _ => assert!(config_from_json(&serde_json::from_slice(bytes).unwrap(), &path).is_ok()),
        }
    }
}
