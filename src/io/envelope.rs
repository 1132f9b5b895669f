//! The versioned on-disk envelope shared by every hepeft file (re-exported by
//! [`super::format`], with the payload codec and the atomic file writers).
//!
//! Size: one format (header, checksum, readers and their refusals); about 130 of this
//! file's lines are its unit tests, which exercise the whole format module.
//!
//! Every object hepeft writes (parameters, keys, ciphertexts, plaintexts, logits, compiled
//! plans) is one *envelope*: a fixed 56-byte header, an opaque payload, and an 8-byte
//! checksum. The byte-by-byte layout is in `docs/file-formats.md`; in short:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | [`MAGIC`] |
//! | 8 | 2 | format version, u16 LE ([`FORMAT_VERSION`]) |
//! | 10 | 2 | [`FileKind`], u16 LE |
//! | 12 | 4 | flags, u32 LE (version 1 defines bit 0, [`FLAG_BOUND`]; others are refused) |
//! | 16 | 32 | parameter digest |
//! | 48 | 8 | payload length in bytes, u64 LE |
//! | 56 | len | payload |
//! | 56 + len | 8 | first 8 bytes of SHA-256(header ‖ payload) |
//!
//! Reading is defensive: the magic, version, kind, flags and the declared length (against
//! a caller-chosen limit) are all checked *before* the payload is allocated, and the
//! checksum catches truncation and bit flips. The checksum guards against accidents, not
//! against an adversary: anyone can recompute it.
//!
//! Payloads are built with [`super::payload::PayloadWriter`] and parsed with
//! [`super::payload::PayloadReader`]; the example is in [`super::format`].

use std::fmt;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::fs::with_path;
use super::payload::PayloadReader;
use crate::{Error, Result};

/// The first eight bytes of every hepeft file.
///
/// PNG-style: the leading `0x89` is not ASCII (a text tool or a 7-bit channel will mangle
/// it), and the trailing `\n` catches line-ending conversion.
pub const MAGIC: [u8; 8] = *b"\x89HEPEFT\n";

/// The envelope format version this build writes, and the only one it reads.
pub const FORMAT_VERSION: u16 = 1;

/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 56;

/// Size of the trailing checksum in bytes.
pub const CHECKSUM_LEN: usize = 8;

/// Parameter digest to use for objects that belong to no parameter set (for example a
/// parameters file itself).
pub const NO_PARAMS_DIGEST: [u8; 32] = [0u8; 32];

/// A generous payload limit for tools that only look at files (such as `inspect`):
/// 16 GiB. Readers that know the parameters should pass a tight, computed limit instead.
pub const DEFAULT_MAX_PAYLOAD: u64 = 16 << 30;

/// Largest up-front allocation when reading a payload of unconfirmed length (64 MiB).
const STREAM_RESERVE: usize = 64 << 20;

/// Flag bit 0: the payload starts with a binding block ([`crate::io::binding::Binding`]):
/// the key set, plan structure and role the object belongs to (issue 20).
pub const FLAG_BOUND: u32 = 1;

/// Flags defined by format version 1: [`FLAG_BOUND`].
const KNOWN_FLAGS: u32 = FLAG_BOUND;

/// What an envelope holds. Stored as a `u16`; zero is never a valid kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum FileKind {
    /// A checked CKKS parameter set.
    Parameters = 1,
    /// A secret key. Written with owner-only permissions.
    SecretKey = 2,
    /// A public encryption key.
    PublicKey = 3,
    /// Relinearization and Galois (rotation) keys.
    EvaluationKeys = 4,
    /// One or more CKKS ciphertexts.
    Ciphertext = 5,
    /// An encoded, unencrypted CKKS plaintext.
    Plaintext = 6,
    /// Decrypted output scores.
    Logits = 7,
    /// A compiled execution plan for an adapter.
    ModelPlan = 8,
}

impl FileKind {
    /// Every kind this build knows, in numeric order.
    pub const ALL: [FileKind; 8] = [
        FileKind::Parameters,
        FileKind::SecretKey,
        FileKind::PublicKey,
        FileKind::EvaluationKeys,
        FileKind::Ciphertext,
        FileKind::Plaintext,
        FileKind::Logits,
        FileKind::ModelPlan,
    ];

