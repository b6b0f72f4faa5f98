//! Chat templates rendered as transformers renders them: SmolLM2's (ChatML), a Llama-2 chat template, Llama
//! 3.1's (llama.cpp's copy) and Zephyr's (TinyLlama's), over five conversations with and without the
//! generation prompt, against `tests/fixtures/chat/expected.json` (`scripts/chat_template_reference.py`,
//! transformers' own renderer); a template that refuses a conversation refuses it here too. And the template
//! inside the SmolLM2 GGUF file is the one these fixtures hold, rendered with its own BOS/EOS texts.

mod common;

use serde_json::Value;
use std::path::PathBuf;
use tapegrad::llama::chat::{ChatTemplate, Message};

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
fn the_smollm2_file_carries_its_template_and_renders_with_its_own_tokens() {
    let Some(path) = common::smollm2_path() else {
        return;
    };
    let (_, tokenizer) = tapegrad::llama::pretrained::load_pretrained_with(
        &path,
        tapegrad::llama::pretrained::Quantization::Keep,
    )
    .unwrap();
    let tokenizer = tokenizer.unwrap();
    let template = tokenizer.chat_template().unwrap().unwrap();
    assert_eq!(template.source(), read("smollm2.jinja"));
    let messages = [Message::new("user", "Hi")];
    let text = template.render(&messages, true).unwrap();
    assert!(
        text.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{text:?}"
    );
    // The markers are single special tokens, not spelled out.
    let ids = tokenizer.encode_with_special(&text);
    let start = tokenizer.encode_with_special("<|im_start|>");
    let end = tokenizer.encode_with_special("<|im_end|>");
    assert_eq!((start.len(), end.len()), (1, 1));
    assert_eq!(ids.iter().filter(|&&i| i == start[0]).count(), 3);
    assert_eq!(ids.iter().filter(|&&i| i == end[0]).count(), 2);
    assert_eq!(tokenizer.decode(&ids), text);
}
