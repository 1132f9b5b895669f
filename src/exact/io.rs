//! Payloads of the exact backend's files, in the versioned envelope of
//! [`io::format`](crate::io::format) with the kind ([`FileKind`]) and the parameter digest
//! ([`ExactParams::digest`]); every payload starts with [`TAG`] so a CKKS object of the same
//! kind is refused. The objects implement the shared [`HeObject`] trait (so
//! [`save`](crate::io::object::save) / [`load`](crate::io::object::load) work for them as
//! for CKKS objects): [`ExactParams`] (the key directory's `exact.params`; also readable
//! without knowing the parameters in advance, [`params_from_bytes`]), [`ClientKey`],
//! [`CompressedServerKey`], [`ExactCiphertexts`] and [`SeededQuery`]. The `*_to_payload` /
//! `*_from_payload` functions are the same codecs on bare payloads.
//!
//! | kind | payload after the tag |
//! |---|---|
//! | parameters | u32 length + JSON of [`ExactParamsLiteral`] |
//! | secret key | n words (small key), then k·N words (GLWE key), binary |
//! | evaluation keys (tag `TFK2`, format 2) | u32 length + bincode 1.3 of the seeded keys (tfhe-rs serde): keyswitching key, two optional bootstrapping keys, optional compact public key |
//! | ciphertext | u32 log modulus p, u64 count, then count·(k·N+1) words |
//! | seeded ciphertexts (tag `TFHS`) | u32 p, u32 length + bincode 1.3 of the seeded list |

use bincode1::Options;

use crate::io::format::{
    read_envelope_bytes, FileKind, PayloadReader, PayloadWriter, DEFAULT_MAX_PAYLOAD,
};
use crate::io::object::{HeObject, ParamsDigest};
use crate::{Error, Result};

use super::eval::{ExactCiphertext, SeededCiphertexts};
use super::keys::{ClientKey, CompressedServerKey};
use super::params::{ExactParams, ExactParamsLiteral};

/// First four payload bytes of every exact-backend object: `b"TFHE"`.
pub const TAG: u32 = u32::from_le_bytes(*b"TFHE");

/// Largest number of ciphertexts in one file.
const MAX_CIPHERTEXTS: usize = 1 << 20;

fn tag(r: &mut PayloadReader<'_>, kind: FileKind) -> Result<()> {
    if r.u32()? != TAG {
        return Err(Error::format(
            kind.name(),
            "not an exact-backend (TFHE) object; was it made with --backend ckks?",
        ));
    }
    Ok(())
}

/// Parameters payload.
///
/// # Errors
/// [`Error::Format`] if JSON encoding fails.
pub fn params_to_payload(p: &ExactParams) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(p.literal())
        .map_err(|e| Error::format("exact parameters", e.to_string()))?;
    let mut w = PayloadWriter::new();
    w.u32(TAG).len_prefixed_bytes(&json)?;
    Ok(w.into_bytes())
}

/// Largest JSON literal in a parameters payload.
const MAX_PARAMS_JSON: usize = 1 << 16;

/// Largest parameters payload: tag, length and the JSON literal.
const MAX_PARAMS_PAYLOAD: u64 = 8 + MAX_PARAMS_JSON as u64;

/// Parses and checks a parameters payload.
///
/// # Errors
/// [`Error::Format`] for a malformed payload, [`Error::InvalidParameters`] for a literal
/// that is not a vetted set.
pub fn params_from_payload(bytes: &[u8]) -> Result<ExactParams> {
    let mut r = PayloadReader::new(bytes, "exact parameters");
    let p = read_params(&mut r)?;
    r.finish()?;
    Ok(p)
}

fn read_params(r: &mut PayloadReader<'_>) -> Result<ExactParams> {
    tag(r, FileKind::Parameters)?;
    let json = r.len_prefixed_bytes(MAX_PARAMS_JSON)?;
    let lit: ExactParamsLiteral = serde_json::from_slice(json)
        .map_err(|e| Error::format("exact parameters", e.to_string()))?;
    ExactParams::from_literal(lit)
}

/// Reads an `exact.params` envelope without knowing the parameters in advance (what
/// [`load`](crate::io::object::load) needs): parses the literal, checks it is a vetted set,
/// then checks the envelope's digest against it. Cost: one JSON parse and one hash.
///
/// # Errors
/// [`Error::Format`] for a malformed file or one of another kind,
/// [`Error::InvalidParameters`] for a literal that is not vetted,
/// [`Error::ParameterMismatch`] if the envelope's digest is not the literal's.
pub fn params_from_bytes(bytes: &[u8]) -> Result<ExactParams> {
    let env = read_envelope_bytes(bytes, FileKind::Parameters, MAX_PARAMS_PAYLOAD)?;
    let p = params_from_payload(&env.payload)?;
    env.check_params(&p.digest(), "exact parameters")?;
    Ok(p)
}

