//! Client and server keys of the exact backend.
//!
//! The client holds a binary small LWE key (dimension n) and a binary GLWE key (k, N) whose
//! flattening is the *big* LWE key (dimension k·N) every ciphertext of this backend is
//! encrypted under. The server holds a keyswitching key (big -> small) and two bootstrapping
//! keys (small -> GLWE) that differ only in their gadget decomposition: the vetted coarse
//! one and a fine one whose output noise is lower (see [`noise`](super::noise)).
//!
//! Randomness: every key is drawn from tfhe-rs's AES-CTR CSPRNG, seeded with 128-bit seeds
//! taken from the caller's [`CryptoRng`] (one seed for the secret-key generator, one for the
//! tfhe [`DeterministicSeeder`] that derives the mask and noise seeds). Given a
//! ChaCha20 RNG seeded from the OS, the keys are as random as tfhe's own `new_seeder()`
//! would make them; given a fixed seed (tests) they are reproducible.

use std::fmt;

use rand::{CryptoRng, Rng};
use tfhe::core_crypto::commons::generators::DeterministicSeeder;
use tfhe::core_crypto::commons::math::random::DynamicDistribution;
use tfhe::core_crypto::prelude::*;
use tfhe_csprng::seeders::Seed;
use zeroize::Zeroize;

use super::params::ExactParams;
use crate::{Error, Result};

pub(crate) fn seeder_from(
    rng: &mut (impl Rng + CryptoRng),
) -> DeterministicSeeder<DefaultRandomGenerator> {
    DeterministicSeeder::<DefaultRandomGenerator>::new(Seed(rng.random::<u128>()))
}

pub(crate) fn glwe_noise(p: &ExactParams) -> DynamicDistribution<u64> {
    DynamicDistribution::new_t_uniform(p.glwe_noise_log2())
}

pub(crate) fn lwe_noise(p: &ExactParams) -> DynamicDistribution<u64> {
    DynamicDistribution::new_t_uniform(p.lwe_noise_log2())
}

/// The client's secret keys. Zeroized on drop; `Debug` never prints key material.
pub struct ClientKey {
    pub(crate) params: ExactParams,
    pub(crate) small: LweSecretKeyOwned<u64>,
    pub(crate) glwe: GlweSecretKeyOwned<u64>,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientKey {{ params: {}, <redacted> }}",
            self.params.short_digest()
        )
    }
}

impl Drop for ClientKey {
    fn drop(&mut self) {
        self.small.as_mut().zeroize();
        self.glwe.as_mut().zeroize();
    }
}

/// Evaluation keys as sent to the server: seeded (masks are regenerated from a seed), about
/// `n+1` times smaller than expanded. [`expand`](Self::expand) gives the [`ServerKey`].
///
/// The two bootstrapping keys (about 30 and 60 MB seeded for the default set) are absent
/// from a key set made for a plan without any bootstrapping whose results are not
/// sanitized (a linear probe with flooding off): such a set is the keyswitching key only
/// (64 KiB). The client's compact public key travels with the keys:
/// the server needs it to sanitize results ([`Evaluator::sanitize`](super::Evaluator)).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CompressedServerKey {
    pub(crate) ksk: SeededLweKeyswitchKeyOwned<u64>,
    pub(crate) bsk: Option<SeededLweBootstrapKeyOwned<u64>>,
    pub(crate) bsk_fine: Option<SeededLweBootstrapKeyOwned<u64>>,
    pub(crate) cpk: Option<LweCompactPublicKeyOwned<u64>>,
}

/// Expanded evaluation keys: keyswitching key, the two Fourier bootstrapping keys (absent
/// for a key set without bootstrapping, see [`CompressedServerKey`]) and the client's
/// compact public key when the set carries one.
pub struct ServerKey {
    pub(crate) params: ExactParams,
    pub(crate) ksk: LweKeyswitchKeyOwned<u64>,
    pub(crate) bsk: Option<FourierLweBootstrapKeyOwned>,
    pub(crate) bsk_fine: Option<FourierLweBootstrapKeyOwned>,
    pub(crate) cpk: Option<super::ExactPublicKey>,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerKey {{ params: {} }}", self.params.short_digest())
    }
}

/// Generates a client key and the matching (seeded) evaluation keys.
///
/// Cost: one keyswitching key (k·N·ℓ_ks encryptions under n) and two bootstrapping keys
/// (n GGSW encryptions each), about 2-4 s on one core for the default set.
///
/// # Errors
/// None at present; the signature leaves room for parameter checks.
pub fn generate_keys(
    params: &ExactParams,
    rng: &mut (impl Rng + CryptoRng),
) -> Result<(ClientKey, CompressedServerKey)> {
    generate_key_set(params, KeySet::Full, rng)
}

/// What a key set holds (see [`generate_key_set`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySet {
    /// Keyswitching key and both bootstrapping keys, no public key (what
    /// [`generate_keys`] makes: results cannot be sanitized).
    Full,
    /// Keyswitching key, both bootstrapping keys and the client's compact public key: every
    /// plan, results sanitized (the default of `hepeft keygen --backend exact`).
    Sanitizing,
    /// Keyswitching key only (64 KiB for the default set), no bootstrapping key and no
    /// public key: only plans without any bootstrapping (linear probes) whose results are
    /// not sanitized. About 1/1400 of the full set.
    NoBootstrapping,
}

