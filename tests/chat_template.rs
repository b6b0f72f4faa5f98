//! Chat templates rendered as transformers renders them: SmolLM2's (ChatML), a Llama-2 chat template, Llama
//! 3.1's (llama.cpp's copy) and Zephyr's (TinyLlama's), over five conversations with and without the
//! generation prompt, against `tests/fixtures/chat/expected.json` (`scripts/chat_template_reference.py`,
//! transformers' own renderer); a template that refuses a conversation refuses it here too. And SmolLM2's GGUF
//! file carries the template these fixtures hold; a conversation rendered with it and encoded with its special
//! tokens gives `apply_chat_template`'s ids, and greedy decoding answers as transformers does
//! (`tests/fixtures/chat/smollm2.json`).

mod common;

use serde_json::Value;
use std::path::PathBuf;
use tapegrad::llama::chat::{ChatTemplate, Message};
use tapegrad::llama::generate::{generate_with, Sampling};
use tapegrad::llama::pretrained::{load_pretrained_with, Quantization};
use tapegrad::llama::KvCache;
use tapegrad::Rng;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

#[test]
fn every_template_renders_every_conversation_as_transformers_does() {
    let expected: Value = serde_json::from_str(&read("expected.json")).unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 40);
    let mut refused = 0;
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let tokens = &expected["tokens"][name];
        let template = ChatTemplate::new(
            read(&format!("{name}.jinja")),
            tokens[0].as_str().unwrap(),
            tokens[1].as_str().unwrap(),
        )
        .unwrap();
        let conversation = case["conversation"].as_str().unwrap();
        let messages: Vec<Message> =
            serde_json::from_value(expected["conversations"][conversation].clone()).unwrap();
        let generation = case["add_generation_prompt"].as_bool().unwrap();
        let got = template.render(&messages, generation);
        let what = format!("{name} / {conversation} / generation prompt {generation}");
        match (case.get("expected"), got) {
            (Some(want), Ok(got)) => assert_eq!(got, want.as_str().unwrap(), "{what}"),
            (None, Err(e)) => {
                let reason = case["error"].as_str().unwrap();
                assert!(e.to_string().contains(reason), "{what}: {e}");
                refused += 1;
            }
            (want, got) => panic!("{what}: expected {want:?}, got {got:?}"),
        }
    }
    assert_eq!(refused, 2, "Llama-2's template refuses an assistant first");
}

#[test]
fn the_smollm2_file_carries_its_template_and_chats_as_transformers_does() {
    let Some(path) = common::smollm2_path() else {
        return;
    };
    let (model, tokenizer) = load_pretrained_with(&path, Quantization::Dense).unwrap();
    let tokenizer = tokenizer.unwrap();
    let template = tokenizer.chat_template().unwrap().unwrap();
    assert_eq!(template.source(), read("smollm2.jinja"));
    let reference: Value = serde_json::from_str(&read("smollm2.json")).unwrap();
    for chat in reference["chats"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(chat["messages"].clone()).unwrap();
        let ids = |key: &str| -> Vec<u32> {
            chat[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        // The rendered conversation, its special tokens read as such, gives transformers' ids.
        let text = template.render(&messages, true).unwrap();
        let context = tokenizer.encode_with_special(&text);
        assert_eq!(context, ids("ids"), "{text:?}");
        assert_eq!(tokenizer.decode(&context), text);
        // Greedy over the f32 weights answers as transformers does, token for token, up to its end of turn.
        let want = ids("greedy_ids");
        let mut cache = KvCache::new();
        let mut rng = Rng::new(0);
        let stop: Vec<u32> = tokenizer.eos_id().into_iter().collect();
        let got = generate_with(
            &model,
            &mut cache,
            &context,
            want.len(),
            Sampling::greedy(),
            &stop,
            &mut rng,
            |_| Ok(true),
        )
        .unwrap();
        assert_eq!(got, want, "{:?}", tokenizer.decode(&got));
        assert_eq!(
            want.last().copied(),
            tokenizer.eos_id(),
            "the answer ends its turn"
        );
    }
}