/// Secret-key payload. Secret: write it with owner-only permissions.
pub fn client_key_to_payload(k: &ClientKey) -> Vec<u8> {
    let (small, glwe) = k.raw();
    let mut w = PayloadWriter::with_capacity(4 + 8 * (small.len() + glwe.len()));
    write_client_key(&mut w, k);
    w.into_bytes()
}

fn write_client_key(w: &mut PayloadWriter, k: &ClientKey) {
    let (small, glwe) = k.raw();
    w.u32(TAG).u64_slice(small).u64_slice(glwe);
}

/// Parses a secret-key payload made for `params`.
///
/// # Errors
/// [`Error::Format`] for a malformed payload.
pub fn client_key_from_payload(params: &ExactParams, bytes: &[u8]) -> Result<ClientKey> {
    let mut r = PayloadReader::new(bytes, "exact secret key");
    tag(&mut r, FileKind::SecretKey)?;
    let small = r.u64_vec(params.lwe_dimension().0, params.lwe_dimension().0)?;
    let glwe = r.u64_vec(params.big_lwe_dimension().0, params.big_lwe_dimension().0)?;
    r.finish()?;
    ClientKey::from_raw(params, small, glwe)
}

/// First four payload bytes of evaluation keys in format 2 (optional bootstrapping keys and
/// compact public key): `b"TFK2"`. Format 1 (tag [`TAG`], both bootstrapping keys, no
/// public key) is refused with a request to re-run `keygen`.
pub const TAG_KEYS_V2: u32 = u32::from_le_bytes(*b"TFK2");

/// Evaluation-key payload, format 2 (seeded keys, bincode 1.3 as tfhe-rs serializes them).
///
/// # Errors
/// [`Error::Format`] if serialization fails.
pub fn server_key_to_payload(k: &CompressedServerKey) -> Result<Vec<u8>> {
    let bytes = bincode1::serialize(k)
        .map_err(|e| Error::format("exact evaluation keys", e.to_string()))?;
    let mut w = PayloadWriter::with_capacity(bytes.len() + 12);
    w.u32(TAG_KEYS_V2).len_prefixed_bytes(&bytes)?;
    Ok(w.into_bytes())
}

/// Parses an evaluation-key payload and checks its shapes against `params`.
///
/// # Errors
/// [`Error::Format`] for a malformed payload, [`Error::ParameterMismatch`] for shapes that
/// do not match.
pub fn server_key_from_payload(params: &ExactParams, bytes: &[u8]) -> Result<CompressedServerKey> {
    let mut r = PayloadReader::new(bytes, "exact evaluation keys");
    let t = r.u32()?;
    if t == TAG {
        return Err(Error::format(
            "exact evaluation keys",
            "format 1 (made by an older hepeft, without the public key needed to sanitize \
             results); re-run `hepeft keygen --backend exact`",
        ));
    }
    if t != TAG_KEYS_V2 {
        return Err(Error::format(
            FileKind::EvaluationKeys.name(),
            "not an exact-backend (TFHE) object; was it made with --backend ckks?",
        ));
    }
    let body = r.len_prefixed_bytes(bytes.len())?;
    r.finish()?;
    let (_, mem) = params.key_bytes();
    let k: CompressedServerKey = bincode1::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(mem)
        .deserialize(body)
        .map_err(|e| Error::format("exact evaluation keys", e.to_string()))?;
    k.check(params)?;
    Ok(k)
}

/// First four payload bytes of a seeded ciphertext list: `b"TFHS"`.
pub const TAG_SEEDED: u32 = u32::from_le_bytes(*b"TFHS");

/// Seeded ciphertext payload (a query): tag, u32 `p`, u32 length + bincode 1.3 of the list.
///
/// # Errors
/// [`Error::Format`] if serialization fails.
pub fn seeded_to_payload(p: u32, cts: &SeededCiphertexts) -> Result<Vec<u8>> {
    let bytes = bincode1::serialize(cts)
        .map_err(|e| Error::format("exact seeded ciphertexts", e.to_string()))?;
    let mut w = PayloadWriter::with_capacity(bytes.len() + 12);
    w.u32(TAG_SEEDED).u32(p).len_prefixed_bytes(&bytes)?;
    Ok(w.into_bytes())
}

