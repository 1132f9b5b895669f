//! Scheme-level sanitization of a ciphertext: re-randomization and noise flooding, as
//! [`Evaluator`] operations. How wide the flooding must be, and which ciphertexts get it,
//! is the compiled plan's business (`crate::plan::sanitize`); this module only does the
//! ring arithmetic.

use super::ciphertext::Ciphertext;
use super::encrypt::{EncryptionKey, Encryptor};
use super::eval::Evaluator;
use super::keys::PublicKey;
use super::units::Level;
use crate::math::poly::{Coeff, RnsPoly};
use crate::math::sample;
use crate::{Error, Result};
use rand::{CryptoRng, RngCore};

/// Largest flooding standard deviation, as log2, that [`crate::math::sample::gaussian_wide`]
/// samples (its output is an `i64`, tails cut near `8.6 sigma`).
pub const MAX_FLOODING_SIGMA_LOG2: f64 = 58.0;

impl Evaluator {
    /// Whether flooding noise of standard deviation `2^sigma_log2` fits a ciphertext at
    /// `level`: at most [`MAX_FLOODING_SIGMA_LOG2`], and 16 sigma (tails included) at least
    /// a factor 2 below `Q_level = q_0 ... q_level`, so that the noise never wraps around.
    pub fn flooding_fits(&self, level: Level, sigma_log2: f64) -> bool {
        let q_log2: f64 = self
            .params()
            .q()
            .iter()
            .take(level.primes())
            .map(|&q| (q as f64).log2())
            .sum();
        !(sigma_log2 + 4.0 >= q_log2 - 1.0 || sigma_log2 > MAX_FLOODING_SIGMA_LOG2)
    }

    /// Re-randomizes `ct` in place: adds a fresh public-key encryption of zero under `pk` at
    /// the ciphertext's level and scale, so that `c_1` is no longer a deterministic function
    /// of how `ct` was computed. The message is unchanged; the noise grows by that of a fresh
    /// encryption.
    ///
    /// Cost: one public-key encryption of zero at the ciphertext's level (3 small-polynomial
    /// NTTs over `Q_l P`, two ModDowns) and one addition. Draws from `rng` exactly what
    /// [`Encryptor::encrypt_zero`] draws.
    ///
    /// # Errors
    /// [`Error::ParamsMismatch`](crate::Error) if `pk` or `ct` belongs to other parameters.
    pub fn rerandomize_assign<G: RngCore + CryptoRng>(
        &self,
        ct: &mut Ciphertext,
        pk: &PublicKey,
        rng: &mut G,
    ) -> Result<()> {
        let encryptor = Encryptor::new(self.params(), EncryptionKey::Public(pk))?;
        let zero = encryptor.encrypt_zero(ct.level(), ct.scale(), rng);
        self.add_assign(ct, &zero)
    }

    /// Noise flooding in place: adds a rounded centred Gaussian of standard deviation
    /// `2^sigma_log2` ([`crate::math::sample::gaussian_wide`]) to every coefficient of `c_0`,
    /// so that the decrypted error no longer depends on how `ct` was computed. The message
    /// is unchanged; each slot receives noise of standard deviation about
    /// `sigma * sqrt(N/2) / scale`.
    ///
    /// Cost: `N` Gaussian samples (`N` 64-bit draws from `rng`) and one NTT per limb.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] if the noise does not fit the ciphertext's level
    /// ([`Evaluator::flooding_fits`]); [`Error::ParamsMismatch`](crate::Error) if `ct`
    /// belongs to other parameters.
    pub fn flood_assign<G: RngCore + CryptoRng>(
        &self,
        ct: &mut Ciphertext,
        sigma_log2: f64,
        rng: &mut G,
    ) -> Result<()> {
        let params = self.params();
        params.check_digest("ciphertext", &ct.params_digest())?;
        if !sigma_log2.is_finite() || !self.flooding_fits(ct.level(), sigma_log2) {
            return Err(Error::InvalidValue {
                context: "noise flooding".into(),
                reason: format!(
                    "sigma = 2^{sigma_log2:.1} does not fit a ciphertext at level {}: \
                     flood at a higher level or with a smaller sigma",
                    ct.level()
                ),
            });
        }
        let ring = params.ring();
        let noise = sample::gaussian_wide(rng, params.n(), sigma_log2.exp2());
        let poly =
            RnsPoly::<Coeff>::from_signed(ring, &noise, ct.level().get(), false).into_eval(ring);
        if let Some(c0) = ct.parts_mut().first_mut() {
            c0.add_assign(ring, &poly);
        }
        Ok(())
    }
}
