//! GGUF: parsing, then reading every tensor (dequantizing it to f32), must give values or an error for any
//! bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapegrad::io::gguf::Gguf;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = Gguf::from_bytes("fuzz.gguf", data.to_vec()) {
        let names: Vec<String> = file.tensor_infos().iter().map(|t| t.name.clone()).collect();
        for name in names {
            let _ = file.tensor_f32(&name);
        }
    }
});