/// Ciphertext payload: all ciphertexts share the log modulus `p`.
pub fn ciphertexts_to_payload(p: u32, cts: &[ExactCiphertext]) -> Vec<u8> {
    let words: usize = cts.iter().map(|c| c.as_words().len()).sum();
    let mut w = PayloadWriter::with_capacity(16 + 8 * words);
    write_ciphertexts(&mut w, p, cts);
    w.into_bytes()
}

fn write_ciphertexts(w: &mut PayloadWriter, p: u32, cts: &[ExactCiphertext]) {
    w.u32(TAG).u32(p).u64(cts.len() as u64);
    for c in cts {
        w.u64_slice(c.as_words());
    }
}

/// Decodes the bincode body of a seeded list under a size limit, and checks its length.
fn read_seeded_body(params: &ExactParams, body: &[u8]) -> Result<SeededCiphertexts> {
    let limit = (MAX_CIPHERTEXTS * (params.big_lwe_dimension().0 + 64)) as u64 * 8;
    let s: SeededCiphertexts = bincode1::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(limit)
        .deserialize(body)
        .map_err(|e| Error::format("exact seeded ciphertexts", e.to_string()))?;
    if s.len() > MAX_CIPHERTEXTS {
        return Err(Error::format(
            "exact seeded ciphertexts",
            "too many ciphertexts",
        ));
    }
    Ok(s)
}

/// Parses a ciphertext payload: `(p, ciphertexts)`.
///
/// # Errors
/// [`Error::Format`] for a malformed payload.
pub fn ciphertexts_from_payload(
    params: &ExactParams,
    bytes: &[u8],
) -> Result<(u32, Vec<ExactCiphertext>)> {
    if bytes.get(..4) == Some(&TAG_SEEDED.to_le_bytes()[..]) {
        let mut r = PayloadReader::new(bytes, "exact seeded ciphertexts");
        r.u32()?;
        let p = r.u32()?;
        let body = r.len_prefixed_bytes(bytes.len())?;
        r.finish()?;
        let s = read_seeded_body(params, body)?;
        return Ok((p, s.expand(params)?));
    }
    let mut r = PayloadReader::new(bytes, "exact ciphertext");
    tag(&mut r, FileKind::Ciphertext)?;
    let p = r.u32()?;
    let count = r.count("ciphertext count", MAX_CIPHERTEXTS)?;
    let size = params.big_lwe_dimension().to_lwe_size().0;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        out.push(ExactCiphertext::from_words(params, r.u64_vec(size, size)?)?);
    }
    r.finish()?;
    Ok((p, out))
}

// ------------------------------------------------------------------ the shared trait

