//! Pinned golden bytes of the envelope format.
//!
//! If this test fails, the on-disk format changed. That is only allowed together with a
//! new `FORMAT_VERSION`, a reader for the old version (or a documented reason to drop it),
//! and an update of `docs/file-formats.md`. Then, and only then, update the constants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hepeft::io::format::{read_envelope, write_envelope, FileKind, PayloadReader, PayloadWriter};
use sha2::{Digest, Sha256};

/// SHA-256 of the golden file below, computed independently from the documented layout
/// (Python `struct` + `hashlib`, see `docs/file-formats.md`).
const GOLDEN_SHA256: &str = "061da2b6e5677d51ff9e4c2b9b7ab4c21ec8dcbbc746fdb8858539dd73865948";
/// Its length: 56-byte header + 48-byte payload + 8-byte checksum.
const GOLDEN_LEN: usize = 112;

fn golden_file() -> Vec<u8> {
    let mut digest = [0u8; 32];
    for (i, d) in digest.iter_mut().enumerate() {
        *d = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    let mut p = PayloadWriter::new();
    p.u16(7).u32(0xdead_beef).f64(1.5);
    p.len_prefixed_str("golden").unwrap();
    p.u64_slice(&[1, 1 << 59, (1 << 60) - 1]);
    let mut out = Vec::new();
    write_envelope(&mut out, FileKind::Ciphertext, &digest, p.as_slice()).unwrap();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn golden_envelope_bytes_are_pinned() {
    let file = golden_file();
    assert_eq!(file.len(), GOLDEN_LEN);
    assert_eq!(
        hex(&Sha256::digest(&file)),
        GOLDEN_SHA256,
        "the envelope format changed; bytes: {}",
        hex(&file)
    );
}

#[test]
fn golden_envelope_reads_back() {
    let file = golden_file();
    let env = read_envelope(&mut file.as_slice(), FileKind::Ciphertext, 1024).unwrap();
    let mut r = PayloadReader::new(&env.payload, "golden");
    assert_eq!(r.u16().unwrap(), 7);
    assert_eq!(r.u32().unwrap(), 0xdead_beef);
    assert_eq!(r.finite_f64("x").unwrap(), 1.5);
    assert_eq!(r.len_prefixed_str(16).unwrap(), "golden");
    assert_eq!(r.u64_vec(3, 3).unwrap(), vec![1, 1 << 59, (1 << 60) - 1]);
    r.finish().unwrap();
}

/// SHA-256 of a bound envelope (issue 20): flag bit 0, a binding block (version 1, role
/// query, key set 01..08, structure digest 0xaa x 32, 1 ciphertext per query, queries
/// [1, 3]) and an empty bundle count; computed independently with Python's `struct` and
/// `hashlib` from the table in `docs/file-formats.md`.
const GOLDEN_BOUND_SHA256: &str =
    "301e2e612f99a53cdeb1a9af33fea4f9ae255e062d8687c0f3a0499deb5545e6";

fn golden_bound_file() -> Vec<u8> {
    use hepeft::io::{Binding, KeySetId, Role};
    let mut digest = [0u8; 32];
    for (i, d) in digest.iter_mut().enumerate() {
        *d = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    let b = Binding {
        role: Role::Query,
        key_set: KeySetId([1, 2, 3, 4, 5, 6, 7, 8]),
        structure: [0xaa; 32],
        per_query: 1,
        queries: vec![1, 3],
    };
    let mut p = PayloadWriter::new();
    b.write(&mut p).unwrap();
    p.u64(0);
    let mut out = Vec::new();
    hepeft::io::format::write_envelope_flagged(
        &mut out,
        FileKind::Ciphertext,
        &digest,
        hepeft::io::FLAG_BOUND,
        p.as_slice(),
    )
    .unwrap();
    out
}

#[test]
fn golden_bound_envelope_bytes_are_pinned() {
    let file = golden_bound_file();
    assert_eq!(file.len(), 132);
    assert_eq!(
        hex(&Sha256::digest(&file)),
        GOLDEN_BOUND_SHA256,
        "the binding block changed; bytes: {}",
        hex(&file)
    );
    let env = read_envelope(&mut file.as_slice(), FileKind::Ciphertext, 1024).unwrap();
    assert_eq!(env.flags, hepeft::io::FLAG_BOUND);
    let mut r = PayloadReader::new(&env.payload, "golden");
    let b = hepeft::io::Binding::read(&mut r).unwrap();
    assert_eq!(b.queries, vec![1, 3]);
    assert_eq!(r.u64().unwrap(), 0);
    r.finish().unwrap();
}

/// SHA-256 of the exact backend's evaluation-key payload (format 2, tag `TFK2`) for the
/// key set without bootstrapping keys made from a fixed seed (the keyswitching key, two
/// absent bootstrapping keys, an absent public key). Pins the layout of `docs/file-formats.md` ("Exact evaluation keys")
/// together with tfhe-rs's seeded serialization of the pinned tfhe version.
#[cfg(feature = "exact")]
const EXACT_KEYS_V2_SHA256: &str =
    "89c94caf60023d1da272a333d7206a95e58f8a75de806ce1a21f9563df6cb315";

#[cfg(feature = "exact")]
#[test]
fn exact_evaluation_keys_format_2_is_pinned_and_format_1_refused() {
    use hepeft::exact::{generate_key_set, io as xio, ExactParams, KeySet};
    use rand::SeedableRng;
    let params = ExactParams::default_2m128().unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(19);
    let (_, keys) = generate_key_set(&params, KeySet::NoBootstrapping, &mut rng).unwrap();
    assert!(!keys.has_bootstrapping() && keys.public_key().is_none());
    let payload = xio::server_key_to_payload(&keys).unwrap();
    assert_eq!(&payload[..4], b"TFK2");
    let len = u32::from_le_bytes(payload[4..8].try_into().unwrap()) as usize;
    assert_eq!(len + 8, payload.len());
    assert_eq!(hex(&Sha256::digest(&payload)), EXACT_KEYS_V2_SHA256);
    let back = xio::server_key_from_payload(&params, &payload).unwrap();
    assert_eq!(xio::server_key_to_payload(&back).unwrap(), payload);
    // format 1 (tag `TFHE`): refused with the way out
    let mut old = payload.clone();
    old[..4].copy_from_slice(b"TFHE");
    let err = xio::server_key_from_payload(&params, &old)
        .unwrap_err()
        .to_string();
    assert!(err.contains("format 1") && err.contains("keygen"), "{err}");
}
