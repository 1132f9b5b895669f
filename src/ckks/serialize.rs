//! Payload encodings of parameters, keys, plaintexts and ciphertexts inside the versioned
//! envelope of [`crate::io::format`]. Polynomials are written as raw little-endian limbs
//! (see docs/serialization.md for the measurement behind that choice); seeded halves (the
//! uniform `a` of keys and of fresh symmetric ciphertexts) are written as their 32-byte seed.
//!
//! Every reader checks what it can against the parameter set before using the data: the
//! parameter digest, levels and limb counts, and that every word is reduced modulo its prime.
//!
//! Size: one `HeObject` payload codec per CKKS object type (ciphertexts, bundles, every key), sharing the polynomial reader and the size bounds at the top.

use super::ciphertext::{Ciphertext, Plaintext};
use super::keygen::KeyGenerator;
use super::keys::{EvaluationKeys, GaloisKey, PublicKey, RelinKey, SecretKey, SwitchingKey};
use super::params::CkksParams;
use crate::io::format::{
    read_envelope_bytes, write_envelope, FileKind, PayloadReader, PayloadWriter, CHECKSUM_LEN,
    HEADER_LEN,
};
use crate::math::poly::{Eval, RnsPoly};
use crate::math::sample;
use crate::{Error, Result};

pub use crate::io::object::MAX_PAYLOAD;

/// Most ciphertexts one bundle file may hold (a query or result of many samples).
pub const MAX_BUNDLE_CIPHERTEXTS: usize = 1 << 16;

/// Most Galois keys one evaluation-key file may hold (plans use tens to a few hundred).
pub const MAX_GALOIS_KEYS: usize = 4096;

/// Bytes of a binding block for key material (no queries listed).
const KEY_BINDING_LEN: u64 = 52;

/// Bytes of one serialized polynomial with `limbs` limbs (level, basis flag, words).
fn poly_bytes(params: &CkksParams, limbs: usize) -> u64 {
    5 + (limbs as u64) * (params.n() as u64) * 8
}

/// Largest serialized ciphertext: 3 parts at the top level, unseeded.
fn max_ct_bytes(params: &CkksParams) -> u64 {
    8 + 1 + 1 + 3 * poly_bytes(params, params.max_level().primes())
}

/// Largest serialized public key (unseeded, extended basis).
fn max_pk_bytes(params: &CkksParams) -> u64 {
    1 + 2 * poly_bytes(params, params.max_level().primes() + params.p().len())
}

/// Largest serialized switching key (unseeded).
fn max_switching_key_bytes(params: &CkksParams) -> u64 {
    8 + 1
        + 2 * (params.num_digits() as u64)
            * poly_bytes(params, params.max_level().primes() + params.p().len())
}

/// Exact sizes (bytes, whole files with envelope) of the key files `hepeft keygen` writes
/// for a plan with `galois_keys` rotation keys and, if `relin`, a relinearization key:
/// seeded switching keys, a seeded public key, the evaluation-key file carrying the public
/// key, and key-binding blocks on the secret and evaluation keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyFileSizes {
    /// `secret.key`.
    pub secret_key: u64,
    /// `public.key`.
    pub public_key: u64,
    /// One seeded switching key inside `eval.keys` (without its Galois element).
    pub switching_key: u64,
    /// `eval.keys`: relinearization key, Galois keys, the public key, binding block.
    pub evaluation_keys: u64,
}

impl KeyFileSizes {
    /// Computes the sizes from the serializer's layout (checked against written files in
    /// `tests/select_params.rs`).
    pub fn new(params: &CkksParams, galois_keys: usize, relin: bool) -> Self {
        let frame = (HEADER_LEN + CHECKSUM_LEN) as u64;
        let ext = params.max_level().primes() + params.p().len();
        // digit count, seed flag, seed, one polynomial per digit
        let swk = 8 + 1 + 32 + params.num_digits() as u64 * poly_bytes(params, ext);
        // seed flag, seed, b
        let pk_payload = 1 + 32 + poly_bytes(params, ext);
        let evk_payload = KEY_BINDING_LEN
            + 1
            + if relin { swk } else { 0 }
            + 8
            + galois_keys as u64 * (8 + swk)
            + 1
            + pk_payload;
        KeyFileSizes {
            secret_key: frame + 4 + params.n() as u64 + KEY_BINDING_LEN,
            public_key: frame + pk_payload,
            switching_key: swk,
            evaluation_keys: frame + evk_payload,
        }
    }
}

