//! Parameter sets as TOML text (the client's params.toml reaches the server).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hepeft::ckks::CkksParams::from_toml(text);
    }
});
