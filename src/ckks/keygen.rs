//! Key generation. Every function takes the caller's cryptographic RNG explicitly.

use super::keys::{EvaluationKeys, GaloisKey, PublicKey, RelinKey, SecretKey, SwitchingKey};
use super::params::{CkksParams, SecretDistribution};
use crate::math::poly::{Coeff, Eval, RnsPoly};
use crate::math::sample;
use crate::{Error, Result};
use rand::{CryptoRng, RngCore};

/// The Galois element rotating slots left by `steps` (negative: right): `5^steps mod 2N`.
pub fn galois_element_for_rotation(params: &CkksParams, steps: i64) -> u64 {
    let slots = params.slots() as i64;
    let two_n = 2 * params.n() as u64;
    let k = steps.rem_euclid(slots) as u64;
    let mut g = 1u64;
    let mut base = 5u64;
    let mut e = k;
    while e > 0 {
        if e & 1 == 1 {
            g = g * base % two_n;
        }
        base = base * base % two_n;
        e >>= 1;
    }
    g
}

/// The Galois element of complex conjugation, `2N - 1`.
pub fn galois_element_for_conjugation(params: &CkksParams) -> u64 {
    2 * params.n() as u64 - 1
}

/// Generates every kind of key for one parameter set.
#[derive(Debug, Clone)]
pub struct KeyGenerator {
    params: CkksParams,
}

impl KeyGenerator {
    /// A key generator for `params`.
    pub fn new(params: &CkksParams) -> Self {
        KeyGenerator {
            params: params.clone(),
        }
    }

    /// A fresh secret key. Cost: one NTT per prime.
    pub fn gen_secret_key<G: RngCore + CryptoRng>(&self, rng: &mut G) -> SecretKey {
        let n = self.params.n();
        let mut coeffs = match self.params.secret_distribution() {
            SecretDistribution::Ternary => sample::ternary(rng, n),
            SecretDistribution::SparseTernary { hamming_weight } => {
                sample::sparse_ternary(rng, n, hamming_weight)
            }
        };
        let sk = self.secret_from_coeffs(coeffs.iter().map(|&c| c as i8).collect());
        zeroize::Zeroize::zeroize(&mut coeffs);
        sk
    }

    pub(crate) fn secret_from_coeffs(&self, coeffs: Vec<i8>) -> SecretKey {
        let ring = self.params.ring();
        let wide: Vec<i64> = coeffs.iter().map(|&c| c as i64).collect();
        let eval = RnsPoly::<Coeff>::from_signed(ring, &wide, self.params.max_level().get(), true)
            .into_eval(ring);
        SecretKey {
            coeffs,
            eval,
            digest: self.params.digest(),
        }
    }

    fn check(&self, sk: &SecretKey) -> Result<()> {
        self.params.check_digest("secret key", &sk.digest)
    }

    fn error_poly<G: RngCore + CryptoRng>(
        &self,
        rng: &mut G,
        level: usize,
        extended: bool,
    ) -> RnsPoly<Eval> {
        let ring = self.params.ring();
        let e = sample::gaussian(rng, self.params.n());
        RnsPoly::<Coeff>::from_signed(ring, &e, level, extended).into_eval(ring)
    }

    /// The public key `(-a·s + e, a)` over `Q·P` (so that encryption can divide its noise by
    /// `P`), with `a` expanded from a fresh seed.
    pub fn gen_public_key<G: RngCore + CryptoRng>(
        &self,
        sk: &SecretKey,
        rng: &mut G,
    ) -> Result<PublicKey> {
        self.check(sk)?;
        let ring = self.params.ring();
        let level = self.params.max_level().get();
        let seed = sample::fresh_seed(rng);
        let a = sample::uniform_from_seed(ring, &seed, 0, level, true);
        let mut b = self.error_poly(rng, level, true);
        let mut as_ = a.clone();
        as_.mul_assign(ring, &sk.eval);
        b.sub_assign(ring, &as_);
        Ok(PublicKey {
            b,
            a,
            seed: Some(seed),
            digest: self.params.digest(),
        })
    }

