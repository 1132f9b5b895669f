//! The binding block: what an object belongs to, inside its checksummed envelope.
//!
//! A secret key, evaluation keys, a query and a result each start their payload with a
//! binding block when the envelope's [`FLAG_BOUND`](super::format::FLAG_BOUND) bit is set:
//!
//! | size | field |
//! |---:|---|
//! | 2 | binding version, `u16` LE, [`BINDING_VERSION`] |
//! | 2 | role, `u16` LE ([`Role`]: 1 keys, 2 query, 3 result) |
//! | 8 | key-set id: first 8 bytes of SHA-256 of the public-key file |
//! | 32 | plan structure digest (all zero: bound to no plan) |
//! | 4 | ciphertexts per query, `u32` LE (0 for keys) |
//! | 4 | number of queries Q, `u32` LE (0 for keys) |
//! | 4 Q | samples in each query, `u32` LE each |
//!
//! The checks that compare bindings live in `crate::session::binding`; this module only
//! encodes and decodes the block.

use std::fmt;

use super::format::{PayloadReader, PayloadWriter};
use crate::{Error, Result};

/// Version of the binding block this build writes and reads.
pub const BINDING_VERSION: u16 = 1;

/// Largest number of queries one binding block may list (a bundle holds at most 2^20
/// ciphertexts, so it never needs more).
pub const MAX_BOUND_QUERIES: usize = 1 << 20;

/// The role of a bound object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Key material: a secret key or evaluation keys.
    Keys = 1,
    /// An encrypted query (client to server).
    Query = 2,
    /// An evaluated, sanitized result (server to client).
    Result = 3,
}

impl Role {
    /// `keys`, `query` or `result`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Keys => "keys",
            Role::Query => "query",
            Role::Result => "result",
        }
    }

    fn from_code(code: u16) -> Result<Role> {
        match code {
            1 => Ok(Role::Keys),
            2 => Ok(Role::Query),
            3 => Ok(Role::Result),
            other => Err(Error::format(
                "binding",
                format!("unknown role {other} (1 keys, 2 query, 3 result)"),
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifier of a key set: the first 8 bytes of SHA-256 of its public-key file (the same
/// 16 hex digits as `key_id` in `plan.json` and the query metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct KeySetId(pub [u8; 8]);

impl KeySetId {
    /// Lower-case hex, 16 digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 16 hex digits.
    ///
    /// # Errors
    /// [`Error::Format`] if `s` is not 16 hex digits.
    pub fn from_hex(s: &str) -> Result<KeySetId> {
        let bad = || Error::format("key-set id", format!("{s:?} is not 16 hex digits"));
        if s.len() != 16 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 8];
        for (i, o) in out.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *o = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(KeySetId(out))
    }
}

impl fmt::Display for KeySetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// What a bound object belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Keys, query or result.
    pub role: Role,
    /// The key set it was made under (keys) or encrypted under (query, result).
    pub key_set: KeySetId,
    /// Digest of the plan structure it was made for (all zero: none).
    pub structure: [u8; 32],
    /// Ciphertexts per query (0 for keys).
    pub per_query: u32,
    /// Samples in each query, in order (empty for keys).
    pub queries: Vec<u32>,
}

impl Binding {
    /// A binding for key material of key set `key_set`, made for the plan `structure`.
    pub fn keys(key_set: KeySetId, structure: [u8; 32]) -> Binding {
        Binding {
            role: Role::Keys,
            key_set,
            structure,
            per_query: 0,
            queries: Vec::new(),
        }
    }

    /// Size of the encoded block in bytes.
    pub fn encoded_len(&self) -> usize {
        52 + 4 * self.queries.len()
    }

    /// Appends the block to `w`.
    ///
    /// # Errors
    /// [`Error::Format`] if more than [`MAX_BOUND_QUERIES`] queries are listed.
    pub fn write(&self, w: &mut PayloadWriter) -> Result<()> {
        if self.queries.len() > MAX_BOUND_QUERIES {
            return Err(Error::format(
                "binding",
                format!(
                    "{} queries, at most {MAX_BOUND_QUERIES}",
                    self.queries.len()
                ),
            ));
        }
        w.u16(BINDING_VERSION)
            .u16(self.role as u16)
            .bytes(&self.key_set.0)
            .bytes(&self.structure)
            .u32(self.per_query)
            .u32(self.queries.len() as u32);
        for q in &self.queries {
            w.u32(*q);
        }
        Ok(())
    }

    /// Reads a block written by [`Binding::write`].
    ///
    /// # Errors
    /// [`Error::Format`]: unknown binding version or role, too many queries, truncation.
    pub fn read(r: &mut PayloadReader<'_>) -> Result<Binding> {
        let version = r.u16()?;
        if version != BINDING_VERSION {
            return Err(Error::format(
                "binding",
                format!(
                    "unsupported binding version {version} (this build reads {BINDING_VERSION})"
                ),
            ));
        }
        let role = Role::from_code(r.u16()?)?;
        let mut key_set = [0u8; 8];
        key_set.copy_from_slice(r.bytes(8)?);
        let mut structure = [0u8; 32];
        structure.copy_from_slice(r.bytes(32)?);
        let per_query = r.u32()?;
        let n = r.u32()? as usize;
        if n > MAX_BOUND_QUERIES || n.saturating_mul(4) > r.remaining() {
            return Err(Error::format(
                "binding",
                format!("{n} queries listed, more than the payload can hold"),
            ));
        }
        let queries = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>>>()?;
        Ok(Binding {
            role,
            key_set: KeySetId(key_set),
            structure,
            per_query,
            queries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_round_trips() {
        let b = Binding {
            role: Role::Query,
            key_set: KeySetId([1, 2, 3, 4, 5, 6, 7, 8]),
            structure: [9; 32],
            per_query: 2,
            queries: vec![1, 3],
        };
        let mut w = PayloadWriter::new();
        b.write(&mut w).unwrap();
        assert_eq!(w.as_slice().len(), b.encoded_len());
        let mut r = PayloadReader::new(w.as_slice(), "t");
        assert_eq!(Binding::read(&mut r).unwrap(), b);
        r.finish().unwrap();
        assert_eq!(KeySetId::from_hex(&b.key_set.hex()).unwrap(), b.key_set);
        assert!(KeySetId::from_hex("zz").is_err());
    }

    #[test]
    fn binding_refuses_unknown_role_and_huge_counts() {
        let mut w = PayloadWriter::new();
        w.u16(1).u16(9).bytes(&[0; 40]).u32(0).u32(0);
        assert!(Binding::read(&mut PayloadReader::new(w.as_slice(), "t")).is_err());
        let mut w = PayloadWriter::new();
        w.u16(1).u16(2).bytes(&[0; 40]).u32(1).u32(u32::MAX);
        assert!(Binding::read(&mut PayloadReader::new(w.as_slice(), "t")).is_err());
    }
}
