//! The payload codec: fixed-width little-endian fields and bulk `u64` arrays
//! ([`PayloadWriter`], [`PayloadReader`]); re-exported by [`super::format`].

use crate::{Error, Result};

/// Builds a payload from fixed-width little-endian fields.
///
/// Every method appends and returns `&mut Self` so calls chain. Nothing is length-prefixed
/// unless the method says so: the reader must know the layout.
#[derive(Clone, Debug, Default)]
pub struct PayloadWriter {
    buf: Vec<u8>,
}

impl PayloadWriter {
    /// An empty payload.
    pub fn new() -> Self {
        PayloadWriter { buf: Vec::new() }
    }

    /// An empty payload with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        PayloadWriter {
            buf: Vec::with_capacity(bytes),
        }
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a boolean as one byte, 0 or 1.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// Appends a `u16`, little-endian.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a `u32`, little-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a `u64`, little-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends an `f64` as its IEEE-754 bits, little-endian.
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.u64(v.to_bits())
    }

    /// Appends raw bytes (no length prefix).
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends `values` as consecutive little-endian `u64`s (no count prefix): 8 bytes per
    /// value. This is the bulk path for RNS limbs.
    pub fn u64_slice(&mut self, values: &[u64]) -> &mut Self {
        self.buf.reserve(values.len().saturating_mul(8));
        for v in values {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// Appends a `u32` little-endian byte length, then the bytes.
    ///
    /// # Errors
    /// [`Error::Format`] if `v` is longer than `u32::MAX` bytes.
    pub fn len_prefixed_bytes(&mut self, v: &[u8]) -> Result<&mut Self> {
        let n = u32::try_from(v.len()).map_err(|_| {
            Error::format(
                "payload",
                format!("{} bytes are too long for a u32 length prefix", v.len()),
            )
        })?;
        Ok(self.u32(n).bytes(v))
    }

    /// Appends a `u32` little-endian byte length, then the UTF-8 bytes of `s`.
    ///
    /// # Errors
    /// [`Error::Format`] if `s` is longer than `u32::MAX` bytes.
    pub fn len_prefixed_str(&mut self, s: &str) -> Result<&mut Self> {
        self.len_prefixed_bytes(s.as_bytes())
    }

    /// Number of bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// The finished payload.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Parses a payload written by [`PayloadWriter`].
///
/// Every read is bounds-checked and returns [`Error::Format`] naming the object (`what`)
/// and the offset; no input can make it panic, and no read allocates more than the bytes
/// that are actually present.
#[derive(Clone, Debug)]
pub struct PayloadReader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'a str,
}

impl<'a> PayloadReader<'a> {
    /// A reader over `buf`; `what` names the object in error messages (e.g. "ciphertext").
    pub fn new(buf: &'a [u8], what: &'a str) -> Self {
        PayloadReader { buf, pos: 0, what }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::format(self.what, reason)
    }

    /// The next `n` raw bytes.
    ///
    /// # Errors
    /// "truncated" if fewer than `n` bytes remain.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.buf.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.err(format!(
                "truncated: needed {n} bytes at offset {}, {} remain",
                self.pos,
                self.remaining()
            ))),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        for (dst, src) in a.iter_mut().zip(s) {
            *dst = *src;
        }
        Ok(a)
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// "truncated" at the end of the payload.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    /// Reads a boolean stored as 0 or 1; any other byte is an error.
    ///
    /// # Errors
    /// "truncated", or "invalid boolean byte".
    pub fn bool(&mut self) -> Result<bool> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(format!("invalid boolean byte {b} at offset {at}"))),
        }
    }

    /// Reads a little-endian `u16`.
    ///
    /// # Errors
    /// "truncated".
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u32`.
    ///
    /// # Errors
    /// "truncated".
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u64`.
    ///
    /// # Errors
    /// "truncated".
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u64` count and converts it to `usize`, refusing values above
    /// `max` (name the field with `field`).
    ///
    /// # Errors
    /// "truncated", or "`field` = n exceeds the limit".
    pub fn count(&mut self, field: &str, max: usize) -> Result<usize> {
        let at = self.pos;
        let v = self.u64()?;
        match usize::try_from(v) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(self.err(format!(
                "{field} = {v} at offset {at} exceeds the limit {max}"
            ))),
        }
    }

    /// Reads an `f64` from its little-endian IEEE-754 bits (any value, NaN included).
    ///
    /// # Errors
    /// "truncated".
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }

    /// Reads an `f64` and refuses NaN and infinities (name the field with `field`).
    ///
    /// # Errors
    /// "truncated", or "`field` is not finite".
    pub fn finite_f64(&mut self, field: &str) -> Result<f64> {
        let at = self.pos;
        let v = self.f64()?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(self.err(format!("{field} at offset {at} is not finite ({v})")))
        }
    }

    /// Reads `count` little-endian `u64`s written by [`PayloadWriter::u64_slice`].
    ///
    /// Refuses `count > max` and a `count` larger than the remaining bytes allow *before*
    /// allocating, so a forged count cannot trigger a huge allocation.
    ///
    /// # Errors
    /// "exceeds the limit" or "truncated".
    pub fn u64_vec(&mut self, count: usize, max: usize) -> Result<Vec<u64>> {
        if count > max {
            return Err(self.err(format!(
                "u64 array of {count} values exceeds the limit {max}"
            )));
        }
        let bytes = self.u64_bytes(count)?;
        Ok(bytes.chunks_exact(8).map(le_u64).collect())
    }

    /// Fills `dst` with `dst.len()` little-endian `u64`s (for decoding straight into
    /// preallocated limbs).
    ///
    /// # Errors
    /// "truncated"; `dst` is left unchanged.
    pub fn u64_into(&mut self, dst: &mut [u64]) -> Result<()> {
        let bytes = self.u64_bytes(dst.len())?;
        for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(8)) {
            *d = le_u64(c);
        }
        Ok(())
    }

    fn u64_bytes(&mut self, count: usize) -> Result<&'a [u8]> {
        match count.checked_mul(8) {
            Some(n) if n <= self.remaining() => self.bytes(n),
            _ => Err(self.err(format!(
                "truncated: u64 array of {count} values at offset {} needs {} bytes, {} remain",
                self.pos,
                count.saturating_mul(8),
                self.remaining()
            ))),
        }
    }

    /// Reads a `u32` byte length (at most `max_len`), then that many bytes.
    ///
    /// # Errors
    /// "exceeds the limit" or "truncated".
    pub fn len_prefixed_bytes(&mut self, max_len: usize) -> Result<&'a [u8]> {
        let at = self.pos;
        let n = self.u32()?;
        match usize::try_from(n) {
            Ok(n) if n <= max_len => self.bytes(n),
            _ => Err(self.err(format!(
                "length {n} at offset {at} exceeds the limit {max_len}"
            ))),
        }
    }

    /// Reads a `u32` byte length (at most `max_len`), then that many bytes of UTF-8.
    ///
    /// # Errors
    /// "exceeds the limit", "truncated", or "invalid UTF-8".
    pub fn len_prefixed_str(&mut self, max_len: usize) -> Result<&'a str> {
        let at = self.pos;
        let b = self.len_prefixed_bytes(max_len)?;
        std::str::from_utf8(b)
            .map_err(|e| self.err(format!("invalid UTF-8 in string at offset {at}: {e}")))
    }

    /// Checks that the whole payload was read.
    ///
    /// # Errors
    /// "trailing bytes" if any remain.
    pub fn finish(self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.err(format!(
                "trailing bytes: {n} unread after offset {}",
                self.pos
            ))),
        }
    }
}

/// A little-endian `u64` from an 8-byte chunk (callers pass `chunks_exact(8)` items).
fn le_u64(c: &[u8]) -> u64 {
    <[u8; 8]>::try_from(c).map_or(0, u64::from_le_bytes)
}