/// Bytes of one serialized ciphertext of `parts` parts at `level`, unseeded (as a public-key
/// encryption or an evaluation result is stored inside a bundle).
pub fn ciphertext_bytes(params: &CkksParams, level: crate::ckks::Level, parts: usize) -> u64 {
    8 + 1 + 1 + parts as u64 * poly_bytes(params, level.primes())
}

pub use crate::io::object::{
    from_bytes, from_bytes_bound, load, load_bound, save, save_bound, to_bytes, to_bytes_bound,
    HeObject, ParamsDigest,
};

// ------------------------------------------------------------------ polynomials

fn write_poly(w: &mut PayloadWriter, p: &RnsPoly<Eval>) {
    w.u32(p.level() as u32);
    w.u8(u8::from(p.is_extended()));
    w.u64_slice(p.as_words());
}

fn read_poly(
    params: &CkksParams,
    r: &mut PayloadReader<'_>,
    want_extended: Option<bool>,
) -> Result<RnsPoly<Eval>> {
    let level = r.u32()? as usize;
    if level > params.max_level().get() {
        return Err(Error::format(
            "polynomial",
            format!(
                "level {level} above the parameters' maximum {}",
                params.max_level()
            ),
        ));
    }
    let extended = r.bool()?;
    if let Some(w) = want_extended {
        if w != extended {
            return Err(Error::format(
                "polynomial",
                "wrong basis (special primes present or missing)",
            ));
        }
    }
    // Refuse a polynomial the payload cannot hold before allocating it.
    let limbs = level + 1 + if extended { params.p().len() } else { 0 };
    let need = limbs.saturating_mul(params.n()).saturating_mul(8);
    if need > r.remaining() {
        return Err(Error::format(
            "polynomial",
            format!(
                "truncated: a level-{level} polynomial needs {need} bytes, {} remain",
                r.remaining()
            ),
        ));
    }
    let ring = params.ring();
    let mut poly = RnsPoly::<Eval>::zero(ring, level, extended);
    r.u64_into(poly.as_words_mut())?;
    check_reduced(params, &poly)?;
    Ok(poly)
}

fn check_reduced(params: &CkksParams, poly: &RnsPoly<Eval>) -> Result<()> {
    let ring = params.ring();
    for (i, limb) in poly.limbs().enumerate() {
        let p = ring.table(poly.level(), i).modulus().value();
        if let Some(j) = limb.iter().position(|&x| x >= p) {
            return Err(Error::format(
                "polynomial",
                format!("coefficient {j} of limb {i} is not reduced modulo {p}"),
            ));
        }
    }
    Ok(())
}

fn read_seed(r: &mut PayloadReader<'_>) -> Result<[u8; 32]> {
    let b = r.bytes(32)?;
    let mut s = [0u8; 32];
    s.copy_from_slice(b);
    Ok(s)
}

// ------------------------------------------------------------------ objects

/// The parameter set itself: its TOML literal (frozen primes). Reading recomputes the digest
/// and checks it against the envelope.
pub fn params_to_bytes(params: &CkksParams) -> Result<Vec<u8>> {
    let text = params.to_toml()?;
    let mut out = Vec::new();
    write_envelope(
        &mut out,
        FileKind::Parameters,
        &params.digest(),
        text.as_bytes(),
    )?;
    Ok(out)
}

/// Reads a parameter file written by [`params_to_bytes`].
pub fn params_from_bytes(bytes: &[u8]) -> Result<CkksParams> {
    let env = read_envelope_bytes(bytes, FileKind::Parameters, 1 << 20)?;
    let text =
        std::str::from_utf8(&env.payload).map_err(|_| Error::format("parameters", "not UTF-8"))?;
    let params = CkksParams::from_toml(text)?;
    env.check_params(&params.digest(), "parameters")?;
    Ok(params)
}

