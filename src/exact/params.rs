//! Parameters of the exact backend: the LWE/GLWE dimensions, key and noise distributions of
//! a vetted tfhe-rs set, plus the bootstrapping decompositions this crate uses.
//!
//! Security of (G)LWE depends only on the dimensions, the secret-key distribution (binary
//! here) and the noise distributions. [`ExactParams::from_literal`] therefore accepts only
//! literals whose `lwe_dimension`, `glwe_dimension`, `polynomial_size` and both TUniform
//! noise bounds are *exactly* those of a named tfhe-rs set. The two bootstrapping
//! decompositions (`pbs_*` and `fine_*`) change noise and cost, never security; the failure
//! probability they lead to is computed by [`noise`](super::noise) and checked by every plan.
//!
//! The literal keeps plain integers (it is the file format); the checked [`ExactParams`]
//! hands out tfhe-rs's own newtypes ([`LweDimension`], [`GlweDimension`], [`PolynomialSize`],
//! [`DecompositionBaseLog`], [`DecompositionLevelCount`]), so a dimension cannot be passed
//! where a level count is expected on the way into tfhe-rs.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tfhe::core_crypto::commons::math::random::DynamicDistribution;
pub use tfhe::core_crypto::commons::parameters::{
    DecompositionBaseLog, DecompositionLevelCount, GlweDimension, GlweSize, LweDimension, LweSize,
    PolynomialSize,
};
use tfhe::shortint::parameters::ClassicPBSParameters;

use crate::{Error, Result};

/// Bits of phase one programmable bootstrapping reads: 4 message bits and 1 padding bit for
/// the `MESSAGE_2_CARRY_2` class (16 boxes on the half torus, box half-width 2^58).
pub const READ_BITS: u32 = 5;

/// Name of the default vetted set (tfhe-rs 1.8 alias; in 1.8.2 it is the v1.4 set).
pub const DEFAULT_VETTED: &str = "PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128";

/// Unchecked parameter literal (serde), as stored in files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExactParamsLiteral {
    /// Name of the vetted tfhe-rs set the security-relevant fields come from.
    pub vetted: String,
    /// Small LWE dimension n (keyswitch output, bootstrapping input).
    pub lwe_dimension: usize,
    /// GLWE dimension k.
    pub glwe_dimension: usize,
    /// GLWE polynomial size N.
    pub polynomial_size: usize,
    /// log2 of the TUniform bound of the small-LWE noise.
    pub lwe_noise_log2: u32,
    /// log2 of the TUniform bound of the GLWE noise (also used for client encryption).
    pub glwe_noise_log2: u32,
    /// Keyswitch decomposition base log.
    pub ks_base_log: usize,
    /// Keyswitch decomposition level count.
    pub ks_level: usize,
    /// Coarse bootstrapping decomposition base log (the vetted one).
    pub pbs_base_log: usize,
    /// Coarse bootstrapping level count (the vetted one).
    pub pbs_level: usize,
    /// Fine bootstrapping decomposition base log (for outputs that feed a dot product).
    pub fine_base_log: usize,
    /// Fine bootstrapping level count.
    pub fine_level: usize,
}

/// Checked, immutable parameters of the exact backend.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactParams {
    lit: ExactParamsLiteral,
    vetted_log2_p_fail: f64,
}

fn vetted_set(name: &str) -> Option<ClassicPBSParameters> {
    match name {
        DEFAULT_VETTED => {
            Some(tfhe::shortint::parameters::PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128)
        }
        _ => None,
    }
}

fn tuniform_log2(d: DynamicDistribution<u64>, what: &str) -> Result<u32> {
    match d {
        DynamicDistribution::TUniform(t) => Ok(t.bound_log2()),
        DynamicDistribution::Gaussian(_) => Err(Error::params(format!(
            "{what}: the exact backend only supports TUniform noise sets"
        ))),
    }
}

impl ExactParams {
    /// The default: `PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128` (n = 918, k = 1,
    /// N = 2048, TUniform 2^45 / 2^17, KS 2^4 x 4, PBS 2^23 x 1) with a fine bootstrapping
    /// decomposition 2^15 x 2 for activations whose outputs feed another layer.
    ///
    /// # Errors
    /// Never in practice; [`Error::InvalidParameters`] if tfhe-rs changed the set's noise kind.
    pub fn default_2m128() -> Result<Self> {
        Self::vetted(
            DEFAULT_VETTED,
            DecompositionBaseLog(15),
            DecompositionLevelCount(2),
        )
    }

