//! safetensors: `llama::hf::read_tensors` must return tensors or an error for any bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = tapegrad_fuzz::scratch("model.safetensors", data);
    let _ = tapegrad::llama::hf::read_tensors(&path);
});
