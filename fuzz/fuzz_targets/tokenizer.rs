//! Tokenizer files: a tokenizer that loads must round-trip text; anything else must be an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = tapegrad_fuzz::scratch("tokenizer.json", data);
    if let Ok(t) = tapegrad::data::Tokenizer::load(&path) {
        let text = b"The cat sat on the mat; 42 rats.";
        assert_eq!(
            t.decode(&t.encode(text)),
            text,
            "a loaded tokenizer round-trips"
        );
    }
});
