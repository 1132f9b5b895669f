//! CKKS parameters: an unchecked literal and the checked, immutable parameter set.
//!
//! Size: one type pair (literal and checked parameters) with its checks, prime generation and frozen presets.

use super::security::{self, Security};
use crate::math::modulus::{ntt_primes, ntt_primes_near, Modulus};
use crate::math::rns::{BasisConverter, RingContext};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::sync::Arc;

/// The TOML table of a parameter file that records what the set was selected for (owned by
/// `crate::select::record`; skipped by [`CkksParams::from_toml`]).
pub const SELECTION_TABLE: &str = "selected_for";

/// Distribution of the secret key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SecretDistribution {
    /// Uniform over {-1, 0, 1} (what the security table assumes).
    #[default]
    Ternary,
    /// Exactly `hamming_weight` non-zero entries. Faster bootstrapping-style circuits use it,
    /// but the security table does not cover it: it requires [`Security::Unchecked`].
    SparseTernary { hamming_weight: usize },
}

/// Parameters as a user writes them (TOML / JSON): sizes, not primes. Turn them into a
/// checked [`CkksParams`] with [`CkksParams::from_literal`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CkksParamsLiteral {
    /// log2 of the ring degree N.
    pub log_n: u32,
    /// Bit sizes of the ciphertext primes q_0 (first, largest headroom) .. q_L.
    pub log_q: Vec<u32>,
    /// Bit sizes of the special primes P used by key switching.
    pub log_p: Vec<u32>,
    /// log2 of the default scale Δ.
    pub log_scale: u32,
    /// Secret distribution.
    #[serde(default)]
    pub secret: SecretDistribution,
    /// Number of key-switching digits; default: ceil((L+1)/|P|).
    #[serde(default)]
    pub dnum: Option<usize>,
    /// Requested security; checked at construction.
    #[serde(default)]
    pub security: Security,
    /// Frozen primes (presets pin them so a parameter set never changes under a user).
    #[serde(default)]
    pub q: Option<Vec<u64>>,
    /// Frozen special primes.
    #[serde(default)]
    pub p: Option<Vec<u64>>,
}

impl CkksParamsLiteral {
    /// A literal with a uniform ternary secret, the default number of digits, 128-bit
    /// security and primes generated from the sizes.
    pub fn new(log_n: u32, log_q: Vec<u32>, log_p: Vec<u32>, log_scale: u32) -> Self {
        CkksParamsLiteral {
            log_n,
            log_q,
            log_p,
            log_scale,
            secret: SecretDistribution::Ternary,
            dnum: None,
            security: Security::Bits128,
            q: None,
            p: None,
        }
    }

    /// The same literal with another security level.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }
}

/// A checked, immutable CKKS parameter set with its precomputations. Cheap to clone (Arc).
#[derive(Clone)]
pub struct CkksParams {
    inner: Arc<ParamsInner>,
}

struct ParamsInner {
    literal: CkksParamsLiteral,
    ring: RingContext,
    q: Vec<u64>,
    p: Vec<u64>,
    alpha: usize,
    log_qp: f64,
    digest: [u8; 32],
    /// P mod q_i.
    p_mod_q: Vec<u64>,
    /// P^-1 mod q_i.
    p_inv_mod_q: Vec<u64>,
    /// (P-1)/2 mod q_i and mod p_j (rounding offset of ModDown).
    half_p: (Vec<u64>, Vec<u64>),
    /// `q_inv[l][i] = q_l^-1 mod q_i` for i < l.
    q_inv: Vec<Vec<u64>>,
    /// ModDown converters P -> Q_l, per level.
    p_to_q: Vec<BasisConverter>,
    /// ModUp converters per level and digit: digit primes -> (other Q_l primes, then P).
    mod_up: Vec<Vec<ModUp>>,
}

impl std::fmt::Debug for CkksParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CkksParams")
            .field("log_n", &self.log_n())
            .field("q", &self.inner.q)
            .field("p", &self.inner.p)
            .field("log_scale", &self.inner.literal.log_scale)
            .field("dnum", &self.dnum())
            .field("security", &self.inner.literal.security)
            .finish()
    }
}

impl PartialEq for CkksParams {
    fn eq(&self, other: &Self) -> bool {
        self.inner.digest == other.inner.digest
    }
}