    /// A short human-readable name, used in error messages and by `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Parameters => "parameters",
            FileKind::SecretKey => "secret key",
            FileKind::PublicKey => "public key",
            FileKind::EvaluationKeys => "evaluation keys",
            FileKind::Ciphertext => "ciphertext",
            FileKind::Plaintext => "plaintext",
            FileKind::Logits => "logits",
            FileKind::ModelPlan => "model plan",
        }
    }

    /// The on-disk code of this kind.
    pub fn code(self) -> u16 {
        self as u16
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<u16> for FileKind {
    type Error = Error;

    fn try_from(code: u16) -> Result<Self> {
        FileKind::ALL
            .into_iter()
            .find(|k| k.code() == code)
            .ok_or_else(|| Error::format("hepeft file", format!("unknown file kind {code}")))
    }
}

/// The decoded fixed header of an envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the payload holds.
    pub kind: FileKind,
    /// Format version the file was written with.
    pub version: u16,
    /// Flag bits (always 0 in version 1).
    pub flags: u32,
    /// Digest of the parameter set the object was made under.
    pub params_digest: [u8; 32],
    /// Payload length in bytes.
    pub payload_len: u64,
}

impl Header {
    /// Total size of the file this header describes (header, payload and checksum), or
    /// `None` if it overflows a `u64`.
    pub fn total_len(&self) -> Option<u64> {
        self.payload_len
            .checked_add((HEADER_LEN + CHECKSUM_LEN) as u64)
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let fields: [&[u8]; 6] = [
            &MAGIC,
            &self.version.to_le_bytes(),
            &self.kind.code().to_le_bytes(),
            &self.flags.to_le_bytes(),
            &self.params_digest,
            &self.payload_len.to_le_bytes(),
        ];
        let mut at = 0;
        for field in fields {
            for (dst, src) in h.iter_mut().skip(at).zip(field) {
                *dst = *src;
            }
            at += field.len();
        }
        h
    }

    /// Parses and validates a complete header: magic, version, kind, flags.
    fn decode(h: &[u8; HEADER_LEN]) -> Result<Header> {
        let mut r = PayloadReader::new(h, "hepeft file");
        let magic = r.bytes(MAGIC.len())?;
        if magic != MAGIC {
            return Err(bad_magic(magic));
        }
        let version = r.u16()?;
        if version != FORMAT_VERSION {
            return Err(Error::format(
                "hepeft file",
                format!("unsupported format version {version} (this build reads version {FORMAT_VERSION})"),
            ));
        }
        let kind = FileKind::try_from(r.u16()?)?;
        let flags = r.u32()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::format(
                "hepeft file",
                format!(
                    "unsupported flags {flags:#010x} (format version {version} defines only {KNOWN_FLAGS:#x}: \
                     the file was written by a newer hepeft)"
                ),
            ));
        }
        let mut params_digest = [0u8; 32];
        for (dst, src) in params_digest.iter_mut().zip(r.bytes(32)?) {
            *dst = *src;
        }
        let payload_len = r.u64()?;
        r.finish()?;
        Ok(Header {
            kind,
            version,
            flags,
            params_digest,
            payload_len,
        })
    }
}

/// A fully read and verified envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// What the payload holds (always the kind the reader asked for).
    pub kind: FileKind,
    /// Format version the file was written with.
    pub version: u16,
    /// Flag bits ([`FLAG_BOUND`]).
    pub flags: u32,
    /// Digest of the parameter set the object was made under.
    pub params_digest: [u8; 32],
    /// The payload bytes, checksum verified.
    pub payload: Vec<u8>,
}

impl Envelope {
    /// Checks that the envelope was made under the parameter set with digest `expected`.
    ///
    /// # Errors
    /// [`Error::ParameterMismatch`] naming `what` and both digests (hex, 16 digits).
    pub fn check_params(&self, expected: &[u8; 32], what: &str) -> Result<()> {
        if &self.params_digest == expected {
            Ok(())
        } else {
            Err(Error::ParameterMismatch {
                what: what.to_string(),
                expected: short_hex(expected),
                found: short_hex(&self.params_digest),
            })
        }
    }
}

