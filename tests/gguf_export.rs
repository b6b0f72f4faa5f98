//! GGUF export (`llama::export`): a model written as GGUF reads back through our GGUF loader with identical
//! logits in f32, f16 weights within f16 rounding, Q8_0 and Q4_0 weights within each format's per-block
//! error bound; every tensor gets llama.cpp's name and the q/k permutation (grouped-query heads included);
//! our tokenizer is written as a `gpt2` vocabulary that encodes plain text to our ids, a GGUF tokenizer (with
//! its chat template) is written back as it was. And SmolLM2, exported, generates its greedy text again.
//! (llama.cpp itself is checked by `scripts/gguf-llamacpp-check.sh`, which needs its Python package.)

mod common;

use std::path::PathBuf;
use tapegrad::data::Tokenizer;
use tapegrad::io::gguf::GgmlType;
use tapegrad::llama::checkpoint::dense_weights;
use tapegrad::llama::export::export_gguf;
use tapegrad::llama::generate::{generate, Sampling};
use tapegrad::llama::gguf::load_llama;
use tapegrad::llama::pretrained::{load_pretrained_with, Quantization, TextTokenizer};
use tapegrad::llama::{Config, Llama};
use tapegrad::{no_grad, DType, Rng};

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tapegrad-export-{}-{name}", std::process::id()))
}

fn tiny() -> Llama {
    let config: Config = Config::preset("tiny").unwrap().config;
    assert!(
        config.n_kv_heads < config.n_heads,
        "grouped-query heads are exported too"
    );
    Llama::new(config, DType::F32, 11).unwrap()
}

fn logits(model: &Llama, ids: &[u32]) -> Vec<f32> {
    no_grad(|| model.forward(ids, 1, ids.len(), None))
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
}

/// Largest `|a - b|` over the largest `|a|`.
fn relative(a: &[f32], b: &[f32]) -> f32 {
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    diff / a.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

#[test]
fn an_exported_model_reads_back_with_its_logits_and_within_each_formats_error() {
    let model = tiny();
    let corpus =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/austen.txt")).unwrap();
    let tokenizer = TextTokenizer::Ours(Tokenizer::train(&[&corpus[..200_000]], 512).unwrap());
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % 512).collect();
    let want = logits(&model, &ids);
    let original = dense_weights(&model).unwrap();
    for (ty, bound) in [
        (GgmlType::F32, None),
        (GgmlType::F16, Some(1.0 / 1024.0)),
        (GgmlType::Q8_0, Some(1.0 / 254.0 + 1.0 / 1024.0)),
        (GgmlType::Q4_0, Some(1.0 / 8.0 + 1.0 / 256.0)),
    ] {
        let path = temp(&format!("tiny-{ty}.gguf"));
        export_gguf(&model, Some(&tokenizer), &path, ty, "tiny").unwrap();
        let (back, read_tokenizer) = load_pretrained_with(&path, Quantization::Dense).unwrap();
        let got = logits(&back, &ids);
        let file = load_llama(&path).unwrap();
        assert_eq!(
            file.tensors.len(),
            original.len(),
            "{ty}: every tensor, by its llama.cpp name"
        );
        match bound {
            None => assert_eq!(got, want, "f32 round trip"),
            Some(bound) => {
                // Each weight within the format's error of its block (32 elements; f16: of itself).
                for (name, w) in &original {
                    let (_, data) = file.tensor(name).unwrap();
                    let w = w.to_vec::<f32>().unwrap();
                    // f16: relative to each value, and half a step of its subnormals (2^-25).
                    let (block, floor) = if ty == GgmlType::F16 {
                        (1, 3e-8)
                    } else {
                        (32, 1e-12)
                    };
                    for (orig, read) in w.chunks(block).zip(data.chunks(block)) {
                        let m = orig.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
                        for (x, y) in orig.iter().zip(read) {
                            assert!(
                                (x - y).abs() <= m * bound + floor,
                                "{ty} {name}: {x} read as {y}"
                            );
                        }
                    }
                }
                let err = relative(&want, &got);
                assert!(
                    err > 0.0 && err < 40.0 * bound,
                    "{ty}: logits moved by {err}"
                );
            }
        }
        // Our tokenizer comes back as a vocabulary that encodes plain text to our ids.
        let read_tokenizer = read_tokenizer.unwrap();
        assert!(matches!(read_tokenizer, TextTokenizer::Vocab(..)));
        for text in [
            "It is a truth universally acknowledged, that 1 single man",
            "Mr. Darcy's 10,000 a year!\n\n  Ok",
        ] {
            assert_eq!(
                read_tokenizer.encode(text),
                tokenizer.encode(text),
                "{text:?}"
            );
        }
        assert_eq!(
            (read_tokenizer.bos_id(), read_tokenizer.eos_id()),
            (Some(256), Some(257))
        );
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn lora_adapters_are_merged_into_the_export() {
    let mut model = tiny();
    model
        .add_lora(&tapegrad::llama::LoraConfig::new(4), 3)
        .unwrap();
    // B starts at zero: give the adapters something to say.
    model.visit_mut(&mut |name, t| {
        if name.contains("lora_B") {
            *t = tapegrad::Tensor::uniform(t.shape(), -0.1, 0.1, DType::F32, &mut Rng::new(5));
        }
    });
    let ids: Vec<u32> = (0..16).collect();
    let want = logits(&model, &ids);
    let path = temp("lora.gguf");
    export_gguf(&model, None, &path, GgmlType::F32, "lora").unwrap();
    let (back, tokenizer) = load_pretrained_with(&path, Quantization::Dense).unwrap();
    assert!(tokenizer.is_none() && back.lora.is_none());
    assert!(relative(&want, &logits(&back, &ids)) < 1e-5);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn smollm2_exported_keeps_its_tokenizer_template_and_greedy_text() {
    let Some(path) = common::smollm2_path() else {
        return;
    };
    let (model, tokenizer) = load_pretrained_with(&path, Quantization::Dense).unwrap();
    let tokenizer = tokenizer.unwrap();
    let out = temp("smollm2-f16.gguf");
    export_gguf(&model, Some(&tokenizer), &out, GgmlType::F16, "SmolLM2").unwrap();
    let (back, back_tokenizer) = load_pretrained_with(&out, Quantization::Dense).unwrap();
    let back_tokenizer = back_tokenizer.unwrap();
    let text = "The capital of France is";
    let ids = tokenizer.encode(text);
    assert_eq!(back_tokenizer.encode(text), ids);
    assert_eq!(
        back_tokenizer.chat_template().unwrap().unwrap().source(),
        tokenizer.chat_template().unwrap().unwrap().source()
    );
    let greedy =
        |m: &Llama| generate(m, &ids, 12, Sampling::greedy(), None, &mut Rng::new(0)).unwrap();
    assert_eq!(
        greedy(&back),
        greedy(&model),
        "f16 weights, the same greedy text"
    );
    std::fs::remove_file(&out).unwrap();
}
