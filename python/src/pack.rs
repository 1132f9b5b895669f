//! A small length-prefixed container for objects that are several library objects at once
//! (a model: card plus tensors; a client: parameters, mode and three key envelopes).
//!
//! Layout: `HEPEFTPY` (8 bytes), kind (1 byte: 1 model, 2 client), version (1 byte, 1),
//! part count (u32 LE), then each part as length (u64 LE) and bytes. The parts that are
//! library objects keep their own versioned, checksummed envelopes.

use hepeft::{Error, Result};

const MAGIC: &[u8; 8] = b"HEPEFTPY";
const VERSION: u8 = 1;
/// Largest part accepted (the library's own readers bound their payloads too).
const MAX_PART: u64 = 8 << 30;

/// What a container holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A model: card JSON, tensors (safetensors).
    Model = 1,
    /// A client: params TOML, mode, secret key, public key, evaluation keys.
    Client = 2,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Model => "hepeft.Model",
            Kind::Client => "hepeft.Client",
        }
    }
}

/// Packs `parts` as a container of `kind`.
pub fn pack(kind: Kind, parts: &[&[u8]]) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| p.len() + 8).sum();
    let mut out = Vec::with_capacity(14 + total);
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.push(VERSION);
    out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Unpacks a container of `kind` with exactly `count` parts.
///
/// # Errors
/// [`Error::Format`] naming what is wrong (magic, kind, version, count, truncation).
pub fn unpack(kind: Kind, bytes: &[u8], count: usize) -> Result<Vec<&[u8]>> {
    let what = kind.name();
    let bad = |reason: String| Error::format(what, reason);
    if bytes.len() < 14 || &bytes[..8] != MAGIC {
        return Err(bad(format!(
            "not a {what} byte string (it does not start with {:?})",
            String::from_utf8_lossy(MAGIC)
        )));
    }
    if bytes[8] != kind as u8 {
        return Err(bad(format!(
            "this is a byte string of kind {}, not {what}",
            bytes[8]
        )));
    }
    if bytes[9] != VERSION {
        return Err(bad(format!(
            "version {} is not supported (expected {VERSION})",
            bytes[9]
        )));
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(&bytes[10..14]);
    let n = u32::from_le_bytes(n) as usize;
    if n != count {
        return Err(bad(format!("{n} parts, expected {count}")));
    }
    let mut rest = &bytes[14..];
    let mut parts = Vec::with_capacity(n);
    for i in 0..n {
        if rest.len() < 8 {
            return Err(bad(format!("truncated before part {i}")));
        }
        let mut l = [0u8; 8];
        l.copy_from_slice(&rest[..8]);
        let len = u64::from_le_bytes(l);
        if len > MAX_PART || len > (rest.len() - 8) as u64 {
            return Err(bad(format!(
                "part {i} announces {len} bytes, {} remain",
                rest.len() - 8
            )));
        }
        let len = len as usize;
        parts.push(&rest[8..8 + len]);
        rest = &rest[8 + len..];
    }
    if !rest.is_empty() {
        return Err(bad(format!("{} trailing bytes", rest.len())));
    }
    Ok(parts)
}
