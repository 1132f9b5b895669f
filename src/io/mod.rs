//! Reading and writing hepeft objects.
//!
//! [`format`](mod@format) defines the versioned envelope every file uses (magic, format
//! version, kind, parameter digest, length limit, checksum) and the little-endian payload
//! builder and parser. Object-specific encodings (keys, ciphertexts, ...) are built on top
//! of it by the modules that own those types. Layout: `docs/file-formats.md`.

pub mod binding;
pub mod envelope;
pub mod format;
pub mod fs;
pub mod limits;
pub mod object;
pub mod payload;

pub use binding::{Binding, KeySetId, Role};
pub use format::{
    digest_hex, peek_header, read_envelope, read_file, write_envelope, write_file_atomic, Envelope,
    FileKind, Header, PayloadReader, PayloadWriter, CHECKSUM_LEN, DEFAULT_MAX_PAYLOAD, FLAG_BOUND,
    FORMAT_VERSION, HEADER_LEN, MAGIC, NO_PARAMS_DIGEST,
};
pub use object::{HeObject, ParamsDigest};