/// Generates a client key and the seeded evaluation keys `set` asks for.
///
/// Cost: one keyswitching key (k·N·ℓ_ks encryptions under n), two bootstrapping keys
/// (n GGSW encryptions each) unless `set` is [`KeySet::NoBootstrapping`], one compact public
/// key (a negacyclic product of degree k·N) unless `set` is [`KeySet::Full`].
///
/// # Errors
/// [`Error::InvalidParameters`] if a public key is asked for and the big key's dimension
/// is not a power of two.
pub fn generate_key_set(
    params: &ExactParams,
    set: KeySet,
    rng: &mut (impl Rng + CryptoRng),
) -> Result<(ClientKey, CompressedServerKey)> {
    let mut secret_gen =
        SecretRandomGenerator::<DefaultRandomGenerator>::new(Seed(rng.random::<u128>()));
    let mut seeder = seeder_from(rng);
    let small = LweSecretKey::generate_new_binary(params.lwe_dimension(), &mut secret_gen);
    let glwe = GlweSecretKey::generate_new_binary(
        params.glwe_dimension(),
        params.polynomial_size(),
        &mut secret_gen,
    );
    let (ks_base_log, ks_level) = params.ks_decomposition();
    let modulus = CiphertextModulus::new_native();
    let ksk = allocate_and_generate_new_seeded_lwe_keyswitch_key(
        &glwe.as_lwe_secret_key(),
        &small,
        ks_base_log,
        ks_level,
        lwe_noise(params),
        modulus,
        &mut seeder,
    );
    let bootstrapping = set != KeySet::NoBootstrapping;
    let (pbs_base_log, pbs_level) = params.pbs_decomposition(false);
    let bsk = bootstrapping.then(|| {
        par_allocate_and_generate_new_seeded_lwe_bootstrap_key(
            &small,
            &glwe,
            pbs_base_log,
            pbs_level,
            glwe_noise(params),
            modulus,
            &mut seeder,
        )
    });
    let (fine_base_log, fine_level) = params.pbs_decomposition(true);
    let bsk_fine = bootstrapping.then(|| {
        par_allocate_and_generate_new_seeded_lwe_bootstrap_key(
            &small,
            &glwe,
            fine_base_log,
            fine_level,
            glwe_noise(params),
            modulus,
            &mut seeder,
        )
    });
    let ck = ClientKey {
        params: params.clone(),
        small,
        glwe,
    };
    let cpk = if set == KeySet::Sanitizing {
        Some(ck.public_key(rng)?.cpk)
    } else {
        None
    };
    Ok((
        ck,
        CompressedServerKey {
            ksk,
            bsk,
            bsk_fine,
            cpk,
        },
    ))
}

impl ClientKey {
    /// The parameters the key was made for.
    pub fn params(&self) -> &ExactParams {
        &self.params
    }

    /// Rebuilds a client key from its raw binary coefficients (file loading).
    ///
    /// # Errors
    /// [`Error::Format`] if a length or a coefficient (not 0/1) is wrong.
    pub fn from_raw(params: &ExactParams, small: Vec<u64>, glwe: Vec<u64>) -> Result<Self> {
        if small.len() != params.lwe_dimension().0 || glwe.len() != params.big_lwe_dimension().0 {
            return Err(Error::format(
                "exact secret key",
                "wrong key length for these parameters",
            ));
        }
        if small.iter().chain(glwe.iter()).any(|&b| b > 1) {
            return Err(Error::format(
                "exact secret key",
                "coefficients must be binary",
            ));
        }
        Ok(Self {
            params: params.clone(),
            small: LweSecretKey::from_container(small),
            glwe: GlweSecretKey::from_container(glwe, params.polynomial_size()),
        })
    }

    /// Raw coefficients `(small, glwe)` for serialization. Secret: handle with care.
    pub fn raw(&self) -> (&[u64], &[u64]) {
        (self.small.as_ref(), self.glwe.as_ref())
    }
}

