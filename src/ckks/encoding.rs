//! The CKKS encoder: the canonical embedding (HEAAN's special FFT) between N/2 complex slots
//! and ring elements at a scale.

use super::ciphertext::Plaintext;
use super::params::CkksParams;
use super::units::Level;
use crate::math::poly::{Coeff, RnsPoly};
use crate::math::rns::CrtReconstructor;
use crate::{Error, Result};
use std::f64::consts::PI;

/// A complex number (the slot type of CKKS).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct C64 {
    /// Real part.
    pub re: f64,
    /// Imaginary part.
    pub im: f64,
}

impl C64 {
    /// `re + i·im`.
    pub const fn new(re: f64, im: f64) -> Self {
        C64 { re, im }
    }
    #[inline(always)]
    fn add(self, o: C64) -> C64 {
        C64::new(self.re + o.re, self.im + o.im)
    }
    #[inline(always)]
    fn sub(self, o: C64) -> C64 {
        C64::new(self.re - o.re, self.im - o.im)
    }
    #[inline(always)]
    fn mul(self, o: C64) -> C64 {
        C64::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }
}

/// Encodes and decodes vectors of up to N/2 slots.
#[derive(Debug, Clone)]
pub struct Encoder {
    params: CkksParams,
    /// `rot_group[j] = 5^j mod 2N`.
    rot_group: Vec<usize>,
    /// `ksi[k] = exp(2πik / 2N)` for k in 0..=2N.
    ksi: Vec<C64>,
    /// CRT reconstructors per level (for decoding).
    crt: Vec<CrtReconstructor>,
}

