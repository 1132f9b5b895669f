//! Plaintexts and ciphertexts: RNS polynomials in evaluation form with a level and a scale.

use super::units::Level;
use crate::math::poly::{Eval, RnsPoly};

/// An encoded message: one polynomial in evaluation form at some level and scale.
#[derive(Clone, Debug)]
pub struct Plaintext {
    poly: RnsPoly<Eval>,
    scale: f64,
    digest: [u8; 32],
}

impl Plaintext {
    pub(crate) fn new(poly: RnsPoly<Eval>, scale: f64, digest: [u8; 32]) -> Self {
        Plaintext {
            poly,
            scale,
            digest,
        }
    }
    /// Level (index of the last prime held).
    pub fn level(&self) -> Level {
        Level(self.poly.level())
    }
    /// Scale Δ the message was multiplied by.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// Digest of the parameter set it was made under.
    pub fn params_digest(&self) -> [u8; 32] {
        self.digest
    }
    /// The polynomial.
    pub fn poly(&self) -> &RnsPoly<Eval> {
        &self.poly
    }
}

/// A CKKS ciphertext `(c_0, c_1[, c_2])` decrypting to `c_0 + c_1·s (+ c_2·s^2)`, with all
/// parts in evaluation form at the same level.
#[derive(Clone, Debug)]
pub struct Ciphertext {
    parts: Vec<RnsPoly<Eval>>,
    scale: f64,
    digest: [u8; 32],
    /// For a fresh symmetric encryption: `c_1` is the uniform polynomial expanded from this
    /// seed (stream 0), so it can be stored as 32 bytes.
    seed: Option<[u8; 32]>,
}

impl Ciphertext {
    pub(crate) fn new(parts: Vec<RnsPoly<Eval>>, scale: f64, digest: [u8; 32]) -> Self {
        Ciphertext {
            parts,
            scale,
            digest,
            seed: None,
        }
    }
    pub(crate) fn with_seed(mut self, seed: [u8; 32]) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Level (index of the last prime held); the number of rescalings left.
    pub fn level(&self) -> Level {
        Level(self.parts[0].level())
    }
    /// Current scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// Overrides the scale bookkeeping (no computation). For callers who know the message
    /// was multiplied by a different factor than recorded.
    pub fn set_scale(&mut self, scale: f64) {
        self.scale = scale;
    }
    /// Number of parts (2 normally, 3 after a multiplication without relinearization).
    pub fn degree_plus_one(&self) -> usize {
        self.parts.len()
    }
    /// Digest of the parameter set it was made under.
    pub fn params_digest(&self) -> [u8; 32] {
        self.digest
    }
    /// The parts.
    pub fn parts(&self) -> &[RnsPoly<Eval>] {
        &self.parts
    }
    pub(crate) fn parts_mut(&mut self) -> &mut Vec<RnsPoly<Eval>> {
        self.seed = None;
        &mut self.parts
    }
    /// The seed of `c_1`, if the ciphertext is a fresh symmetric encryption.
    pub fn seed(&self) -> Option<[u8; 32]> {
        self.seed
    }
    /// Size in bytes of the polynomial data (what a raw serialization writes), counting a
    /// seeded `c_1` as its 32-byte seed.
    pub fn payload_bytes(&self) -> usize {
        let words: usize = self.parts.iter().map(|p| p.as_words().len()).sum();
        match self.seed {
            Some(_) => (words - self.parts[1].as_words().len()) * 8 + 32,
            None => words * 8,
        }
    }
}