impl CkksParams {
    /// Checks a literal, generates (or verifies) its primes, checks security against the
    /// HomomorphicEncryption.org table and precomputes everything the scheme needs.
    ///
    /// Errors: malformed sizes, too few primes, a special modulus smaller than a digit,
    /// or `log2(QP)` over the bound of the requested security.
    pub fn from_literal(literal: CkksParamsLiteral) -> Result<Self> {
        let lit = literal;
        if !(4..=17).contains(&lit.log_n) {
            return Err(Error::params(format!(
                "log_n = {} must be in 4..=17",
                lit.log_n
            )));
        }
        if lit.log_q.is_empty() || lit.log_p.is_empty() {
            return Err(Error::params(
                "need at least one ciphertext prime and one special prime",
            ));
        }
        if lit.log_q.len() > 60 || lit.log_p.len() > 16 {
            return Err(Error::params(
                "at most 60 ciphertext primes and 16 special primes",
            ));
        }
        if !(10..=60).contains(&lit.log_scale) {
            return Err(Error::params(format!(
                "log_scale = {} must be in 10..=60",
                lit.log_scale
            )));
        }
        if let SecretDistribution::SparseTernary { hamming_weight } = lit.secret {
            if lit.security != Security::Unchecked {
                return Err(Error::params(
                    "a sparse ternary secret is not covered by the HomomorphicEncryption.org table; \
                     it needs Security::Unchecked",
                ));
            }
            if hamming_weight == 0 || hamming_weight > 1 << lit.log_n {
                return Err(Error::params("sparse secret hamming weight out of range"));
            }
        }
        let n = 1usize << lit.log_n;
        let (q, p) = match (&lit.q, &lit.p) {
            (Some(q), Some(p)) => {
                if q.len() != lit.log_q.len() || p.len() != lit.log_p.len() {
                    return Err(Error::params("frozen primes do not match the listed sizes"));
                }
                for (&v, &bits) in q.iter().chain(p).zip(lit.log_q.iter().chain(&lit.log_p)) {
                    let b = (v as f64).log2().round() as u32;
                    if b != bits || !crate::math::modulus::is_prime(v) || v % (2 * n as u64) != 1 {
                        return Err(Error::params(format!(
                            "frozen prime {v} is not a {bits}-bit NTT prime for N = {n}"
                        )));
                    }
                }
                (q.clone(), p.clone())
            }
            (None, None) => generate_primes(n, &lit.log_q, &lit.log_p)?,
            _ => {
                return Err(Error::params(
                    "give both frozen prime lists (q and p) or neither",
                ))
            }
        };
        let log_qp: f64 = q.iter().chain(&p).map(|&v| (v as f64).log2()).sum();
        security::check(lit.log_n, log_qp, lit.security)?;

        let levels = q.len();
        let k = p.len();
        let dnum = lit.dnum.unwrap_or(levels.div_ceil(k));
        if dnum == 0 || dnum > levels {
            return Err(Error::params(format!(
                "dnum = {dnum} must be in 1..={levels}"
            )));
        }
        let alpha = levels.div_ceil(dnum);
        // Noise of key switching stays small only if P dominates every digit.
        let log_p: f64 = p.iter().map(|&v| (v as f64).log2()).sum();
        for d in 0..levels.div_ceil(alpha) {
            let digit_bits: f64 = q[d * alpha..((d + 1) * alpha).min(levels)]
                .iter()
                .map(|&v| (v as f64).log2())
                .sum();
            if digit_bits > log_p + 1.0 {
                return Err(Error::params(format!(
                    "digit {d} spans {digit_bits:.1} bits but the special modulus P has only {log_p:.1}: \
                     raise dnum or add special primes"
                )));
            }
        }

        let ring = RingContext::new(n, &q, &p)?;
        let qm: Vec<Modulus> = ring.q_tables().iter().map(|t| *t.modulus()).collect();
        let pm: Vec<Modulus> = ring.p_tables().iter().map(|t| *t.modulus()).collect();
        let mut p_mod_q = Vec::with_capacity(levels);
        let mut p_inv_mod_q = Vec::with_capacity(levels);
        for m in &qm {
            let v = pm
                .iter()
                .fold(1u64, |acc, pj| m.mul(acc, m.reduce(pj.value())));
            p_mod_q.push(v);
            p_inv_mod_q.push(m.inv(v)?);
        }
        let half =
            |m: &Modulus, p_mod: u64| -> Result<u64> { Ok(m.mul(m.sub(p_mod, 1), m.inv(2)?)) };
        let half_p = (
            qm.iter()
                .zip(&p_mod_q)
                .map(|(m, &v)| half(m, v))
                .collect::<Result<Vec<_>>>()?,
            pm.iter().map(|m| half(m, 0)).collect::<Result<Vec<_>>>()?,
        );
        let mut q_inv = Vec::with_capacity(levels);
        for l in 0..levels {
            let row = qm[..l]
                .iter()
                .map(|m| m.inv(m.reduce(q[l])))
                .collect::<Result<Vec<_>>>()?;
            q_inv.push(row);
        }
        let mut p_to_q = Vec::with_capacity(levels);
        let mut mod_up = Vec::with_capacity(levels);
        for l in 0..levels {
            p_to_q.push(BasisConverter::new(&pm, &qm[..=l])?);
            let mut per_digit = Vec::new();
            for range in digit_ranges(alpha, l) {
                let src = &qm[range.clone()];
                let dst: Vec<Modulus> = qm[..=l]
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !range.contains(i))
                    .map(|(_, m)| *m)
                    .chain(pm.iter().copied())
                    .collect();
                // centering offset h = (Q_j - 1)/2 of the digit, on its primes and the targets
                let half_of = |m: &Modulus| -> Result<u64> {
                    let qj = src
                        .iter()
                        .fold(1u64, |acc, s| m.mul(acc, m.reduce(s.value())));
                    Ok(m.mul(m.sub(qj, 1), m.inv(2)?))
                };
                per_digit.push(ModUp {
                    converter: BasisConverter::new(src, &dst)?,
                    src_half: src.iter().map(half_of).collect::<Result<Vec<_>>>()?,
                    dst_half: dst.iter().map(half_of).collect::<Result<Vec<_>>>()?,
                });
            }
            mod_up.push(per_digit);
        }
        let digest = digest_of(&lit, &q, &p, dnum);
        let mut literal = lit;
        literal.q = Some(q.clone());
        literal.p = Some(p.clone());
        literal.dnum = Some(dnum);
        Ok(CkksParams {
            inner: Arc::new(ParamsInner {
                literal,
                ring,
                q,
                p,
                alpha,
                log_qp,
                digest,
                p_mod_q,
                p_inv_mod_q,
                half_p,
                q_inv,
                p_to_q,
                mod_up,
            }),
        })
    }

    /// The literal this set was built from, with its primes and dnum filled in (so that
    /// writing it out and reading it back gives the same set).
    pub fn literal(&self) -> &CkksParamsLiteral {
        &self.inner.literal
    }
    /// The ring and its NTT tables.
    pub fn ring(&self) -> &RingContext {
        &self.inner.ring
    }
    /// log2 N.
    pub fn log_n(&self) -> u32 {
        self.inner.literal.log_n
    }
    /// Ring degree N.
    pub fn n(&self) -> usize {
        1 << self.log_n()
    }
    /// Number of complex slots, N/2.
    pub fn slots(&self) -> usize {
        self.n() / 2
    }
    /// Highest level L (fresh ciphertexts live there).
    pub fn max_level(&self) -> crate::ckks::Level {
        crate::ckks::Level(self.inner.q.len() - 1)
    }
    /// The default scale Δ = 2^log_scale.
    pub fn default_scale(&self) -> f64 {
        (self.inner.literal.log_scale as f64).exp2()
    }
    /// The lowest level a result is dropped to before it leaves the server: the lowest `l`
    /// whose modulus `q_0 ... q_l` exceeds the scale by [`OUTPUT_HEADROOM_BITS`] (counted on
    /// the listed prime sizes), or 0 when none does. It is 0 for every chain whose first
    /// prime has that headroom (all presets); chains at scales near 2^60, whose first prime
    /// cannot exceed 2^61, keep one more prime reserved for the output (what
    /// [`crate::select`] builds for noise flooding). Costs nothing; depends on the sizes only.
    pub fn output_floor_level(&self) -> crate::ckks::Level {
        let lit = &self.inner.literal;
        let need = lit.log_scale as u64 + OUTPUT_HEADROOM_BITS as u64;
        let mut acc = 0u64;
        for (l, &b) in lit.log_q.iter().enumerate() {
            acc += b as u64;
            if acc >= need {
                return crate::ckks::Level(l);
            }
        }
        crate::ckks::Level::ZERO
    }
    /// Ciphertext primes q_0..q_L.
    pub fn q(&self) -> &[u64] {
        &self.inner.q
    }
    /// Special primes.
    pub fn p(&self) -> &[u64] {
        &self.inner.p
    }
    /// Number of key-switching digits at the top level.
    pub fn dnum(&self) -> usize {
        self.inner.literal.dnum.unwrap_or(1)
    }
    /// log2(Q·P), the figure the security table bounds.
    pub fn log_qp(&self) -> f64 {
        self.inner.log_qp
    }
    /// Requested security.
    pub fn security(&self) -> Security {
        self.inner.literal.security
    }
    /// Secret distribution.
    pub fn secret_distribution(&self) -> SecretDistribution {
        self.inner.literal.secret
    }
    /// SHA-256 digest identifying this parameter set (ring, primes, scale, secret, dnum).
    pub fn digest(&self) -> [u8; 32] {
        self.inner.digest
    }
    /// The first 8 bytes of the digest in hex, for messages.
    pub fn digest_short(&self) -> String {
        hex(&self.inner.digest[..8])
    }
    /// Digit ranges (indices of q primes) of the key-switching decomposition at `level`.
    pub fn digits(&self, level: usize) -> Vec<Range<usize>> {
        digit_ranges(self.inner.alpha, level)
    }
    /// Number of digits at the top level (== number of key components).
    pub fn num_digits(&self) -> usize {
        self.digits(self.max_level().get()).len()
    }
    pub(crate) fn p_mod_q(&self) -> &[u64] {
        &self.inner.p_mod_q
    }
    pub(crate) fn p_inv_mod_q(&self) -> &[u64] {
        &self.inner.p_inv_mod_q
    }
    pub(crate) fn half_p(&self) -> &(Vec<u64>, Vec<u64>) {
        &self.inner.half_p
    }
    pub(crate) fn q_inv(&self, level: usize) -> &[u64] {
        &self.inner.q_inv[level]
    }
    pub(crate) fn p_to_q(&self, level: usize) -> &BasisConverter {
        &self.inner.p_to_q[level]
    }
    pub(crate) fn mod_up(&self, level: usize, digit: usize) -> &ModUp {
        &self.inner.mod_up[level][digit]
    }

    /// Checks that `digest` names this parameter set.
    pub fn check_digest(&self, what: &str, digest: &[u8; 32]) -> Result<()> {
        if *digest == self.inner.digest {
            Ok(())
        } else {
            Err(Error::ParameterMismatch {
                what: what.to_string(),
                expected: self.digest_short(),
                found: hex(&digest[..8]),
            })
        }
    }

    /// Parses a TOML literal (the format of the files in `params/`) and checks it.
    ///
    /// A top-level `[selected_for]` table (what `hepeft params select` chose the set for,
    /// read by `crate::select::ParamsFile`) is not part of the literal and is skipped
    /// here; it does not enter the digest.
    pub fn from_toml(text: &str) -> Result<Self> {
        let fmt = |e: toml::de::Error| Error::format("parameter file", e.to_string());
        let mut table: toml::Table = toml::from_str(text).map_err(fmt)?;
        let lit: CkksParamsLiteral = if table.remove(SELECTION_TABLE).is_some() {
            toml::Value::Table(table).try_into().map_err(fmt)?
        } else {
            toml::from_str(text).map_err(fmt)?
        };
        Self::from_literal(lit)
    }

    /// The TOML form of the literal, with frozen primes.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(&self.inner.literal)
            .map_err(|e| Error::format("parameter file", e.to_string()))
    }

    /// One of the frozen presets shipped in `params/` (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        let text = PRESETS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                Error::params(format!(
                    "unknown preset {name:?}; known: {}",
                    PRESETS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        Self::from_toml(text)
    }

    /// Which tfhe-ntt kernel the primes run on, e.g. "AVX-512 IFMA on 8 of 10 primes" (primes
    /// below 2^50 take the IFMA kernel on CPUs that have it).
    pub fn ntt_path(&self) -> String {
        let ring = self.ring();
        let all: Vec<_> = ring.q_tables().iter().chain(ring.p_tables()).collect();
        let ifma = all.iter().filter(|t| t.uses_ifma()).count();
        if ifma == 0 {
            let kernels = if cfg!(feature = "avx512") {
                "AVX-512/AVX2 kernels"
            } else {
                "AVX2 kernels: built without the avx512 feature"
            };
            format!(
                "no IFMA kernel on this CPU for any of the {} primes ({kernels})",
                all.len()
            )
        } else {
            format!("AVX-512 IFMA on {ifma} of {} primes", all.len())
        }
    }

    /// One-line human description.
    pub fn describe(&self) -> String {
        format!(
            "N = 2^{}, log2(QP) = {:.1} ({} q primes, {} special), scale 2^{}, depth {}, dnum {}, security {}, digest {}",
            self.log_n(),
            self.log_qp(),
            self.q().len(),
            self.p().len(),
            self.inner.literal.log_scale,
            self.max_level(),
            self.dnum(),
            self.security(),
            self.digest_short()
        )
    }
}