    /// A switching key from `s_from` (evaluation form over `Q·P`) to `sk`.
    fn gen_switching_key<G: RngCore + CryptoRng>(
        &self,
        sk: &SecretKey,
        s_from: &RnsPoly<Eval>,
        rng: &mut G,
    ) -> SwitchingKey {
        let ring = self.params.ring();
        let level = self.params.max_level().get();
        let seed = sample::fresh_seed(rng);
        let ranges = self.params.digits(level);
        let mut bs = Vec::with_capacity(ranges.len());
        let mut as_ = Vec::with_capacity(ranges.len());
        let p_mod_q = self.params.p_mod_q();
        for (j, range) in ranges.iter().enumerate() {
            let a = sample::uniform_from_seed(ring, &seed, j as u64, level, true);
            let mut b = self.error_poly(rng, level, true);
            let mut prod = a.clone();
            prod.mul_assign(ring, &sk.eval);
            b.sub_assign(ring, &prod);
            for i in range.clone() {
                let m = *ring.table(level, i).modulus();
                let w = p_mod_q[i];
                let ws = m.shoup(w);
                let src = s_from.limb(i).to_vec();
                for (x, y) in b.limb_mut(i).iter_mut().zip(src) {
                    *x = m.add(*x, m.mul_shoup(y, w, ws));
                }
            }
            bs.push(b);
            as_.push(a);
        }
        SwitchingKey {
            b: bs,
            a: as_,
            seed: Some(seed),
        }
    }

    /// The relinearization key (switches `s^2` to `s`).
    pub fn gen_relin_key<G: RngCore + CryptoRng>(
        &self,
        sk: &SecretKey,
        rng: &mut G,
    ) -> Result<RelinKey> {
        self.check(sk)?;
        let mut s2 = sk.eval.clone();
        s2.mul_assign(self.params.ring(), &sk.eval);
        let key = self.gen_switching_key(sk, &s2, rng);
        s2.zeroize_words();
        Ok(RelinKey(key))
    }

    /// The Galois key for `X -> X^element` (`element` odd, below 2N).
    pub fn gen_galois_key<G: RngCore + CryptoRng>(
        &self,
        sk: &SecretKey,
        element: u64,
        rng: &mut G,
    ) -> Result<GaloisKey> {
        self.check(sk)?;
        let two_n = 2 * self.params.n() as u64;
        if element % 2 == 0 || element >= two_n {
            return Err(Error::params(format!(
                "Galois element {element} must be odd and below 2N = {two_n}"
            )));
        }
        let perm = self.params.ring().galois_permutation(element);
        let mut s_g = sk.eval.permuted(&perm);
        let key = self.gen_switching_key(sk, &s_g, rng);
        s_g.zeroize_words();
        Ok(GaloisKey { element, key })
    }

    /// The evaluation key set: relinearization key (if `relin`) and one Galois key per
    /// distinct element in `elements` (typed [`GaloisElement`](super::GaloisElement)s, as a
    /// compiled plan lists them, or raw `u64`s).
    pub fn gen_evaluation_keys<G: RngCore + CryptoRng, E: Copy + Into<super::GaloisElement>>(
        &self,
        sk: &SecretKey,
        elements: &[E],
        relin: bool,
        rng: &mut G,
    ) -> Result<EvaluationKeys> {
        let mut keys = EvaluationKeys {
            digest: self.params.digest(),
            ..Default::default()
        };
        if relin {
            keys.relin = Some(self.gen_relin_key(sk, rng)?);
        }
        for g in elements.iter().map(|&e| e.into().get()) {
            if g != 1 && !keys.galois.contains_key(&g) {
                keys.galois.insert(g, self.gen_galois_key(sk, g, rng)?);
            }
        }
        Ok(keys)
    }
}
