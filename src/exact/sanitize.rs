//! Sanitizing the exact path's results (issue 14, item 6): what the server does to every
//! output ciphertext before it leaves, so that the client's view depends on the output
//! value only and not on the weights that produced it.
//!
//! Without it an output is a leveled dot product `Σ w_j · x_j`: its mask is a linear
//! function of the weights (for a linear head the client, who knows its query's masks,
//! solves for the weights from one query), and its noise has variance `‖w‖² · σ²`.
//!
//! [`Evaluator::sanitize`] runs the standard TFHE circuit-privacy recipe on a value `a`
//! held modulo `2^p`:
//!
//! 1. **Re-randomize**: add a fresh encryption of zero under the client's compact public
//!    key ([`ExactPublicKey`], tfhe-rs `LweCompactPublicKey` over the big key, dimension
//!    2048 with TUniform 2^17 noise, the dimension and noise of tfhe-rs's own public-key
//!    encryption parameters for this set). The mask becomes pseudorandom and independent of
//!    the weights, so every modulus-switched mask the bootstrappings below see is too.
//! 2. **Re-bootstrap every bit**: the value is cut into digits of at most 4 bits from the
//!    bottom, each read by two bootstrappings as in [`Evaluator::drop_low_bits`] (a coarse
//!    sign PBS, a fine PBS that returns the digit at its place), and the last bit by one
//!    fine sign PBS. The output is the **sum of the fresh PBS outputs only**: its mask and
//!    noise are those of `⌈(p-1)/4⌉ + 1` fresh fine bootstrappings of re-randomized inputs,
//!    functions of the digits (the value) and of the client's keys, not of the weights. The
//!    weight-dependent input only decides which box each read falls in, which is the value
//!    itself except with the bootstrapping failure probability.
//! 3. **Re-randomize and flood**: a second encryption of zero whose body noise is TUniform
//!    with bound `2^(61-p)` (a quarter of the decryption margin), which keeps decryption
//!    exact (the fresh noise of step 2 is about `2^43`, far below the other three
//!    quarters for `p <= 14`) and smooths what the bootstrapping noise could still carry.
//!
//! Cost per output: `2⌈(p-1)/4⌉ + 1` bootstrappings (7 for `p = 11`, 5 for `p = 6`) and two
//! public-key encryptions of zero (a negacyclic product of degree 2048 each). Correctness:
//! the first read sees the output's noise amplified by `2^(p-5)` (plus the keyswitch and
//! modulus-switch noise), the same margin as the first read of the encrypted argmax; plans
//! made with [`QuantizeOptions::argmax`](crate::plan::QuantizeOptions) budget for it, other
//! plans are checked empirically (`tests/exact_sanitize.rs`).

use rand::{CryptoRng, Rng};
use tfhe::core_crypto::commons::math::random::DynamicDistribution;
use tfhe::core_crypto::prelude::*;

use super::eval::{Evaluator, ExactCiphertext, Lut};
use super::keys::{glwe_noise, seeder_from, ClientKey};
use crate::{Error, Result};

/// The client's compact public key over the big LWE key: the server encrypts zeros under it
/// to re-randomize results. 2 · 2048 words (32 KiB).
#[derive(Clone, Debug)]
pub struct ExactPublicKey {
    pub(crate) cpk: LweCompactPublicKeyOwned<u64>,
}

impl ExactPublicKey {
    /// Bytes of the key's words.
    pub fn size_bytes(&self) -> u64 {
        8 * self.cpk.as_ref().len() as u64
    }
}

impl ClientKey {
    /// The compact public key of the big key (tfhe-rs `LweCompactPublicKey`), with the
    /// GLWE noise distribution. Cost: one negacyclic product of degree k·N.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if the big key's dimension is not a power of two (the
    /// compact public key needs one).
    pub fn public_key(&self, rng: &mut (impl Rng + CryptoRng)) -> Result<ExactPublicKey> {
        let big = self.glwe.as_lwe_secret_key();
        if !big.lwe_dimension().0.is_power_of_two() {
            return Err(Error::params(format!(
                "a compact public key needs a power-of-two LWE dimension, the big key has {}",
                big.lwe_dimension().0
            )));
        }
        let mut seeder = seeder_from(rng);
        let mut gen =
            EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), &mut seeder);
        let cpk = allocate_and_generate_new_lwe_compact_public_key(
            &big,
            glwe_noise(&self.params),
            CiphertextModulus::new_native(),
            &mut gen,
        );
        Ok(ExactPublicKey { cpk })
    }
}

/// Bits of the TUniform bound of the final flooding for outputs held modulo `2^p`: a
/// quarter of the decryption margin `2^(63-p)`.
pub fn flooding_log2(p: u32) -> u32 {
    61u32.saturating_sub(p)
}

/// Bootstrappings [`Evaluator::sanitize`] performs for one output held modulo `2^p`:
/// two per digit of at most 4 bits below the top bit, one for the top bit.
pub fn sanitize_pbs(p: u32) -> u64 {
    let mut pc = p;
    let mut n = 1;
    while pc > 1 {
        let k = (pc - 1).min(4);
        n += 2;
        pc -= k;
    }
    n
}