impl HeObject for Ciphertext {
    type Params = CkksParams;
    const KIND: FileKind = FileKind::Ciphertext;
    const WHAT: &'static str = "ciphertext";
    fn digest(&self) -> Option<[u8; 32]> {
        Some(self.params_digest())
    }
    fn write_payload(&self, _params: &CkksParams, w: &mut PayloadWriter) -> Result<()> {
        w.u64(1);
        write_ct(w, self);
        Ok(())
    }
    fn max_payload(params: &CkksParams) -> u64 {
        8 + max_ct_bytes(params) + KEY_BINDING_LEN + 4
    }
    fn read_payload(params: &CkksParams, r: &mut PayloadReader<'_>) -> Result<Self> {
        let count = r.count("ciphertext count", 1)?;
        if count != 1 {
            return Err(Error::format(
                "ciphertext",
                "expected exactly one ciphertext",
            ));
        }
        read_ct(params, r)
    }
}

/// Several ciphertexts in one file (a query with several inputs, or several tiles).
#[derive(Clone, Debug)]
pub struct CiphertextBundle {
    /// Digest of the parameter set.
    pub digest: [u8; 32],
    /// The ciphertexts, in order.
    pub items: Vec<Ciphertext>,
}

impl HeObject for CiphertextBundle {
    type Params = CkksParams;
    const KIND: FileKind = FileKind::Ciphertext;
    const WHAT: &'static str = "ciphertext bundle";
    fn digest(&self) -> Option<[u8; 32]> {
        Some(self.digest)
    }
    fn write_payload(&self, params: &CkksParams, w: &mut PayloadWriter) -> Result<()> {
        w.u64(self.items.len() as u64);
        for ct in &self.items {
            params.check_digest("ciphertext", &ct.params_digest())?;
            write_ct(w, ct);
        }
        Ok(())
    }
    fn max_payload(params: &CkksParams) -> u64 {
        let n = MAX_BUNDLE_CIPHERTEXTS as u64;
        8 + n * max_ct_bytes(params) + KEY_BINDING_LEN + 4 * n
    }
    fn read_payload(params: &CkksParams, r: &mut PayloadReader<'_>) -> Result<Self> {
        let count = r.count("ciphertext count", MAX_BUNDLE_CIPHERTEXTS)?;
        let items = (0..count)
            .map(|_| read_ct(params, r))
            .collect::<Result<Vec<_>>>()?;
        Ok(CiphertextBundle {
            digest: params.digest(),
            items,
        })
    }
}

fn write_ct(w: &mut PayloadWriter, ct: &Ciphertext) {
    w.f64(ct.scale());
    w.u8(ct.degree_plus_one() as u8);
    match ct.seed() {
        Some(seed) => {
            w.u8(1);
            w.bytes(&seed);
            write_poly(w, &ct.parts()[0]);
        }
        None => {
            w.u8(0);
            for p in ct.parts() {
                write_poly(w, p);
            }
        }
    }
}

fn read_ct(params: &CkksParams, r: &mut PayloadReader<'_>) -> Result<Ciphertext> {
    let scale = r.finite_f64("scale")?;
    if scale <= 0.0 {
        return Err(Error::format("ciphertext", "scale must be positive"));
    }
    let parts = r.u8()? as usize;
    if !(2..=3).contains(&parts) {
        return Err(Error::format(
            "ciphertext",
            format!("{parts} parts (expected 2 or 3)"),
        ));
    }
    let seeded = r.bool()?;
    let ct = if seeded {
        if parts != 2 {
            return Err(Error::format(
                "ciphertext",
                "a seeded ciphertext has 2 parts",
            ));
        }
        let seed = read_seed(r)?;
        let c0 = read_poly(params, r, Some(false))?;
        let c1 = sample::uniform_from_seed(params.ring(), &seed, 0, c0.level(), false);
        Ciphertext::new(vec![c0, c1], scale, params.digest()).with_seed(seed)
    } else {
        let polys = (0..parts)
            .map(|_| read_poly(params, r, Some(false)))
            .collect::<Result<Vec<_>>>()?;
        if polys.iter().any(|p| p.level() != polys[0].level()) {
            return Err(Error::format("ciphertext", "parts at different levels"));
        }
        Ciphertext::new(polys, scale, params.digest())
    };
    Ok(ct)
}

