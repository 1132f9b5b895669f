//! Reading and writing hepeft objects.
//!
//! [`format`](mod@format) defines the versioned envelope every file uses (magic, format version, kind,
//! parameter digest, length limit, checksum) and the little-endian payload builder and
//! parser. Object-specific encodings (keys, ciphertexts, ...) are built on top of it by the
//! modules that own those types.

pub mod format;

pub use format::{
    peek_header, read_envelope, read_file, write_envelope, write_file_atomic, Envelope, FileKind,
    Header, PayloadReader, PayloadWriter, FORMAT_VERSION, MAGIC,
};
