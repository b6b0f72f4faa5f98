//! Token shards: opening, then reading every token, must work or fail cleanly for any bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = tapegrad_fuzz::scratch("tokens.tgs", data);
    if let Ok(shard) = tapegrad::data::Shard::open(&path) {
        let _ = shard.to_vec();
    }
});