/// Lower-case hex of a whole digest.
pub fn digest_hex(digest: &[u8; 32]) -> String {
    hex(digest)
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn short_hex(digest: &[u8; 32]) -> String {
    hex(digest.get(..8).unwrap_or(digest))
}

fn bad_magic(found: &[u8]) -> Error {
    Error::format(
        "hepeft file",
        format!(
            "not a hepeft file (bad magic: expected {}, found {})",
            hex(&MAGIC),
            hex(found)
        ),
    )
}

fn truncated(what: &str, detail: impl fmt::Display) -> Error {
    Error::format(what, format!("truncated: {detail}"))
}

fn checksum(header: &[u8; HEADER_LEN], payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = Sha256::new();
    h.update(header);
    h.update(payload);
    let full = h.finalize();
    let mut out = [0u8; CHECKSUM_LEN];
    for (dst, src) in out.iter_mut().zip(full.iter()) {
        *dst = *src;
    }
    out
}

/// Writes one envelope: header, `payload`, checksum.
///
/// # Errors
/// [`Error::Io`] if the writer fails.
pub fn write_envelope(
    w: &mut impl Write,
    kind: FileKind,
    params_digest: &[u8; 32],
    payload: &[u8],
) -> Result<()> {
    write_envelope_flagged(w, kind, params_digest, 0, payload)
}

/// Writes one envelope with flag bits `flags` (see [`FLAG_BOUND`]).
///
/// # Errors
/// [`Error::Format`] for an unknown flag bit; [`Error::Io`] if the writer fails.
pub fn write_envelope_flagged(
    w: &mut impl Write,
    kind: FileKind,
    params_digest: &[u8; 32],
    flags: u32,
    payload: &[u8],
) -> Result<()> {
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Error::format(
            "hepeft file",
            format!("unknown flags {flags:#x}"),
        ));
    }
    let payload_len = u64::try_from(payload.len())
        .map_err(|_| Error::format("hepeft file", "payload length does not fit in a u64"))?;
    let header = Header {
        kind,
        version: FORMAT_VERSION,
        flags,
        params_digest: *params_digest,
        payload_len,
    }
    .encode();
    w.write_all(&header)?;
    w.write_all(payload)?;
    w.write_all(&checksum(&header, payload))?;
    Ok(())
}

/// Decodes the header at the start of `bytes` without reading the payload (for `inspect`).
///
/// `bytes` needs only the first [`HEADER_LEN`] bytes of the file. The checksum is not
/// verified (it covers the payload); use [`read_envelope`] for that.
///
/// # Errors
/// [`Error::Format`]: bad magic, unsupported version, unknown kind, unknown flags, or fewer
/// than [`HEADER_LEN`] bytes.
pub fn peek_header(bytes: &[u8]) -> Result<Header> {
    let Some(prefix) = bytes.get(..HEADER_LEN) else {
        return Err(short_header(bytes));
    };
    let mut h = [0u8; HEADER_LEN];
    for (dst, src) in h.iter_mut().zip(prefix) {
        *dst = *src;
    }
    Header::decode(&h)
}

/// The error for a file shorter than a header: bad magic if what is there already
/// disagrees with the magic, truncated otherwise.
fn short_header(bytes: &[u8]) -> Error {
    let n = bytes.len().min(MAGIC.len());
    match (bytes.get(..n), MAGIC.get(..n)) {
        (Some(found), Some(expected)) if found != expected => bad_magic(found),
        _ => truncated(
            "hepeft file",
            format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            ),
        ),
    }
}

/// Reads until `buf` is full or the reader ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads and verifies one envelope that must fill the rest of `r`.
///
/// Checks, in order: magic, format version, kind (known, and equal to `expected`), flags,
/// declared payload length `<= max_payload` (before allocating anything), then reads the
/// payload, verifies the checksum, and refuses any byte after it (one envelope per
/// stream: the reader is consumed to its end).
///
/// Memory use is bounded by `max_payload`, and also by the bytes that actually arrive: a
/// header that claims more than the stream holds is reported as truncated after at most
/// 64 MiB is reserved. Choose `max_payload` from the parameters (the exact size of the
/// expected object) where possible, [`DEFAULT_MAX_PAYLOAD`] only for inspection tools.
///
/// # Errors
/// [`Error::Format`] naming the problem ("not a hepeft file", "unsupported format
/// version", "wrong kind", "exceeds the limit", "truncated", "checksum mismatch",
/// "trailing bytes"); [`Error::Io`] if the reader fails.
pub fn read_envelope(r: &mut impl Read, expected: FileKind, max_payload: u64) -> Result<Envelope> {
    read_envelope_sized(r, expected, max_payload, None)
}

/// Reads and verifies the one envelope that fills `bytes` exactly (see [`read_envelope`]).
///
/// Unlike reading from a stream, the total size is known up front, so a header whose
/// declared length disagrees with the buffer is refused before anything is allocated.
///
/// # Errors
/// As [`read_envelope`]; a length mismatch is "truncated" or "trailing bytes".
pub fn read_envelope_bytes(bytes: &[u8], expected: FileKind, max_payload: u64) -> Result<Envelope> {
    let mut cursor = bytes;
    read_envelope_sized(&mut cursor, expected, max_payload, Some(bytes.len() as u64))
}

