//! Encryption (public key, or symmetric with the secret key and a seeded mask) and decryption.

use super::ciphertext::{Ciphertext, Plaintext};
use super::keys::{PublicKey, SecretKey};
use super::keyswitch::mod_down;
use super::params::CkksParams;
use super::units::Level;
use crate::math::poly::{Coeff, Eval, RnsPoly};
use crate::math::sample;
use crate::Result;
use rand::{CryptoRng, RngCore};

/// The key an [`Encryptor`] uses.
#[derive(Debug, Clone, Copy)]
pub enum EncryptionKey<'a> {
    /// Anyone can encrypt; ciphertexts are two full polynomials.
    Public(&'a PublicKey),
    /// The key owner encrypts; `c_1` is stored as a 32-byte seed, halving the upload.
    Secret(&'a SecretKey),
}

/// Encrypts plaintexts.
#[derive(Debug)]
pub struct Encryptor<'a> {
    params: CkksParams,
    key: EncryptionKey<'a>,
}

impl<'a> Encryptor<'a> {
    /// An encryptor under `key`; errors if the key belongs to other parameters.
    pub fn new(params: &CkksParams, key: EncryptionKey<'a>) -> Result<Self> {
        let digest = match key {
            EncryptionKey::Public(pk) => pk.digest,
            EncryptionKey::Secret(sk) => sk.digest,
        };
        params.check_digest("encryption key", &digest)?;
        Ok(Encryptor {
            params: params.clone(),
            key,
        })
    }

    fn small_poly(&self, coeffs: &[i64], level: usize) -> RnsPoly<Eval> {
        let ring = self.params.ring();
        RnsPoly::<Coeff>::from_signed(ring, coeffs, level, false).into_eval(ring)
    }

    /// Encrypts `pt` at its level and scale. Cost (public key): 3·(l+1+K) NTTs and two ModDowns; (secret key):
    /// (l+1) NTTs plus the seeded mask expansion.
    pub fn encrypt<G: RngCore + CryptoRng>(
        &self,
        pt: &Plaintext,
        rng: &mut G,
    ) -> Result<Ciphertext> {
        self.params.check_digest("plaintext", &pt.params_digest())?;
        let mut ct = self.encrypt_zero(pt.level(), pt.scale(), rng);
        let ring = self.params.ring();
        let seed = ct.seed();
        ct.parts_mut()[0].add_assign(ring, pt.poly());
        Ok(match seed {
            Some(s) => ct.with_seed(s),
            None => ct,
        })
    }

    /// A fresh encryption of zero at `level`, labelled with `scale`.
    pub fn encrypt_zero<G: RngCore + CryptoRng>(
        &self,
        level: Level,
        scale: f64,
        rng: &mut G,
    ) -> Ciphertext {
        let ring = self.params.ring();
        let n = self.params.n();
        let level = level.min(self.params.max_level()).get();
        match self.key {
            EncryptionKey::Public(pk) => {
                // (v·b + e0, v·a + e1) over Q_l·P, then divided by P: the noise v·e + e0 + e1·s
                // shrinks to the rounding error of the division.
                let small =
                    |c: &[i64]| RnsPoly::<Coeff>::from_signed(ring, c, level, true).into_eval(ring);
                let v = small(&sample::ternary(rng, n));
                let mut c0 = small(&sample::gaussian(rng, n));
                let mut c1 = small(&sample::gaussian(rng, n));
                c0.mul_accumulate(ring, &v, &pk.b.at_level_extended(level));
                c1.mul_accumulate(ring, &v, &pk.a.at_level_extended(level));
                let (c0, c1) = crate::math::par::join(
                    c0.as_words().len(),
                    || mod_down(&self.params, &c0),
                    || mod_down(&self.params, &c1),
                );
                Ciphertext::new(vec![c0, c1], scale, self.params.digest())
            }
            EncryptionKey::Secret(sk) => {
                let seed = sample::fresh_seed(rng);
                let a = sample::uniform_from_seed(ring, &seed, 0, level, false);
                let mut c0 = self.small_poly(&sample::gaussian(rng, n), level);
                let mut as_ = a.clone();
                as_.mul_assign_prefix(ring, &sk.eval);
                c0.sub_assign(ring, &as_);
                Ciphertext::new(vec![c0, a], scale, self.params.digest()).with_seed(seed)
            }
        }
    }
}

/// Decrypts ciphertexts with the secret key.
#[derive(Debug)]
pub struct Decryptor<'a> {
    params: CkksParams,
    sk: &'a SecretKey,
}

impl<'a> Decryptor<'a> {
    /// A decryptor; errors if the key belongs to other parameters.
    pub fn new(params: &CkksParams, sk: &'a SecretKey) -> Result<Self> {
        params.check_digest("secret key", &sk.digest)?;
        Ok(Decryptor {
            params: params.clone(),
            sk,
        })
    }

    /// `c_0 + c_1·s (+ c_2·s^2)`. Cost: (degree)·(l+1) pointwise products.
    pub fn decrypt(&self, ct: &Ciphertext) -> Result<Plaintext> {
        self.params
            .check_digest("ciphertext", &ct.params_digest())?;
        let ring = self.params.ring();
        let parts = ct.parts();
        let mut acc = parts[parts.len() - 1].clone();
        for part in parts[..parts.len() - 1].iter().rev() {
            acc.mul_assign_prefix(ring, &self.sk.eval);
            acc.add_assign(ring, part);
        }
        Ok(Plaintext::new(acc, ct.scale(), self.params.digest()))
    }
}