impl HeObject for Plaintext {
    type Params = CkksParams;
    const KIND: FileKind = FileKind::Plaintext;
    const WHAT: &'static str = "plaintext";
    fn digest(&self) -> Option<[u8; 32]> {
        Some(self.params_digest())
    }
    fn write_payload(&self, _params: &CkksParams, w: &mut PayloadWriter) -> Result<()> {
        w.f64(self.scale());
        write_poly(w, self.poly());
        Ok(())
    }
    fn max_payload(params: &CkksParams) -> u64 {
        8 + poly_bytes(params, params.max_level().primes())
    }
    fn read_payload(params: &CkksParams, r: &mut PayloadReader<'_>) -> Result<Self> {
        let scale = r.finite_f64("scale")?;
        let poly = read_poly(params, r, Some(false))?;
        Ok(Plaintext::new(poly, scale, params.digest()))
    }
}

impl HeObject for SecretKey {
    type Params = CkksParams;
    const KIND: FileKind = FileKind::SecretKey;
    const WHAT: &'static str = "secret key";
    fn digest(&self) -> Option<[u8; 32]> {
        Some(self.digest)
    }
    fn write_payload(&self, params: &CkksParams, w: &mut PayloadWriter) -> Result<()> {
        w.u32(params.n() as u32);
        // one byte per coefficient: 0, 1 or 2 for -1, 0, 1
        let mut bytes: Vec<u8> = self.coeffs.iter().map(|&c| (c + 1) as u8).collect();
        w.bytes(&bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(())
    }
    fn max_payload(params: &CkksParams) -> u64 {
        // Exact: ring degree, one byte per coefficient, and the key binding block.
        4 + params.n() as u64 + KEY_BINDING_LEN
    }
    fn read_payload(params: &CkksParams, r: &mut PayloadReader<'_>) -> Result<Self> {
        let n = r.u32()? as usize;
        if n != params.n() {
            return Err(Error::format(
                "secret key",
                format!("ring degree {n}, expected {}", params.n()),
            ));
        }
        let raw = r.bytes(n)?;
        if raw.iter().any(|&b| b > 2) {
            return Err(Error::format(
                "secret key",
                "coefficient outside {-1, 0, 1}",
            ));
        }
        let coeffs: Vec<i8> = raw.iter().map(|&b| b as i8 - 1).collect();
        Ok(KeyGenerator::new(params).secret_from_coeffs(coeffs))
    }
}

impl HeObject for PublicKey {
    type Params = CkksParams;
    const KIND: FileKind = FileKind::PublicKey;
    const WHAT: &'static str = "public key";
    fn digest(&self) -> Option<[u8; 32]> {
        Some(self.digest)
    }
    fn write_payload(&self, _params: &CkksParams, w: &mut PayloadWriter) -> Result<()> {
        match self.seed {
            Some(seed) => {
                w.u8(1);
                w.bytes(&seed);
                write_poly(w, &self.b);
            }
            None => {
                w.u8(0);
                write_poly(w, &self.b);
                write_poly(w, &self.a);
            }
        }
        Ok(())
    }
    fn max_payload(params: &CkksParams) -> u64 {
        max_pk_bytes(params)
    }
    fn read_payload(params: &CkksParams, r: &mut PayloadReader<'_>) -> Result<Self> {
        let seeded = r.bool()?;
        let (seed, b, a) = if seeded {
            let seed = read_seed(r)?;
            let b = read_poly(params, r, Some(true))?;
            let a =
                sample::uniform_from_seed(params.ring(), &seed, 0, params.max_level().get(), true);
            (Some(seed), b, a)
        } else {
            let b = read_poly(params, r, Some(true))?;
            let a = read_poly(params, r, Some(true))?;
            (None, b, a)
        };
        if b.level() != params.max_level().get() || a.level() != params.max_level().get() {
            return Err(Error::format("public key", "not at the top level"));
        }
        Ok(PublicKey {
            b,
            a,
            seed,
            digest: params.digest(),
        })
    }
}

fn write_switching_key(w: &mut PayloadWriter, k: &SwitchingKey) {
    w.u64(k.b.len() as u64);
    match k.seed {
        Some(seed) => {
            w.u8(1);
            w.bytes(&seed);
            k.b.iter().for_each(|p| write_poly(w, p));
        }
        None => {
            w.u8(0);
            for (b, a) in k.b.iter().zip(&k.a) {
                write_poly(w, b);
                write_poly(w, a);
            }
        }
    }
}

fn read_switching_key(params: &CkksParams, r: &mut PayloadReader<'_>) -> Result<SwitchingKey> {
    let digits = r.count("key digits", params.num_digits())?;
    if digits != params.num_digits() {
        return Err(Error::format(
            "switching key",
            format!("{digits} digits, expected {}", params.num_digits()),
        ));
    }
    let top = params.max_level().get();
    let seeded = r.bool()?;
    let mut b = Vec::with_capacity(digits);
    let mut a = Vec::with_capacity(digits);
    let seed = if seeded {
        let seed = read_seed(r)?;
        for j in 0..digits {
            b.push(read_poly(params, r, Some(true))?);
            a.push(sample::uniform_from_seed(
                params.ring(),
                &seed,
                j as u64,
                top,
                true,
            ));
        }
        Some(seed)
    } else {
        for _ in 0..digits {
            b.push(read_poly(params, r, Some(true))?);
            a.push(read_poly(params, r, Some(true))?);
        }
        None
    };
    if b.iter().chain(&a).any(|p| p.level() != top) {
        return Err(Error::format(
            "switching key",
            "component not at the top level",
        ));
    }
    Ok(SwitchingKey { b, a, seed })
}

impl HeObject for EvaluationKeys {
    type Params = CkksParams;
    const KIND: FileKind = FileKind::EvaluationKeys;
    const WHAT: &'static str = "evaluation keys";
    fn digest(&self) -> Option<[u8; 32]> {
        Some(self.digest)
    }
    fn write_payload(&self, params: &CkksParams, w: &mut PayloadWriter) -> Result<()> {
        match &self.relin {
            Some(k) => {
                w.u8(1);
                write_switching_key(w, &k.0);
            }
            None => {
                w.u8(0);
            }
        }
        w.u64(self.galois.len() as u64);
        for (g, k) in &self.galois {
            w.u64(*g);
            write_switching_key(w, &k.key);
        }
        // Optional trailing section (added with issue 8): the client's public key, which
        // the server needs to re-randomize results. Files without it end here.
        if let Some(pk) = &self.public {
            w.u8(1);
            pk.write_payload(params, w)?;
        }
        Ok(())
    }
    fn max_payload(params: &CkksParams) -> u64 {
        let g = MAX_GALOIS_KEYS.min(params.n()) as u64;
        KEY_BINDING_LEN
            + 1
            + max_switching_key_bytes(params)
            + 8
            + g * (8 + max_switching_key_bytes(params))
            + 1
            + max_pk_bytes(params)
    }
    fn read_payload(params: &CkksParams, r: &mut PayloadReader<'_>) -> Result<Self> {
        let mut keys = EvaluationKeys {
            digest: params.digest(),
            ..Default::default()
        };
        if r.bool()? {
            keys.relin = Some(RelinKey(read_switching_key(params, r)?));
        }
        let count = r.count("Galois keys", MAX_GALOIS_KEYS.min(params.n()))?;
        let two_n = 2 * params.n() as u64;
        for _ in 0..count {
            let element = r.u64()?;
            if element % 2 == 0 || element >= two_n || keys.galois.contains_key(&element) {
                return Err(Error::format(
                    "evaluation keys",
                    format!("invalid or repeated Galois element {element}"),
                ));
            }
            let key = read_switching_key(params, r)?;
            keys.galois.insert(element, GaloisKey { element, key });
        }
        if r.remaining() > 0 {
            if !r.bool()? {
                return Err(Error::format(
                    "evaluation keys",
                    "public-key section flag is 0 (write nothing instead)",
                ));
            }
            keys.public = Some(PublicKey::read_payload(params, r)?);
        }
        Ok(keys)
    }
}