impl Evaluator<'_> {
    /// A fresh encryption of zero under `pk` whose body noise is TUniform with bound
    /// `2^body_noise_log2` (the mask noise is the GLWE distribution).
    fn encrypt_zero(
        &self,
        pk: &ExactPublicKey,
        body_noise_log2: u32,
        rng: &mut (impl Rng + CryptoRng),
    ) -> ExactCiphertext {
        let mut seeder = seeder_from(rng);
        let mut gen =
            EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), &mut seeder);
        let mut ct = LweCiphertext::new(
            0u64,
            pk.cpk.lwe_dimension().to_lwe_size(),
            CiphertextModulus::new_native(),
        );
        encrypt_lwe_ciphertext_with_compact_public_key(
            &pk.cpk,
            &mut ct,
            Plaintext(0u64),
            glwe_noise(self.params()),
            DynamicDistribution::<u64>::new_t_uniform(body_noise_log2),
            gen.noise_generator_mut(),
        );
        ExactCiphertext { ct }
    }

    /// `c` plus a fresh encryption of zero under `pk` (GLWE noise): same value, a mask
    /// independent of how `c` was computed.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a ciphertext or key of the wrong size.
    pub fn rerandomize(
        &self,
        c: &ExactCiphertext,
        pk: &ExactPublicKey,
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<ExactCiphertext> {
        self.check_pk(pk)?;
        let zero = self.encrypt_zero(pk, self.params().glwe_noise_log2(), rng);
        self.add(c, &zero)
    }

    fn check_pk(&self, pk: &ExactPublicKey) -> Result<()> {
        let want = self.params().big_lwe_dimension();
        if pk.cpk.lwe_dimension() != want {
            return Err(Error::dims(
                "exact public key dimension",
                want.0,
                pk.cpk.lwe_dimension().0,
            ));
        }
        Ok(())
    }

    /// The same value `a mod 2^p`, rebuilt from fresh bootstrapping outputs only (step 2
    /// of the module docs): digits of at most 4 bits from the bottom, two bootstrappings
    /// each, and one for the top bit. The result's mask and noise are a sum of
    /// [`sanitize_pbs`]`(p)` fresh fine-PBS outputs' (σ about `2^43` for `p = 11`).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if `p` is not in `1..=62`; size mismatches.
    pub fn rebootstrap(&self, c: &ExactCiphertext, p: u32) -> Result<ExactCiphertext> {
        if !(1..=62).contains(&p) {
            return Err(Error::params(format!(
                "rebootstrap needs 1 <= p <= 62, got {p}"
            )));
        }
        let params = self.params();
        let neg_quarter = (1u64 << 62).wrapping_neg();
        let sign = Lut::new(params, false, move |_| neg_quarter);
        let mut cur = c.clone();
        let mut pc = p;
        let mut out: Option<ExactCiphertext> = None;
        while pc > 1 {
            let k = (pc - 1).min(4);
            // the low k + 1 bits on top: the (k+1)-th is read by the sign PBS, the low k
            // sit at multiples of 2^(63-k), box centres
            let top = self.shl(&cur, pc - k - 1);
            let s = self.pbs(&top, &sign)?;
            let low_in = self.sub_add(&top, &s, neg_quarter)?;
            let spread = super::params::READ_BITS - 1 - k;
            let place = 64 - pc;
            let low = Lut::new(params, true, move |i| ((i as u64) >> spread) << place);
            // the digit at its place: (cur mod 2^k) · 2^(64-pc) = digit · 2^(64-p+done)
            let d = self.pbs(&low_in, &low)?;
            cur = self.sub_add(&cur, &d, 0)?;
            out = Some(match out {
                Some(acc) => self.add(&acc, &d)?,
                None => d,
            });
            pc -= k;
        }
        // the top bit b at phase b · 2^63: a fine sign PBS gives ∓2^62, and b · 2^63 is
        // that plus 2^62
        let fine_sign = Lut::new(params, true, move |_| neg_quarter);
        let s = self.pbs(&cur, &fine_sign)?;
        let top_bit = self.sub_add(&s, &self.zero_like(&s), 1u64 << 62)?;
        match out {
            Some(acc) => self.add(&acc, &top_bit),
            None => Ok(top_bit),
        }
    }

    fn zero_like(&self, c: &ExactCiphertext) -> ExactCiphertext {
        ExactCiphertext {
            ct: LweCiphertext::new(0u64, c.ct.lwe_size(), CiphertextModulus::new_native()),
        }
    }

    /// Sanitizes one output held modulo `2^p` (module docs): re-randomize under `pk`,
    /// rebuild from fresh bootstrappings, re-randomize again with a TUniform `2^(61-p)`
    /// flooding of the body. Decrypts to the same value as `c` (up to the bootstrapping
    /// failure probability). Cost: [`sanitize_pbs`]`(p)` bootstrappings and two encryptions
    /// of zero.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if `p` is not in `1..=60`; size mismatches.
    pub fn sanitize(
        &self,
        c: &ExactCiphertext,
        p: u32,
        pk: &ExactPublicKey,
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<ExactCiphertext> {
        if !(1..=60).contains(&p) {
            return Err(Error::params(format!(
                "sanitizing needs an output modulus 2^p with 1 <= p <= 60, got p = {p}"
            )));
        }
        let r = self.rerandomize(c, pk, rng)?;
        let fresh = self.rebootstrap(&r, p)?;
        self.check_pk(pk)?;
        let flood = self.encrypt_zero(pk, flooding_log2(p), rng);
        self.add(&fresh, &flood)
    }
}
