//! The readers added with issue 20: the binding block (`Binding::read`) on raw bytes, and
//! `from_bytes_bound` for the bound kinds (secret key, evaluation keys, ciphertext bundle)
//! under a small (insecure, test-only) parameter set. Raw input is parsed as a binding
//! block, and also sealed into a bound envelope of each kind so that damage reaches the
//! binding parser and the payload parser behind it.
#![no_main]
use hepeft::ckks::*;
use hepeft::io::format::{write_envelope_flagged, FileKind, PayloadReader, FLAG_BOUND};
use hepeft::io::Binding;
use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;
use common::test_params as params;

fuzz_target!(|data: &[u8]| {
    let _ = Binding::read(&mut PayloadReader::new(data, "binding"));
    let Some(params) = params() else { return };
    for kind in [
        FileKind::SecretKey,
        FileKind::EvaluationKeys,
        FileKind::Ciphertext,
    ] {
        let mut file = Vec::new();
        if write_envelope_flagged(&mut file, kind, &params.digest(), FLAG_BOUND, data).is_err() {
            continue;
        }
        match kind {
            FileKind::SecretKey => {
                let _ = from_bytes_bound::<SecretKey>(params, &file);
            }
            FileKind::EvaluationKeys => {
                let _ = from_bytes_bound::<EvaluationKeys>(params, &file);
            }
            _ => {
                let _ = from_bytes_bound::<CiphertextBundle>(params, &file);
            }
        }
    }
});