/// Bits by which the output modulus must exceed the scale (see
/// [`CkksParams::output_floor_level`]): outputs up to `2^(OUTPUT_HEADROOM_BITS - 1)` in
/// message units, less the margins of [`crate::plan`]'s range check.
pub const OUTPUT_HEADROOM_BITS: u32 = 10;

/// The presets shipped in `params/`, by name (each file documents N, log QP, depth, scale and
/// security in its header).
pub const PRESETS: &[(&str, &str)] = &[
    (
        "CKKS_N13_QP200_128",
        include_str!("../../params/CKKS_N13_QP200_128.toml"),
    ),
    (
        "CKKS_N13_QP212_128",
        include_str!("../../params/CKKS_N13_QP212_128.toml"),
    ),
    (
        "CKKS_N14_QP430_128",
        include_str!("../../params/CKKS_N14_QP430_128.toml"),
    ),
    (
        "CKKS_N15_QP870_128",
        include_str!("../../params/CKKS_N15_QP870_128.toml"),
    ),
    (
        "CKKS_N16_QP1720_128",
        include_str!("../../params/CKKS_N16_QP1720_128.toml"),
    ),
];

/// Precomputation of the ModUp of one digit at one level: a basis converter and the
/// centering offset `h = (Q_j - 1)/2` on the digit's primes and on the targets, so digits are
/// raised as centered values (an uncentered digit carries a mean of `Q_j/2` into the key
/// switching noise, which the canonical embedding concentrates in the slots near the root 1).
#[derive(Debug, Clone)]
pub(crate) struct ModUp {
    pub(crate) converter: BasisConverter,
    pub(crate) src_half: Vec<u64>,
    pub(crate) dst_half: Vec<u64>,
}