fn read_envelope_sized(
    r: &mut impl Read,
    expected: FileKind,
    max_payload: u64,
    known_total: Option<u64>,
) -> Result<Envelope> {
    let mut hbuf = [0u8; HEADER_LEN];
    let got = read_full(r, &mut hbuf)?;
    if got < HEADER_LEN {
        return Err(short_header(hbuf.get(..got).unwrap_or(&[])));
    }
    let header = Header::decode(&hbuf)?;
    if header.kind != expected {
        return Err(Error::format(
            format!("{expected} file"),
            format!("wrong kind: expected {expected}, found {}", header.kind),
        ));
    }
    let what = format!("{expected} file");
    if header.payload_len > max_payload {
        return Err(Error::format(
            &what,
            format!(
                "declared payload length {} bytes exceeds the limit of {max_payload} bytes",
                header.payload_len
            ),
        ));
    }
    let total = header.total_len().ok_or_else(|| {
        Error::format(
            &what,
            format!("declared payload length {} overflows", header.payload_len),
        )
    })?;
    if let Some(actual) = known_total {
        if actual < total {
            return Err(truncated(
                &what,
                format!("the file is {actual} bytes, its header declares {total}"),
            ));
        }
        if actual > total {
            return Err(Error::format(
                &what,
                format!("trailing bytes: the file is {actual} bytes, its header declares {total}"),
            ));
        }
    }
    let len = usize::try_from(header.payload_len).map_err(|_| {
        Error::format(
            &what,
            format!(
                "payload of {} bytes does not fit in memory",
                header.payload_len
            ),
        )
    })?;
    // With the file size confirmed, reserve the whole payload at once. From a bare stream
    // the declared length is only a claim: reserve at most `STREAM_RESERVE` up front and
    // let the buffer grow with the bytes that actually arrive.
    let reserve = if known_total.is_some() {
        len
    } else {
        len.min(STREAM_RESERVE)
    };
    let mut payload = Vec::new();
    payload.try_reserve_exact(reserve).map_err(|_| {
        Error::format(
            &what,
            format!("cannot allocate {len} bytes for the payload"),
        )
    })?;
    let read = r.take(header.payload_len).read_to_end(&mut payload)?;
    if read < len {
        return Err(truncated(
            &what,
            format!("payload has {read} of {len} bytes"),
        ));
    }
    let mut stored = [0u8; CHECKSUM_LEN];
    let got = read_full(r, &mut stored)?;
    if got < CHECKSUM_LEN {
        return Err(truncated(
            &what,
            format!("checksum has {got} of {CHECKSUM_LEN} bytes"),
        ));
    }
    let computed = checksum(&hbuf, &payload);
    if stored != computed {
        return Err(Error::format(
            &what,
            format!(
                "checksum mismatch: stored {}, computed {} (the file is corrupted)",
                hex(&stored),
                hex(&computed)
            ),
        ));
    }
    let mut probe = [0u8; 1];
    if read_full(r, &mut probe)? != 0 {
        return Err(Error::format(&what, "trailing bytes after the checksum"));
    }
    Ok(Envelope {
        kind: header.kind,
        version: header.version,
        flags: header.flags,
        params_digest: header.params_digest,
        payload,
    })
}

