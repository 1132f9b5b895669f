//! Shared fixtures for the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use hepeft::ckks::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// TEST-ONLY parameters: N = 2^12 with a 4-level chain. log2(QP) = 270 is far above the
/// 109-bit bound for N = 2^12, so this set is insecure and needs the explicit opt-out.
pub fn insecure_test_params() -> CkksParams {
    let lit = CkksParamsLiteral::new(12, vec![55, 40, 40, 40, 40], vec![55], 40);
    CkksParams::from_literal(lit.with_security(Security::Unchecked)).unwrap()
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Deterministic pseudo-random values in [-1, 1].
pub fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

pub struct Fixture {
    pub params: CkksParams,
    pub sk: SecretKey,
    pub pk: PublicKey,
    pub encoder: Encoder,
}

impl Fixture {
    pub fn new(params: CkksParams, seed: u64) -> Self {
        let mut r = rng(seed);
        let kg = KeyGenerator::new(&params);
        let sk = kg.gen_secret_key(&mut r);
        let pk = kg.gen_public_key(&sk, &mut r).unwrap();
        let encoder = Encoder::new(&params).unwrap();
        Fixture {
            params,
            sk,
            pk,
            encoder,
        }
    }

    pub fn encrypt(&self, v: &[f64], seed: u64) -> Ciphertext {
        let pt = self
            .encoder
            .encode(v, self.params.max_level(), self.params.default_scale())
            .unwrap();
        Encryptor::new(&self.params, EncryptionKey::Public(&self.pk))
            .unwrap()
            .encrypt(&pt, &mut rng(seed))
            .unwrap()
    }

    pub fn decrypt(&self, ct: &Ciphertext) -> Vec<f64> {
        let pt = Decryptor::new(&self.params, &self.sk)
            .unwrap()
            .decrypt(ct)
            .unwrap();
        self.encoder.decode(&pt).unwrap()
    }
}

/// TEST-ONLY deep parameters: N = 2^12 with 8 levels and two special primes (insecure:
/// log2(QP) = 485 for N = 2^12, bound 109).
pub fn deep_test_params() -> CkksParams {
    let lit = CkksParamsLiteral::new(12, [vec![55], vec![40; 8]].concat(), vec![55, 55], 40);
    CkksParams::from_literal(lit.with_security(Security::Unchecked)).unwrap()
}