fn digit_ranges(alpha: usize, level: usize) -> Vec<Range<usize>> {
    (0..=level)
        .step_by(alpha)
        .map(|s| s..(s + alpha).min(level + 1))
        .collect()
}

fn generate_primes(n: usize, log_q: &[u32], log_p: &[u32]) -> Result<(Vec<u64>, Vec<u64>)> {
    let mut used: Vec<u64> = Vec::new();
    let mut q = Vec::with_capacity(log_q.len());
    // q_0: the largest prime of its size.
    let first = ntt_primes(log_q[0], n, 1, &used)?;
    used.extend(&first);
    q.extend(first);
    // Scale primes: closest to 2^bits, alternating above and below, per distinct size.
    let mut sizes: Vec<u32> = log_q[1..].to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    let mut pools: Vec<(u32, Vec<u64>)> = Vec::new();
    for &b in &sizes {
        let count = log_q[1..].iter().filter(|&&x| x == b).count();
        let ps = ntt_primes_near(b, n, count, &used)?;
        used.extend(&ps);
        pools.push((b, ps));
    }
    for &b in &log_q[1..] {
        if let Some((_, pool)) = pools.iter_mut().find(|(s, _)| *s == b) {
            q.push(pool.remove(0));
        }
    }
    let mut p = Vec::with_capacity(log_p.len());
    for &b in log_p {
        let ps = ntt_primes(b, n, 1, &used)?;
        used.extend(&ps);
        p.extend(ps);
    }
    Ok((q, p))
}

fn digest_of(lit: &CkksParamsLiteral, q: &[u64], p: &[u64], dnum: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"hepeft/ckks-params/v1");
    h.update(lit.log_n.to_le_bytes());
    h.update((q.len() as u64).to_le_bytes());
    for v in q {
        h.update(v.to_le_bytes());
    }
    h.update((p.len() as u64).to_le_bytes());
    for v in p {
        h.update(v.to_le_bytes());
    }
    h.update(lit.log_scale.to_le_bytes());
    match lit.secret {
        SecretDistribution::Ternary => h.update([0u8]),
        SecretDistribution::SparseTernary { hamming_weight } => {
            h.update([1u8]);
            h.update((hamming_weight as u64).to_le_bytes());
        }
    }
    h.update((dnum as u64).to_le_bytes());
    h.finalize().into()
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl crate::io::object::ParamsDigest for CkksParams {
    fn digest(&self) -> [u8; 32] {
        CkksParams::digest(self)
    }
    fn check_digest(&self, what: &str, digest: &[u8; 32]) -> Result<()> {
        CkksParams::check_digest(self, what, digest)
    }
}
