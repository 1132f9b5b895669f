//! The versioned on-disk format, as one module for callers: the envelope
//! ([`super::envelope`]), the payload codec ([`super::payload`]) and atomic file writes
//! ([`super::fs`]).
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
//! | 12 | 4 | flags, u32 LE (version 1 defines none: must be 0) |
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
//! Payloads are built with [`PayloadWriter`] and parsed with [`PayloadReader`]: fixed-width
//! little-endian integers, and bulk little-endian `u64` arrays for RNS limbs (the encoding
//! chosen in `docs/serialization.md`: it decodes 5 to 20 times faster than bincode or
//! postcard and is never larger).
//!
//! ```
//! use hepeft::io::format::{read_envelope, write_envelope, FileKind, PayloadReader, PayloadWriter};
//!
//! # fn main() -> hepeft::Result<()> {
//! let digest = [7u8; 32];
//! let mut p = PayloadWriter::new();
//! p.u32(3).u64_slice(&[1, 2, 3]);
//! let mut file = Vec::new();
//! write_envelope(&mut file, FileKind::Ciphertext, &digest, p.as_slice())?;
//!
//! let env = read_envelope(&mut file.as_slice(), FileKind::Ciphertext, 1 << 20)?;
//! env.check_params(&digest, "ciphertext")?;
//! let mut r = PayloadReader::new(&env.payload, "ciphertext");
//! let n = r.u32()? as usize;
//! let limbs = r.u64_vec(n, 1 << 20)?;
//! r.finish()?;
//! assert_eq!(limbs, vec![1, 2, 3]);
//! # Ok(())
//! # }
//! ```

pub use super::envelope::*;
pub use super::fs::*;
pub use super::payload::*;