impl CompressedServerKey {
    /// Checks that the key's shapes match `params`.
    ///
    /// # Errors
    /// [`Error::ParameterMismatch`] naming the first differing dimension.
    pub fn check(&self, params: &ExactParams) -> Result<()> {
        // (what, found, expected): each pair compared as the same tfhe-rs newtype, then
        // listed as integers for the message.
        let (ks_base_log, ks_level) = params.ks_decomposition();
        let checks: [(String, usize, usize); 4] = [
            (
                "keyswitch input dimension".to_string(),
                self.ksk.input_key_lwe_dimension().0,
                params.big_lwe_dimension().0,
            ),
            (
                "keyswitch output dimension".to_string(),
                self.ksk.output_key_lwe_dimension().0,
                params.lwe_dimension().0,
            ),
            (
                "keyswitch base log".to_string(),
                self.ksk.decomposition_base_log().0,
                ks_base_log.0,
            ),
            (
                "keyswitch levels".to_string(),
                self.ksk.decomposition_level_count().0,
                ks_level.0,
            ),
        ];
        let mut checks = checks.to_vec();
        for (name, bsk, fine) in [
            ("bsk", &self.bsk, false),
            ("fine bsk", &self.bsk_fine, true),
        ] {
            let (base_log, level) = params.pbs_decomposition(fine);
            if let Some(bsk) = bsk {
                checks.extend([
                    (
                        format!("{name} input dimension"),
                        bsk.input_lwe_dimension().0,
                        params.lwe_dimension().0,
                    ),
                    (
                        format!("{name} polynomial size"),
                        bsk.polynomial_size().0,
                        params.polynomial_size().0,
                    ),
                    (
                        format!("{name} glwe size"),
                        bsk.glwe_size().0,
                        params.glwe_dimension().to_glwe_size().0,
                    ),
                    (
                        format!("{name} base log"),
                        bsk.decomposition_base_log().0,
                        base_log.0,
                    ),
                    (
                        format!("{name} levels"),
                        bsk.decomposition_level_count().0,
                        level.0,
                    ),
                ]);
            }
        }
        if self.bsk.is_some() != self.bsk_fine.is_some() {
            return Err(Error::format(
                "exact evaluation keys",
                "holds one bootstrapping key of two",
            ));
        }
        if let Some(cpk) = &self.cpk {
            checks.push((
                "public key dimension".to_string(),
                cpk.lwe_dimension().0,
                params.big_lwe_dimension().0,
            ));
        }
        for (what, found, expected) in checks {
            if found != expected {
                return Err(Error::ParameterMismatch {
                    what: format!("exact evaluation key ({what})"),
                    expected: expected.to_string(),
                    found: found.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Bytes of the seeded key material (what travels to the server).
    pub fn transfer_bytes(&self) -> u64 {
        let bsk = |b: &Option<SeededLweBootstrapKeyOwned<u64>>| {
            b.as_ref().map_or(0, |b| b.as_ref().len())
        };
        8 * (self.ksk.as_ref().len()
            + bsk(&self.bsk)
            + bsk(&self.bsk_fine)
            + self.cpk.as_ref().map_or(0, |c| c.as_ref().len())) as u64
    }

    /// Whether the set holds the bootstrapping keys (see [`KeySet`]).
    pub fn has_bootstrapping(&self) -> bool {
        self.bsk.is_some() && self.bsk_fine.is_some()
    }

    /// The client's compact public key, if the set carries one (needed to sanitize).
    pub fn public_key(&self) -> Option<super::ExactPublicKey> {
        self.cpk.clone().map(|cpk| super::ExactPublicKey { cpk })
    }

    /// Regenerates the masks and converts the bootstrapping keys to the Fourier domain.
    ///
    /// Cost: about 1-2 s (mask regeneration and 2·n·(k+1)·ℓ FFTs), parallel with rayon.
    ///
    /// # Errors
    /// [`Error::ParameterMismatch`] if the key does not match `params`.
    pub fn expand(&self, params: &ExactParams) -> Result<ServerKey> {
        self.check(params)?;
        let ksk = self.ksk.as_view().decompress_into_lwe_keyswitch_key();
        let to_fourier = |seeded: &SeededLweBootstrapKeyOwned<u64>| {
            let std_bsk = seeded.as_view().par_decompress_into_lwe_bootstrap_key();
            let mut f = FourierLweBootstrapKey::new(
                std_bsk.input_lwe_dimension(),
                std_bsk.glwe_size(),
                std_bsk.polynomial_size(),
                std_bsk.decomposition_base_log(),
                std_bsk.decomposition_level_count(),
            );
            par_convert_standard_lwe_bootstrap_key_to_fourier(&std_bsk, &mut f);
            f
        };
        Ok(ServerKey {
            params: params.clone(),
            ksk,
            bsk: self.bsk.as_ref().map(to_fourier),
            bsk_fine: self.bsk_fine.as_ref().map(to_fourier),
            cpk: self.public_key(),
        })
    }
}

impl ServerKey {
    /// The parameters the key was made for.
    pub fn params(&self) -> &ExactParams {
        &self.params
    }

    /// Bytes held in memory (keyswitching key words + Fourier coefficients).
    pub fn memory_bytes(&self) -> u64 {
        let f = |b: &Option<FourierLweBootstrapKeyOwned>| {
            b.as_ref().map_or(0, |b| b.as_view().data().len())
        };
        8 * self.ksk.as_ref().len() as u64
            + 16 * (f(&self.bsk) + f(&self.bsk_fine)) as u64
            + self.cpk.as_ref().map_or(0, |c| c.size_bytes())
    }

    /// Whether the set holds the bootstrapping keys.
    pub fn has_bootstrapping(&self) -> bool {
        self.bsk.is_some() && self.bsk_fine.is_some()
    }

    /// The client's compact public key, if the set carries one (needed to sanitize).
    pub fn public_key(&self) -> Option<&super::ExactPublicKey> {
        self.cpk.as_ref()
    }
}
