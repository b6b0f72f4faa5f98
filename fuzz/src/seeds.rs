//! Writes one valid file per reader into `corpus/<target>/` (the fuzzers' starting points): a safetensors file,
//! a GGUF file with an f32 and a Q8_0 tensor, a token shard and a trained tokenizer.

use std::path::Path;
use tapegrad::data::{Shard, Tokenizer};
use tapegrad::llama::checkpoint::to_safetensors;
use tapegrad::Tensor;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A GGUF v3 file: one string key, an f32 tensor `[4]` and a Q8_0 tensor `[32]` (one block).
fn gguf() -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(2u64.to_le_bytes()); // tensors
    out.extend(1u64.to_le_bytes()); // key-value pairs
    put_str(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes()); // string
    put_str(&mut out, "llama");
    let f32_data: Vec<u8> = [1.0f32, -2.0, 0.5, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut q8_data = half::f16::from_f32(0.25).to_le_bytes().to_vec();
    q8_data.extend((0..32).map(|i| (i as i8 - 16) as u8));
    for (name, len, ty, offset) in [("f", 4u64, 0u32, 0u64), ("q", 32, 8, 32)] {
        put_str(&mut out, name);
        out.extend(1u32.to_le_bytes());
        out.extend(len.to_le_bytes());
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    let start = out.len();
    out.extend(f32_data);
    out.resize(start + 32, 0);
    out.extend(q8_data);
    out
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn main() {
    let tensors = vec![
        (
            "a".to_string(),
            Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).expect("tensor"),
        ),
        (
            "b".to_string(),
            Tensor::from_vec(vec![0.5f32; 4], &[4]).expect("tensor"),
        ),
    ];
    write(
        "safetensors",
        "seed",
        &to_safetensors(&tensors).expect("safetensors"),
    );
    write("gguf", "seed", &gguf());
    let tmp = std::env::temp_dir().join(format!("tapegrad-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp folder");
    let shard = tmp.join("seed.tgs");
    Shard::write(&shard, &[1, 2, 3, 500, 7, 9, 11], 600).expect("shard");
    write(
        "shard",
        "seed",
        &std::fs::read(&shard).expect("shard bytes"),
    );
    let tokenizer = Tokenizer::train(
        &[b"the cat sat on the mat, the cat ate 42 rats".as_slice()],
        270,
    )
    .expect("tokenizer");
    let path = tmp.join("tokenizer.json");
    tokenizer.save(&path).expect("tokenizer file");
    write(
        "tokenizer",
        "seed",
        &std::fs::read(&path).expect("tokenizer bytes"),
    );
    let _ = std::fs::remove_dir_all(&tmp);
    println!("seeds written under corpus/");
}