    /// The vetted set `name` with the fine decomposition `fine_base_log x fine_level`.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for an unknown name or an invalid decomposition.
    pub fn vetted(
        name: &str,
        fine_base_log: DecompositionBaseLog,
        fine_level: DecompositionLevelCount,
    ) -> Result<Self> {
        let p = vetted_set(name).ok_or_else(|| {
            Error::params(format!(
                "unknown vetted TFHE set {name:?} (known: {DEFAULT_VETTED})"
            ))
        })?;
        Self::from_literal(ExactParamsLiteral {
            vetted: name.to_string(),
            lwe_dimension: p.lwe_dimension.0,
            glwe_dimension: p.glwe_dimension.0,
            polynomial_size: p.polynomial_size.0,
            lwe_noise_log2: tuniform_log2(p.lwe_noise_distribution, "lwe noise")?,
            glwe_noise_log2: tuniform_log2(p.glwe_noise_distribution, "glwe noise")?,
            ks_base_log: p.ks_base_log.0,
            ks_level: p.ks_level.0,
            pbs_base_log: p.pbs_base_log.0,
            pbs_level: p.pbs_level.0,
            fine_base_log: fine_base_log.0,
            fine_level: fine_level.0,
        })
    }

    /// Checks a literal: every security-relevant field must equal the named vetted set, the
    /// keyswitch decomposition must be the vetted one, and both bootstrapping
    /// decompositions must satisfy `1 <= base_log * level <= 64`.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] naming the first field that differs.
    pub fn from_literal(lit: ExactParamsLiteral) -> Result<Self> {
        let p = vetted_set(&lit.vetted)
            .ok_or_else(|| Error::params(format!("unknown vetted TFHE set {:?}", lit.vetted)))?;
        let expect = [
            ("lwe_dimension", lit.lwe_dimension, p.lwe_dimension.0),
            ("glwe_dimension", lit.glwe_dimension, p.glwe_dimension.0),
            ("polynomial_size", lit.polynomial_size, p.polynomial_size.0),
            (
                "lwe_noise_log2",
                lit.lwe_noise_log2 as usize,
                tuniform_log2(p.lwe_noise_distribution, "lwe noise")? as usize,
            ),
            (
                "glwe_noise_log2",
                lit.glwe_noise_log2 as usize,
                tuniform_log2(p.glwe_noise_distribution, "glwe noise")? as usize,
            ),
            ("ks_base_log", lit.ks_base_log, p.ks_base_log.0),
            ("ks_level", lit.ks_level, p.ks_level.0),
        ];
        for (field, got, want) in expect {
            if got != want {
                return Err(Error::params(format!(
                    "{field} = {got} differs from the vetted set {} ({want}): security would no \
                     longer follow from it",
                    lit.vetted
                )));
            }
        }
        for (what, b, l) in [
            ("pbs", lit.pbs_base_log, lit.pbs_level),
            ("fine", lit.fine_base_log, lit.fine_level),
        ] {
            if b == 0 || l == 0 || b * l > 64 {
                return Err(Error::params(format!(
                    "{what} decomposition 2^{b} x {l} must have 1 <= base_log * level <= 64"
                )));
            }
        }
        Ok(Self {
            lit,
            vetted_log2_p_fail: p.log2_p_fail,
        })
    }

    /// The literal (for files).
    pub fn literal(&self) -> &ExactParamsLiteral {
        &self.lit
    }

    /// Name of the vetted tfhe-rs set.
    pub fn vetted_name(&self) -> &str {
        &self.lit.vetted
    }

    /// The failure probability tfhe-rs documents for the vetted set (log2, per PBS at its
    /// nominal input noise).
    pub fn vetted_log2_p_fail(&self) -> f64 {
        self.vetted_log2_p_fail
    }

    /// Small LWE dimension n (keyswitch output, bootstrapping input).
    pub fn lwe_dimension(&self) -> LweDimension {
        LweDimension(self.lit.lwe_dimension)
    }

