//! Envelope format: roundtrips, every kind of corruption, and a never-panics property.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hepeft::io::format::{
    peek_header, read_envelope, read_file, write_envelope, write_file_atomic, Envelope, FileKind,
    PayloadReader, PayloadWriter, CHECKSUM_LEN, FORMAT_VERSION, HEADER_LEN, MAGIC,
};
use hepeft::Error;
use proptest::prelude::*;

const DIGEST: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];
const LIMIT: u64 = 1 << 20;

fn small_payload() -> Vec<u8> {
    let mut p = PayloadWriter::new();
    p.u16(3).u64_slice(&[1, 1 << 59, 42]).f64(0.5);
    p.into_bytes()
}

fn small_file(kind: FileKind) -> Vec<u8> {
    let mut out = Vec::new();
    write_envelope(&mut out, kind, &DIGEST, &small_payload()).unwrap();
    out
}

fn read(bytes: &[u8], kind: FileKind) -> hepeft::Result<Envelope> {
    read_envelope(&mut &bytes[..], kind, LIMIT)
}

/// The reason of a format error; panics on any other error or on success.
fn reason<T: std::fmt::Debug>(r: hepeft::Result<T>) -> String {
    match r {
        Err(Error::Format { reason, .. }) => reason,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn roundtrip_every_kind() {
    for kind in FileKind::ALL {
        let file = small_file(kind);
        assert_eq!(
            file.len(),
            HEADER_LEN + small_payload().len() + CHECKSUM_LEN
        );
        let env = read(&file, kind).unwrap();
        assert_eq!(env.kind, kind);
        assert_eq!(env.version, FORMAT_VERSION);
        assert_eq!(env.params_digest, DIGEST);
        assert_eq!(env.payload, small_payload());
        env.check_params(&DIGEST, "object").unwrap();

        let mut r = PayloadReader::new(&env.payload, "object");
        let n = r.u16().unwrap() as usize;
        assert_eq!(r.u64_vec(n, 16).unwrap(), vec![1, 1 << 59, 42]);
        assert_eq!(r.finite_f64("scale").unwrap(), 0.5);
        r.finish().unwrap();
    }
}

#[test]
fn empty_payload_roundtrips() {
    let mut file = Vec::new();
    write_envelope(&mut file, FileKind::Logits, &DIGEST, &[]).unwrap();
    assert_eq!(file.len(), HEADER_LEN + CHECKSUM_LEN);
    assert!(read(&file, FileKind::Logits).unwrap().payload.is_empty());
}

#[test]
fn peek_header_reads_only_the_header() {
    let file = small_file(FileKind::PublicKey);
    let h = peek_header(&file[..HEADER_LEN]).unwrap();
    assert_eq!(h.kind, FileKind::PublicKey);
    assert_eq!(h.version, FORMAT_VERSION);
    assert_eq!(h.params_digest, DIGEST);
    assert_eq!(h.payload_len, small_payload().len() as u64);
    assert_eq!(h.total_len(), Some(file.len() as u64));
    assert!(reason(peek_header(&file[..HEADER_LEN - 1])).contains("truncated"));
    assert!(reason(peek_header(b"GIF89a")).contains("not a hepeft file"));
}

#[test]
fn bad_magic_is_named() {
    let mut file = small_file(FileKind::Ciphertext);
    file[1] = b'X';
    assert!(reason(read(&file, FileKind::Ciphertext)).contains("not a hepeft file"));
    // Short files that are not hepeft files are "not a hepeft file", not "truncated".
    assert!(reason(read(b"\x7fELF", FileKind::Ciphertext)).contains("not a hepeft file"));
    assert!(reason(read(b"{\"json\": true}", FileKind::Ciphertext)).contains("not a hepeft file"));
}

#[test]
fn wrong_kind_names_both() {
    let file = small_file(FileKind::Ciphertext);
    let r = reason(read(&file, FileKind::SecretKey));
    assert!(r.contains("wrong kind"), "{r}");
    assert!(r.contains("expected secret key, found ciphertext"), "{r}");
}

#[test]
fn unsupported_version_unknown_kind_and_flags() {
    let mut file = small_file(FileKind::Ciphertext);
    file[8..10].copy_from_slice(&2u16.to_le_bytes());
    let r = reason(read(&file, FileKind::Ciphertext));
    assert!(r.contains("unsupported format version 2"), "{r}");

    let mut file = small_file(FileKind::Ciphertext);
    file[10..12].copy_from_slice(&999u16.to_le_bytes());
    assert!(reason(read(&file, FileKind::Ciphertext)).contains("unknown file kind 999"));

    // Bit 0 is FLAG_BOUND (issue 20); bit 1 is unknown.
    let mut file = small_file(FileKind::Ciphertext);
    file[12] = 2;
    assert!(reason(read(&file, FileKind::Ciphertext)).contains("unsupported flags"));
}

#[test]
fn huge_length_is_refused_before_allocating() {
    for len in [LIMIT + 1, 1 << 40, u64::MAX - 8, u64::MAX] {
        let mut file = small_file(FileKind::EvaluationKeys);
        file[48..56].copy_from_slice(&len.to_le_bytes());
        let r = reason(read(&file, FileKind::EvaluationKeys));
        assert!(r.contains("exceeds the limit"), "{len}: {r}");
    }
    // With no limit, a length the stream does not hold is reported as truncated (after a
    // bounded reservation), and a length whose total overflows is named as such.
    let mut file = small_file(FileKind::EvaluationKeys);
    file[48..56].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let r = reason(read_envelope(
        &mut &file[..],
        FileKind::EvaluationKeys,
        u64::MAX,
    ));
    assert!(r.contains("truncated"), "{r}");
    file[48..56].copy_from_slice(&u64::MAX.to_le_bytes());
    let r = reason(read_envelope(
        &mut &file[..],
        FileKind::EvaluationKeys,
        u64::MAX,
    ));
    assert!(r.contains("overflows"), "{r}");
}

#[test]
fn every_truncation_is_detected() {
    let file = small_file(FileKind::Plaintext);
    for cut in 0..file.len() {
        let r = reason(read(&file[..cut], FileKind::Plaintext));
        assert!(r.contains("truncated"), "prefix of {cut} bytes: {r}");
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut file = small_file(FileKind::Plaintext);
    file.push(0);
    assert!(reason(read(&file, FileKind::Plaintext)).contains("trailing bytes"));
}

#[test]
fn every_bit_flip_is_detected() {
    let file = small_file(FileKind::Ciphertext);
    for byte in 0..file.len() {
        for bit in 0..8 {
            let mut f = file.clone();
            f[byte] ^= 1 << bit;
            let r = reason(read(&f, FileKind::Ciphertext));
            let expect: &[&str] = match byte {
                0..=7 => &["not a hepeft file"],
                8..=9 => &["unsupported format version"],
                10..=11 => &["unknown file kind", "wrong kind"],
                // Bit 0 of the flags is FLAG_BOUND: a flip there is caught by the checksum.
                12 if bit == 0 => &["checksum mismatch"],
                12..=15 => &["unsupported flags"],
                // A shorter length makes the reader take payload bytes as the checksum.
                48..=55 => &[
                    "exceeds the limit",
                    "truncated",
                    "trailing bytes",
                    "checksum mismatch",
                ],
                _ => &["checksum mismatch"],
            };
            assert!(
                expect.iter().any(|e| r.contains(e)),
                "byte {byte} bit {bit}: {r} (expected one of {expect:?})"
            );
        }
    }
}

#[test]
fn files_roundtrip_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ct.hepeft");
    write_file_atomic(&path, FileKind::Ciphertext, &DIGEST, &small_payload(), None).unwrap();
    let env = read_file(&path, FileKind::Ciphertext, LIMIT).unwrap();
    assert_eq!(env.payload, small_payload());

    // Overwrite in place; no temporary file is left behind.
    write_file_atomic(&path, FileKind::Ciphertext, &DIGEST, b"new", None).unwrap();
    assert_eq!(
        read_file(&path, FileKind::Ciphertext, LIMIT)
            .unwrap()
            .payload,
        b"new"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ct.hepeft")]);
}

#[test]
fn failed_atomic_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The target is a non-empty directory: the rename fails, the temporary file goes.
    let target = dir.path().join("occupied");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("x"), b"x").unwrap();
    let r = write_file_atomic(&target, FileKind::Logits, &DIGEST, b"abc", None);
    assert!(matches!(r, Err(Error::Io { path: Some(_), .. })), "{r:?}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("occupied")]);
}

#[test]
fn read_file_checks_size_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pk.hepeft");
    let file = small_file(FileKind::PublicKey);

    std::fs::write(&path, &file[..file.len() - 3]).unwrap();
    let r = reason(read_file(&path, FileKind::PublicKey, LIMIT));
    assert!(r.contains("truncated"), "{r}");

    let mut long = file.clone();
    long.extend_from_slice(b"junk");
    std::fs::write(&path, &long).unwrap();
    let r = reason(read_file(&path, FileKind::PublicKey, LIMIT));
    assert!(r.contains("trailing bytes"), "{r}");

    match read_file(dir.path().join("missing"), FileKind::PublicKey, LIMIT) {
        Err(Error::Io { path: Some(p), .. }) => assert!(p.ends_with("missing")),
        other => panic!("expected an I/O error with the path, got {other:?}"),
    }
}

#[cfg(unix)]
#[test]
fn secret_keys_can_be_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sk.hepeft");
    write_file_atomic(&path, FileKind::SecretKey, &DIGEST, b"secret", Some(0o600)).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        read_file(&path, FileKind::SecretKey, LIMIT)
            .unwrap()
            .payload,
        b"secret"
    );
}

