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

/// Runs `plan` encrypted on `inputs` (one `samples x dim` matrix per adapter input) and
/// returns the decrypted outputs, `samples x outputs`: keys from seeds `seed + 1` (secret and
/// public) and `seed + 2` (evaluation), one query per sample in the latency layout (seed
/// `seed + 10 + s`) or one query for all samples in the batch layout (seed `seed + 10`).
pub fn run_plan_encrypted(
    plan: &hepeft::plan::Plan,
    inputs: &[ndarray::Array2<f64>],
    seed: u64,
) -> ndarray::Array2<f64> {
    run_plan_sanitized(plan, inputs, seed, None)
}

/// [`run_plan_encrypted`], with every result passed through [`hepeft::plan::Plan::sanitize`]
/// under `sanitize` (mask, drop to the output floor, re-randomize, flood) when given.
#[allow(dead_code)]
pub fn run_plan_sanitized(
    plan: &hepeft::plan::Plan,
    inputs: &[ndarray::Array2<f64>],
    seed: u64,
    sanitize: Option<&hepeft::plan::SanitizeConfig>,
) -> ndarray::Array2<f64> {
    use hepeft::plan::Mode;
    use ndarray::{ArrayView2, Axis};
    let p = plan.params();
    let samples = inputs[0].nrows();
    let f = Fixture::new(p.clone(), seed + 1);
    let keys = KeyGenerator::new(p)
        .gen_evaluation_keys(
            &f.sk,
            &plan.galois_elements(),
            plan.needs_relin(),
            &mut rng(seed + 2),
        )
        .unwrap();
    let ev = Evaluator::with_keys(p, std::sync::Arc::new(keys)).unwrap();
    let prepared = plan.prepare().unwrap();
    let dec = Decryptor::new(p, &f.sk).unwrap();
    let pk = EncryptionKey::Public(&f.pk);
    match plan.options().mode {
        Mode::Latency => {
            let mut got = ndarray::Array2::zeros((samples, plan.output_dim()));
            for s in 0..samples {
                let rows: Vec<ndarray::Array2<f64>> =
                    inputs.iter().map(|a| a.select(Axis(0), &[s])).collect();
                let one: Vec<ArrayView2<f64>> = rows.iter().map(|a| a.view()).collect();
                let q = plan
                    .encrypt_query(&f.encoder, pk, &one, &mut rng(seed + 10 + s as u64))
                    .unwrap();
                let mut out = prepared.evaluate(&ev, &q).unwrap();
                if let Some(cfg) = sanitize {
                    out = plan
                        .sanitize(&ev, out, &f.pk, cfg, &mut rng(seed + 5000 + s as u64))
                        .unwrap()
                        .0;
                }
                let row = plan.decrypt_result(&f.encoder, &dec, &out, 1).unwrap();
                got.row_mut(s).assign(&row.row(0));
            }
            got
        }
        Mode::Batch => {
            let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
            let q = plan
                .encrypt_query(&f.encoder, pk, &views, &mut rng(seed + 10))
                .unwrap();
            let mut out = prepared.evaluate(&ev, &q).unwrap();
            if let Some(cfg) = sanitize {
                out = plan
                    .sanitize(&ev, out, &f.pk, cfg, &mut rng(seed + 4999))
                    .unwrap()
                    .0;
            }
            plan.decrypt_result(&f.encoder, &dec, &out, samples)
                .unwrap()
        }
    }
}