impl ParamsDigest for ExactParams {
    fn digest(&self) -> [u8; 32] {
        ExactParams::digest(self)
    }
    fn check_digest(&self, what: &str, digest: &[u8; 32]) -> Result<()> {
        if *digest == ExactParams::digest(self) {
            return Ok(());
        }
        Err(Error::ParameterMismatch {
            what: what.to_string(),
            expected: self.short_digest(),
            found: digest[..8].iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

/// `exact.params` of a key directory: the parameter set itself (tag, `u32` length, JSON of
/// its literal), under its own digest. Reading with [`load`](crate::io::object::load)
/// checks that the file holds exactly the expected set; [`params_from_bytes`] reads one
/// without knowing it.
impl HeObject for ExactParams {
    type Params = ExactParams;
    const KIND: FileKind = FileKind::Parameters;
    const WHAT: &'static str = "exact parameters";
    fn digest(&self) -> Option<[u8; 32]> {
        Some(ExactParams::digest(self))
    }
    fn write_payload(&self, _params: &ExactParams, w: &mut PayloadWriter) -> Result<()> {
        w.bytes(&params_to_payload(self)?);
        Ok(())
    }
    fn read_payload(params: &ExactParams, r: &mut PayloadReader<'_>) -> Result<Self> {
        let p = read_params(r)?;
        params.check_digest(Self::WHAT, &ExactParams::digest(&p))?;
        Ok(p)
    }
    fn max_payload(_params: &ExactParams) -> u64 {
        MAX_PARAMS_PAYLOAD
    }
}

/// The rest of a payload as one slice (the bare-payload codecs parse it).
fn rest<'a>(r: &mut PayloadReader<'a>) -> Result<&'a [u8]> {
    r.bytes(r.remaining())
}

/// `secret.key` of the exact backend (mode 0600, buffers zeroized by the generic code).
impl HeObject for ClientKey {
    type Params = ExactParams;
    const KIND: FileKind = FileKind::SecretKey;
    const WHAT: &'static str = "exact secret key";
    fn digest(&self) -> Option<[u8; 32]> {
        Some(self.params.digest())
    }
    fn write_payload(&self, _params: &ExactParams, w: &mut PayloadWriter) -> Result<()> {
        write_client_key(w, self);
        Ok(())
    }
    fn read_payload(params: &ExactParams, r: &mut PayloadReader<'_>) -> Result<Self> {
        client_key_from_payload(params, rest(r)?)
    }
    fn max_payload(_params: &ExactParams) -> u64 {
        // The cap the CLI used before the shared trait: a CKKS file of the same kind still
        // reaches the tag check and its "made with --backend ckks?" message.
        DEFAULT_MAX_PAYLOAD
    }
}

/// `eval.keys` of the exact backend (format 2, seeded).
impl HeObject for CompressedServerKey {
    type Params = ExactParams;
    const KIND: FileKind = FileKind::EvaluationKeys;
    const WHAT: &'static str = "exact evaluation keys";
    fn digest(&self) -> Option<[u8; 32]> {
        None
    }
    fn write_payload(&self, _params: &ExactParams, w: &mut PayloadWriter) -> Result<()> {
        w.bytes(&server_key_to_payload(self)?);
        Ok(())
    }
    fn read_payload(params: &ExactParams, r: &mut PayloadReader<'_>) -> Result<Self> {
        server_key_from_payload(params, rest(r)?)
    }
    fn max_payload(_params: &ExactParams) -> u64 {
        // The cap the CLI used before the shared trait: a CKKS file of the same kind still
        // reaches the tag check and its "made with --backend ckks?" message.
        DEFAULT_MAX_PAYLOAD
    }
}

/// A file of LWE ciphertexts (an evaluation result, or a query read back expanded): all
/// share the log modulus `p`. Reading also accepts a seeded list ([`SeededQuery`]) and
/// expands it.
#[derive(Clone, Debug)]
pub struct ExactCiphertexts {
    /// Log2 of the plaintext modulus the ciphertexts encode.
    pub p: u32,
    /// The ciphertexts, in order.
    pub items: Vec<ExactCiphertext>,
}

impl HeObject for ExactCiphertexts {
    type Params = ExactParams;
    const KIND: FileKind = FileKind::Ciphertext;
    const WHAT: &'static str = "exact ciphertext";
    fn digest(&self) -> Option<[u8; 32]> {
        None
    }
    fn write_payload(&self, _params: &ExactParams, w: &mut PayloadWriter) -> Result<()> {
        write_ciphertexts(w, self.p, &self.items);
        Ok(())
    }
    fn read_payload(params: &ExactParams, r: &mut PayloadReader<'_>) -> Result<Self> {
        let (p, items) = ciphertexts_from_payload(params, rest(r)?)?;
        Ok(ExactCiphertexts { p, items })
    }
    fn max_payload(_params: &ExactParams) -> u64 {
        DEFAULT_MAX_PAYLOAD
    }
}

/// A seeded ciphertext list under log modulus `p` (what `encrypt --backend exact` writes).
#[derive(Clone, Debug)]
pub struct SeededQuery {
    /// Log2 of the plaintext modulus.
    pub p: u32,
    /// The seeded ciphertexts.
    pub cts: SeededCiphertexts,
}

impl HeObject for SeededQuery {
    type Params = ExactParams;
    const KIND: FileKind = FileKind::Ciphertext;
    const WHAT: &'static str = "exact seeded ciphertexts";
    fn digest(&self) -> Option<[u8; 32]> {
        None
    }
    fn write_payload(&self, _params: &ExactParams, w: &mut PayloadWriter) -> Result<()> {
        w.bytes(&seeded_to_payload(self.p, &self.cts)?);
        Ok(())
    }
    fn read_payload(params: &ExactParams, r: &mut PayloadReader<'_>) -> Result<Self> {
        if r.u32()? != TAG_SEEDED {
            return Err(Error::format(
                Self::WHAT,
                "not a seeded exact-backend ciphertext list",
            ));
        }
        let p = r.u32()?;
        let body = r.len_prefixed_bytes(r.remaining())?;
        let cts = read_seeded_body(params, body)?;
        Ok(SeededQuery { p, cts })
    }
    fn max_payload(_params: &ExactParams) -> u64 {
        DEFAULT_MAX_PAYLOAD
    }
}
