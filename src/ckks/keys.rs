//! Key material: the secret key (zeroized, never printed), the public key, switching keys for
//! relinearization and rotations, and the evaluation key set a server receives.

use crate::math::poly::{Eval, RnsPoly};
use std::collections::BTreeMap;
use zeroize::Zeroize;

/// The secret key `s`: small ternary coefficients, kept in evaluation form over every prime
/// (ciphertext and special). Zeroized on drop; `Debug` prints nothing secret.
pub struct SecretKey {
    pub(crate) coeffs: Vec<i8>,
    pub(crate) eval: RnsPoly<Eval>,
    pub(crate) digest: [u8; 32],
}

impl SecretKey {
    /// Digest of the parameter set.
    pub fn params_digest(&self) -> [u8; 32] {
        self.digest
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.coeffs.zeroize();
        self.eval.zeroize_words();
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A public encryption key `(b, a) = (-a·s + e, a)` at the top level, over `Q·P`.
#[derive(Clone, Debug)]
pub struct PublicKey {
    pub(crate) b: RnsPoly<Eval>,
    pub(crate) a: RnsPoly<Eval>,
    pub(crate) seed: Option<[u8; 32]>,
    pub(crate) digest: [u8; 32],
}

impl PublicKey {
    /// Digest of the parameter set.
    pub fn params_digest(&self) -> [u8; 32] {
        self.digest
    }
}

/// A hybrid key-switching key from some `s'` to `s`: one pair per digit,
/// `b_j = -a_j·s + e_j + P·g_j·s'` over `Q·P` (`g_j` the CRT indicator of digit j).
#[derive(Clone, Debug)]
pub struct SwitchingKey {
    pub(crate) b: Vec<RnsPoly<Eval>>,
    pub(crate) a: Vec<RnsPoly<Eval>>,
    pub(crate) seed: Option<[u8; 32]>,
}

impl SwitchingKey {
    /// Number of digits.
    pub fn digits(&self) -> usize {
        self.b.len()
    }
    /// Size in bytes when stored: with a seed, the `a` halves are 32 bytes in all.
    pub fn stored_bytes(&self) -> usize {
        let half: usize = self.b.iter().map(|p| p.as_words().len() * 8).sum();
        if self.seed.is_some() {
            half + 32
        } else {
            2 * half
        }
    }
}

/// Relinearization key: switches `s^2` to `s`.
#[derive(Clone, Debug)]
pub struct RelinKey(pub(crate) SwitchingKey);

/// Galois key for the automorphism `X -> X^element`: switches `s(X^element)` to `s`.
#[derive(Clone, Debug)]
pub struct GaloisKey {
    pub(crate) element: u64,
    pub(crate) key: SwitchingKey,
}

impl GaloisKey {
    /// The Galois element `g` (odd, mod 2N).
    pub fn element(&self) -> u64 {
        self.element
    }
}

/// Everything the server needs to evaluate: relinearization key and the Galois keys for
/// exactly the elements the circuit uses. Contains no secret.
#[derive(Clone, Debug, Default)]
pub struct EvaluationKeys {
    pub(crate) digest: [u8; 32],
    pub(crate) relin: Option<RelinKey>,
    pub(crate) galois: BTreeMap<u64, GaloisKey>,
    /// The client's public key, so the server can re-randomize results with a fresh
    /// encryption of zero (see `plan::sanitize`). Optional in the file format.
    pub(crate) public: Option<PublicKey>,
}

impl EvaluationKeys {
    /// Digest of the parameter set.
    pub fn params_digest(&self) -> [u8; 32] {
        self.digest
    }
    /// The relinearization key, if present.
    pub fn relin(&self) -> Option<&RelinKey> {
        self.relin.as_ref()
    }
    /// The Galois key for `element`, if present.
    pub fn galois(&self, element: impl Into<super::GaloisElement>) -> Option<&GaloisKey> {
        self.galois.get(&element.into().get())
    }
    /// The client's public key, if the key set carries one.
    pub fn public_key(&self) -> Option<&PublicKey> {
        self.public.as_ref()
    }
    /// Attaches the client's public key (the server needs it to re-randomize results).
    ///
    /// # Errors
    /// [`crate::Error::ParameterMismatch`] if `pk` was made under other parameters.
    pub fn with_public_key(mut self, pk: PublicKey) -> crate::Result<Self> {
        if pk.digest != self.digest {
            return Err(crate::Error::ParameterMismatch {
                what: "public key".into(),
                expected: crate::ckks::params::hex(self.digest.get(..8).unwrap_or(&[])),
                found: crate::ckks::params::hex(pk.digest.get(..8).unwrap_or(&[])),
            });
        }
        self.public = Some(pk);
        Ok(self)
    }
    /// Galois elements present.
    pub fn galois_elements(&self) -> Vec<super::GaloisElement> {
        self.galois
            .keys()
            .copied()
            .map(super::GaloisElement)
            .collect()
    }
    /// Stored size in bytes of the switching keys (seeded halves count 32 bytes; the
    /// public key, if carried, is not counted).
    pub fn stored_bytes(&self) -> usize {
        self.relin.as_ref().map_or(0, |r| r.0.stored_bytes())
            + self
                .galois
                .values()
                .map(|g| g.key.stored_bytes())
                .sum::<usize>()
            + self.public.as_ref().map_or(0, |p| {
                p.b.as_words().len() * 8
                    + if p.seed.is_some() {
                        32
                    } else {
                        p.a.as_words().len() * 8
                    }
            })
    }
}