impl Encoder {
    /// Precomputes the FFT tables. Cost: O(N).
    pub fn new(params: &CkksParams) -> Result<Self> {
        let n = params.n();
        let m = 2 * n;
        let mut rot_group = Vec::with_capacity(n / 2);
        let mut g = 1usize;
        for _ in 0..n / 2 {
            rot_group.push(g);
            g = (g * 5) % m;
        }
        let ksi = (0..=m).map(|k| {
            let a = 2.0 * PI * k as f64 / m as f64;
            C64::new(a.cos(), a.sin())
        });
        let ring = params.ring();
        let qm: Vec<_> = ring.q_tables().iter().map(|t| *t.modulus()).collect();
        let crt = (0..qm.len())
            .map(|l| CrtReconstructor::new(&qm[..=l]))
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            params: params.clone(),
            rot_group,
            ksi: ksi.collect(),
            crt,
        })
    }

    /// Number of slots (N/2).
    pub fn slots(&self) -> usize {
        self.params.slots()
    }

    fn fft_special_inv(&self, vals: &mut [C64]) {
        let size = vals.len();
        let m = 2 * self.params.n();
        let mut len = size;
        while len >= 2 {
            let lenh = len >> 1;
            let lenq = len << 2;
            let gap = m / lenq;
            for i in (0..size).step_by(len) {
                for j in 0..lenh {
                    let idx = (lenq - (self.rot_group[j] % lenq)) * gap;
                    let u = vals[i + j].add(vals[i + j + lenh]);
                    let v = vals[i + j].sub(vals[i + j + lenh]).mul(self.ksi[idx]);
                    vals[i + j] = u;
                    vals[i + j + lenh] = v;
                }
            }
            len >>= 1;
        }
        bit_reverse(vals);
        let inv = 1.0 / size as f64;
        for v in vals.iter_mut() {
            v.re *= inv;
            v.im *= inv;
        }
    }

    fn fft_special(&self, vals: &mut [C64]) {
        let size = vals.len();
        let m = 2 * self.params.n();
        bit_reverse(vals);
        let mut len = 2;
        while len <= size {
            let lenh = len >> 1;
            let lenq = len << 2;
            let gap = m / lenq;
            for i in (0..size).step_by(len) {
                for j in 0..lenh {
                    let idx = (self.rot_group[j] % lenq) * gap;
                    let u = vals[i + j];
                    let v = vals[i + j + lenh].mul(self.ksi[idx]);
                    vals[i + j] = u.add(v);
                    vals[i + j + lenh] = u.sub(v);
                }
            }
            len <<= 1;
        }
    }

    /// Encodes real values (at most N/2; missing slots are zero) at `level` and `scale`.
    /// Errors on NaN/inf, too many values, or coefficients that overflow 2^120.
    pub fn encode(&self, values: &[f64], level: Level, scale: f64) -> Result<Plaintext> {
        let c: Vec<C64> = values.iter().map(|&v| C64::new(v, 0.0)).collect();
        self.encode_complex(&c, level, scale)
    }

    /// Encodes complex values at `level` and `scale`. Cost: one O(N log N) FFT, one NTT per limb.
    pub fn encode_complex(&self, values: &[C64], level: Level, scale: f64) -> Result<Plaintext> {
        self.encode_complex_in(values, level, scale, false)
    }

    /// Like [`Encoder::encode`], with limbs for the special primes as well (`extended`): the
    /// form double-hoisted linear transforms multiply in the basis `Q_l·P`. Such a plaintext
    /// also serves every operation that takes an ordinary one at its level (the special limbs
    /// come after the ciphertext limbs and are ignored there). Cost: K more NTTs.
    pub(crate) fn encode_extended(
        &self,
        values: &[f64],
        level: Level,
        scale: f64,
    ) -> Result<Plaintext> {
        let c: Vec<C64> = values.iter().map(|&v| C64::new(v, 0.0)).collect();
        self.encode_complex_in(&c, level, scale, true)
    }

    fn encode_complex_in(
        &self,
        values: &[C64],
        level: Level,
        scale: f64,
        extended: bool,
    ) -> Result<Plaintext> {
        let slots = self.slots();
        if values.len() > slots {
            return Err(Error::dims("encode: number of values", slots, values.len()));
        }
        if level > self.params.max_level() {
            return Err(Error::InvalidLevel {
                level,
                max: self.params.max_level(),
            });
        }
        if !(scale.is_finite() && scale >= 1.0) {
            return Err(Error::InvalidValue {
                context: "encode".into(),
                reason: format!("scale {scale} must be finite and >= 1"),
            });
        }
        if let Some(i) = values
            .iter()
            .position(|v| !v.re.is_finite() || !v.im.is_finite())
        {
            return Err(Error::InvalidValue {
                context: "encode".into(),
                reason: format!("slot {i} is NaN or infinite"),
            });
        }
        let mut vals = vec![C64::default(); slots];
        vals[..values.len()].copy_from_slice(values);
        self.fft_special_inv(&mut vals);
        let n = self.params.n();
        let mut coeffs = vec![0i128; n];
        let limit = 2f64.powi(120);
        for (i, v) in vals.iter().enumerate() {
            let re = (v.re * scale).round();
            let im = (v.im * scale).round();
            if re.abs() >= limit || im.abs() >= limit {
                return Err(Error::InvalidValue {
                    context: "encode".into(),
                    reason: format!("value times scale 2^{:.1} overflows", scale.log2()),
                });
            }
            coeffs[i] = re as i128;
            coeffs[i + slots] = im as i128;
        }
        let ring = self.params.ring();
        let poly = RnsPoly::<Coeff>::from_signed_i128_in(ring, &coeffs, level.get(), extended)
            .into_eval(ring);
        Ok(Plaintext::new(poly, scale, self.params.digest()))
    }

    /// Decodes a plaintext to complex slots. Cost: one inverse NTT per limb, an O(level^2)
    /// CRT per coefficient, one FFT.
    pub fn decode_complex(&self, pt: &Plaintext) -> Result<Vec<C64>> {
        self.params.check_digest("plaintext", &pt.params_digest())?;
        let level = pt.level().get();
        let ring = self.params.ring();
        let coeff = pt.poly().clone().into_coeff(ring);
        let n = self.params.n();
        let slots = self.slots();
        let crt = &self.crt[level];
        let mut residues = vec![0u64; level + 1];
        let mut value = |j: usize| {
            for (i, r) in residues.iter_mut().enumerate() {
                *r = coeff.limb(i)[j];
            }
            crt.reconstruct(&residues)
        };
        let inv_scale = 1.0 / pt.scale();
        let mut vals: Vec<C64> = (0..slots)
            .map(|j| C64::new(value(j) * inv_scale, value(j + slots) * inv_scale))
            .collect();
        debug_assert_eq!(2 * slots, n);
        self.fft_special(&mut vals);
        Ok(vals)
    }

    /// Decodes the real parts of the slots.
    pub fn decode(&self, pt: &Plaintext) -> Result<Vec<f64>> {
        Ok(self.decode_complex(pt)?.into_iter().map(|c| c.re).collect())
    }
}

fn bit_reverse(vals: &mut [C64]) {
    let n = vals.len();
    let mut j = 0usize;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j ^= bit;
        if i < j {
            vals.swap(i, j);
        }
    }
}