/// Reads and verifies the envelope stored at `path` (see [`read_envelope`]).
///
/// The file size is compared with the size the header declares before the payload is
/// allocated, so a truncated or over-long file is reported without reading it.
///
/// # Errors
/// As [`read_envelope`]; I/O errors carry `path`.
pub fn read_file(path: impl AsRef<Path>, expected: FileKind, max_payload: u64) -> Result<Envelope> {
    let path = path.as_ref();
    let (file, size) = super::limits::open_regular(path)?;
    let mut r = BufReader::new(file);
    read_envelope_sized(&mut r, expected, max_payload, Some(size)).map_err(|e| with_path(e, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::format::*;

    #[test]
    fn header_roundtrip_and_layout() {
        let h = Header {
            kind: FileKind::EvaluationKeys,
            version: FORMAT_VERSION,
            flags: 0,
            params_digest: [0xab; 32],
            payload_len: 0x0102_0304_0506_0708,
        };
        let b = h.encode();
        assert_eq!(&b[..8], &MAGIC);
        assert_eq!(&b[8..10], &[1, 0]);
        assert_eq!(&b[10..12], &[4, 0]);
        assert_eq!(&b[12..16], &[0, 0, 0, 0]);
        assert_eq!(&b[16..48], &[0xab; 32]);
        assert_eq!(&b[48..56], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert_eq!(peek_header(&b).unwrap(), h);
    }

    #[test]
    fn kinds_roundtrip_and_zero_is_invalid() {
        for k in FileKind::ALL {
            assert_eq!(FileKind::try_from(k.code()).unwrap(), k);
            assert!(!k.name().is_empty());
        }
        assert!(FileKind::try_from(0).is_err());
        assert!(FileKind::try_from(9).is_err());
        assert!(FileKind::try_from(u16::MAX).is_err());
    }

    #[test]
    fn reader_primitives_roundtrip() {
        let mut w = PayloadWriter::new();
        w.u8(7)
            .bool(true)
            .u16(0xbeef)
            .u32(0xdead_beef)
            .u64(u64::MAX)
            .f64(-2.5);
        w.len_prefixed_str("héllo").unwrap();
        w.u64_slice(&[1, 1 << 59, 3]).u64(3);
        let bytes = w.into_bytes();
        let mut r = PayloadReader::new(&bytes, "test");
        assert_eq!(r.u8().unwrap(), 7);
        assert!(r.bool().unwrap());
        assert_eq!(r.u16().unwrap(), 0xbeef);
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.finite_f64("x").unwrap(), -2.5);
        assert_eq!(r.len_prefixed_str(16).unwrap(), "héllo");
        assert_eq!(r.u64_vec(3, 3).unwrap(), vec![1, 1 << 59, 3]);
        assert_eq!(r.count("n", 3).unwrap(), 3);
        r.finish().unwrap();
    }

    #[test]
    fn reader_refuses_before_allocating() {
        let bytes = [0u8; 16];
        let mut r = PayloadReader::new(&bytes, "test");
        // Two values fit, three do not; a huge count is refused without allocating.
        assert!(r.clone().u64_vec(3, usize::MAX).is_err());
        assert!(r.clone().u64_vec(usize::MAX, usize::MAX).is_err());
        assert!(r.clone().u64_vec(2, 1).is_err());
        assert_eq!(r.u64_vec(2, 2).unwrap(), vec![0, 0]);
        assert!(r.u8().is_err());
    }

    #[test]
    fn reader_rejects_bad_values() {
        let mut w = PayloadWriter::new();
        w.f64(f64::NAN).f64(f64::INFINITY).u8(2).u64(10);
        let b = w.into_bytes();
        let mut r = PayloadReader::new(&b, "test");
        assert!(r.finite_f64("scale").is_err());
        assert!(r.finite_f64("scale").is_err());
        assert!(r.bool().is_err());
        assert!(r.count("n", 9).is_err());

        let bad_utf8 = [2, 0, 0, 0, 0xff, 0xfe];
        assert!(PayloadReader::new(&bad_utf8, "t")
            .len_prefixed_str(8)
            .is_err());
        let long = [200, 0, 0, 0, 1];
        assert!(PayloadReader::new(&long, "t").len_prefixed_str(8).is_err());
        assert!(PayloadReader::new(&long, "t")
            .len_prefixed_bytes(1000)
            .is_err());
    }

    #[test]
    fn u64_into_leaves_dst_on_error() {
        let b = [1u8; 15];
        let mut dst = [9u64; 2];
        assert!(PayloadReader::new(&b, "t").u64_into(&mut dst).is_err());
        assert_eq!(dst, [9, 9]);
        let mut one = [0u64; 1];
        PayloadReader::new(&b, "t").u64_into(&mut one).unwrap();
        assert_eq!(one[0], 0x0101_0101_0101_0101);
    }

    #[test]
    fn check_params_reports_mismatch() {
        let env = Envelope {
            kind: FileKind::Ciphertext,
            version: 1,
            flags: 0,
            params_digest: [1; 32],
            payload: vec![],
        };
        env.check_params(&[1; 32], "ciphertext").unwrap();
        match env.check_params(&[2; 32], "ciphertext") {
            Err(Error::ParameterMismatch {
                what,
                expected,
                found,
            }) => {
                assert_eq!(what, "ciphertext");
                assert_eq!(expected, "0202020202020202");
                assert_eq!(found, "0101010101010101");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
