//! The versioned envelope: header parsing and full reads of every kind, from a stream and
//! from an in-memory buffer.
#![no_main]
use hepeft::io::format::{peek_header, read_envelope, read_envelope_bytes, FileKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = peek_header(data);
    for kind in FileKind::ALL {
        let _ = read_envelope(&mut &data[..], kind, 1 << 24);
        let _ = read_envelope_bytes(data, kind, 1 << 24);
    }
});
