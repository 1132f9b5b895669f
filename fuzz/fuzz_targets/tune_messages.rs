//! The readers added with issue 16: the tuning wire messages. Raw input is parsed as a
//! client reply (`StepReply::from_bytes`) and as server step results
//! (`StepResults::from_bytes`) under a small (insecure, test-only) parameter set; it is also
//! put behind a well-formed results header so that damage reaches the ciphertext-bundle
//! reader behind it.
#![no_main]
use hepeft::tune::{StepReply, StepResults};
use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;
use common::test_params as params;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = StepReply::from_bytes(data) {
        // what parses re-serializes to the same bytes
        assert_eq!(r.to_bytes(), data);
    }
    let Some(params) = params() else { return };
    let _ = StepResults::from_bytes(params, data);
    let passes = u32::from(data.first().copied().unwrap_or(1) % 4 + 1);
    let per = u32::from(data.get(1).copied().unwrap_or(1) % 3 + 1);
    let mut framed = Vec::with_capacity(22 + data.len());
    framed.extend_from_slice(b"HPTS");
    framed.extend_from_slice(&1u16.to_le_bytes());
    framed.extend_from_slice(&7u64.to_le_bytes());
    framed.extend_from_slice(&passes.to_le_bytes());
    framed.extend_from_slice(&per.to_le_bytes());
    framed.extend_from_slice(data.get(2..).unwrap_or(&[]));
    let _ = StepResults::from_bytes(params, &framed);
});