#[test]
fn parameter_mismatch_is_structured() {
    let env = read(&small_file(FileKind::Ciphertext), FileKind::Ciphertext).unwrap();
    assert!(matches!(
        env.check_params(&[0xee; 32], "ciphertext"),
        Err(Error::ParameterMismatch { .. })
    ));
}

#[test]
fn magic_and_version_constants() {
    assert_eq!(FORMAT_VERSION, 1);
    assert_eq!(small_file(FileKind::Parameters)[..8], MAGIC);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never make the reader panic, and are never accepted by accident.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        for kind in [FileKind::Ciphertext, FileKind::SecretKey] {
            prop_assert!(read_envelope(&mut &bytes[..], kind, LIMIT).is_err());
            let _ = read_envelope(&mut &bytes[..], kind, u64::MAX);
        }
        let _ = peek_header(&bytes);
    }

    /// Random edits of a valid file (valid magic, so the deeper checks run) never panic,
    /// and any edit that changes the bytes is rejected.
    #[test]
    fn edited_files_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let original = small_file(FileKind::Ciphertext);
        let mut f = original.clone();
        for (at, v) in edits {
            let i = at % f.len();
            f[i] = v;
        }
        let keep = if cut % 4 == 0 { cut % (f.len() + 1) } else { f.len() };
        f.truncate(keep);
        let r = read(&f, FileKind::Ciphertext);
        if f == original {
            prop_assert!(r.is_ok());
        } else {
            prop_assert!(r.is_err());
        }
    }

    /// The payload reader never panics on arbitrary bytes and arbitrary requests.
    #[test]
    fn payload_reader_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..128),
        ops in proptest::collection::vec((0u8..9, any::<usize>()), 0..16),
    ) {
        let mut r = PayloadReader::new(&bytes, "fuzz");
        for (op, n) in ops {
            let _ = match op {
                0 => r.u8().map(|_| ()),
                1 => r.u16().map(|_| ()),
                2 => r.u32().map(|_| ()),
                3 => r.u64().map(|_| ()),
                4 => r.finite_f64("x").map(|_| ()),
                5 => r.u64_vec(n, n % 64).map(|_| ()),
                6 => r.len_prefixed_str(n).map(|_| ()),
                7 => r.bytes(n).map(|_| ()),
                _ => r.count("n", n).map(|_| ()),
            };
        }
        let _ = r.finish();
    }
}