    /// Big LWE dimension k·N (client ciphertexts and PBS outputs).
    pub fn big_lwe_dimension(&self) -> LweDimension {
        self.glwe_dimension()
            .to_equivalent_lwe_dimension(self.polynomial_size())
    }

    /// GLWE dimension k.
    pub fn glwe_dimension(&self) -> GlweDimension {
        GlweDimension(self.lit.glwe_dimension)
    }

    /// Polynomial size N.
    pub fn polynomial_size(&self) -> PolynomialSize {
        PolynomialSize(self.lit.polynomial_size)
    }

    /// log2 of the TUniform bound of the small-LWE noise (keyswitch keys).
    pub fn lwe_noise_log2(&self) -> u32 {
        self.lit.lwe_noise_log2
    }

    /// log2 of the TUniform bound of the GLWE noise (bootstrapping keys, client encryption).
    pub fn glwe_noise_log2(&self) -> u32 {
        self.lit.glwe_noise_log2
    }

    /// The keyswitch decomposition (the vetted one): base log and level count.
    pub fn ks_decomposition(&self) -> (DecompositionBaseLog, DecompositionLevelCount) {
        (
            DecompositionBaseLog(self.lit.ks_base_log),
            DecompositionLevelCount(self.lit.ks_level),
        )
    }

    /// A bootstrapping decomposition: the fine one (`fine`, for outputs that feed a dot
    /// product) or the coarse vetted one.
    pub fn pbs_decomposition(&self, fine: bool) -> (DecompositionBaseLog, DecompositionLevelCount) {
        let l = &self.lit;
        let (b, lv) = if fine {
            (l.fine_base_log, l.fine_level)
        } else {
            (l.pbs_base_log, l.pbs_level)
        };
        (DecompositionBaseLog(b), DecompositionLevelCount(lv))
    }

    /// Bytes of one ciphertext (k·N + 1 words of 8 bytes).
    pub fn ciphertext_bytes(&self) -> usize {
        self.big_lwe_dimension().to_lwe_size().0 * 8
    }

    /// SHA-256 of the canonical description; written in every exact file's envelope.
    pub fn digest(&self) -> [u8; 32] {
        let l = &self.lit;
        let s = format!(
            "hepeft-exact-v1|{}|n={}|k={}|N={}|lwe={}|glwe={}|ks={}x{}|pbs={}x{}|fine={}x{}",
            l.vetted,
            l.lwe_dimension,
            l.glwe_dimension,
            l.polynomial_size,
            l.lwe_noise_log2,
            l.glwe_noise_log2,
            l.ks_base_log,
            l.ks_level,
            l.pbs_base_log,
            l.pbs_level,
            l.fine_base_log,
            l.fine_level
        );
        let mut out = [0u8; 32];
        out.copy_from_slice(&Sha256::digest(s.as_bytes()));
        out
    }

    /// Hex of the first 8 digest bytes, for messages.
    pub fn short_digest(&self) -> String {
        self.digest()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Key sizes in bytes: `(transferred, in_memory)`. Transferred keys are seeded (masks
    /// regenerated from a seed: keyswitch key `k·N·ℓ_ks` bodies, each bootstrapping key
    /// `n·(k+1)·ℓ·N` words); in memory the keyswitch key is `k·N·ℓ_ks·(n+1)` words and each
    /// Fourier bootstrapping key `n·(k+1)²·ℓ·N/2` complex f64 (16 bytes).
    pub fn key_bytes(&self) -> (u64, u64) {
        let l = &self.lit;
        let (n, k, nn) = (
            l.lwe_dimension as u64,
            l.glwe_dimension as u64,
            l.polynomial_size as u64,
        );
        let big = k * nn;
        let levels = (l.pbs_level + l.fine_level) as u64;
        let ks_seeded = big * l.ks_level as u64 * 8;
        let ks_full = big * l.ks_level as u64 * (n + 1) * 8;
        let bsk_seeded = n * (k + 1) * levels * nn * 8;
        let bsk_fourier = n * (k + 1) * (k + 1) * levels * (nn / 2) * 16;
        (ks_seeded + bsk_seeded, ks_full + bsk_fourier)
    }
}
