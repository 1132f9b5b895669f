//! Ciphertexts of modular integers and the operations on them.
//!
//! Encoding: an integer `a mod 2^p` is the LWE phase `a · 2^(64-p)` (plus noise) in
//! `Z_{2^64}`, under the big LWE key. Additions and products by cleartext integers are exact
//! modulo `2^p` (wrapping `u64` arithmetic) and add no bootstrapping. A programmable
//! bootstrapping ([`Evaluator::pbs`]: keyswitch, centred modulus switch, blind rotation,
//! sample extraction) reads the top [`READ_BITS`] bits of the phase and returns any
//! negacyclic function of them at any output scale, with fresh noise.
//!
//! Size: one concern (the encoding and every operation on it: client encryption and
//! decryption, seeded lists, lookup tables and the `Evaluator`), just over 600 lines since
//! the 6-bit table reads; splitting the client side out would separate the encoding from
//! its inverse.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::{CryptoRng, Rng};
use tfhe::core_crypto::prelude::*;

use super::keys::{glwe_noise, seeder_from, ClientKey, ServerKey};
use super::params::{ExactParams, READ_BITS};
use crate::{Error, Result};

/// One LWE ciphertext under the big key (k·N + 1 words).
#[derive(Clone, Debug, PartialEq)]
pub struct ExactCiphertext {
    pub(crate) ct: LweCiphertextOwned<u64>,
}

impl ExactCiphertext {
    /// Raw words (mask then body).
    pub fn as_words(&self) -> &[u64] {
        self.ct.as_ref()
    }

    /// Rebuilds a ciphertext from raw words.
    ///
    /// # Errors
    /// [`Error::Format`] if the length is not k·N + 1.
    pub fn from_words(params: &ExactParams, words: Vec<u64>) -> Result<Self> {
        if words.len() != params.big_lwe_dimension().to_lwe_size().0 {
            return Err(Error::format(
                "exact ciphertext",
                format!(
                    "expected {} words, found {}",
                    params.big_lwe_dimension().to_lwe_size().0,
                    words.len()
                ),
            ));
        }
        Ok(Self {
            ct: LweCiphertext::from_container(words, CiphertextModulus::new_native()),
        })
    }
}

fn check_log_modulus(p: u32) -> Result<()> {
    if !(1..=62).contains(&p) {
        return Err(Error::params(format!("log modulus {p} must be in 1..=62")));
    }
    Ok(())
}

/// `a mod 2^p` placed at scale `2^(64-p)`.
pub fn encode(a: i64, p: u32) -> u64 {
    (a as u64).wrapping_shl(64 - p)
}

/// Signed representative in `[-2^(p-1), 2^(p-1))` of `x mod 2^p`.
pub fn to_signed(x: u64, p: u32) -> i64 {
    let m = x & ((1u64 << p) - 1);
    if m >> (p - 1) == 1 {
        m as i64 - (1i64 << p)
    } else {
        m as i64
    }
}

impl ClientKey {
    /// Encrypts each `values[i] mod 2^p` under the big key with the GLWE noise distribution
    /// (TUniform 2^17 for the default set). Cost: one (k·N)-term inner product each.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if `p` is not in `1..=62`.
    pub fn encrypt(
        &self,
        values: &[i64],
        p: u32,
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<Vec<ExactCiphertext>> {
        check_log_modulus(p)?;
        let mut seeder = seeder_from(rng);
        let mut gen =
            EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), &mut seeder);
        let big = self.glwe.as_lwe_secret_key();
        let noise = glwe_noise(&self.params);
        Ok(values
            .iter()
            .map(|&v| {
                let mut ct = LweCiphertext::new(
                    0u64,
                    big.lwe_dimension().to_lwe_size(),
                    CiphertextModulus::new_native(),
                );
                encrypt_lwe_ciphertext(&big, &mut ct, Plaintext(encode(v, p)), noise, &mut gen);
                ExactCiphertext { ct }
            })
            .collect())
    }

    /// Like [`encrypt`](Self::encrypt) but seeded: the masks are regenerated from a 128-bit
    /// seed, so a query of `len` values takes `8·len` bytes plus the seed instead of
    /// `8·len·(k·N+1)`. Expand on the server with [`SeededCiphertexts::expand`].
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if `p` is not in `1..=62` or `values` is empty.
    pub fn encrypt_seeded(
        &self,
        values: &[i64],
        p: u32,
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<SeededCiphertexts> {
        check_log_modulus(p)?;
        if values.is_empty() {
            return Err(Error::params("encrypt_seeded needs at least one value"));
        }
        let mut seeder = seeder_from(rng);
        let big = self.glwe.as_lwe_secret_key();
        let mut list = SeededLweCiphertextList::new(
            0u64,
            big.lwe_dimension().to_lwe_size(),
            LweCiphertextCount(values.len()),
            seeder.seed().into(),
            CiphertextModulus::new_native(),
        );
        let encoded =
            PlaintextList::from_container(values.iter().map(|&v| encode(v, p)).collect::<Vec<_>>());
        encrypt_seeded_lwe_ciphertext_list(
            &big,
            &mut list,
            &encoded,
            glwe_noise(&self.params),
            &mut seeder,
        );
        Ok(SeededCiphertexts { list })
    }

    /// Decrypts to signed integers modulo `2^p` (rounding the phase to the nearest multiple
    /// of `2^(64-p)`).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for a bad `p`, [`Error::DimensionMismatch`] for a
    /// ciphertext of the wrong size.
    pub fn decrypt(&self, cts: &[ExactCiphertext], p: u32) -> Result<Vec<i64>> {
        check_log_modulus(p)?;
        cts.iter()
            .map(|c| {
                let phase = self.phase(c)?;
                let rounded = phase.wrapping_add(1u64 << (63 - p)) >> (64 - p);
                Ok(to_signed(rounded, p))
            })
            .collect()
    }

    /// The raw phase `<a, s> - b` (for noise measurements in tests and docs).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a ciphertext of the wrong size.
    pub fn phase(&self, c: &ExactCiphertext) -> Result<u64> {
        let size = self.params.big_lwe_dimension().to_lwe_size();
        if c.ct.lwe_size() != size {
            return Err(Error::dims(
                "exact ciphertext size",
                size.0,
                c.ct.lwe_size().0,
            ));
        }
        Ok(decrypt_lwe_ciphertext(&self.glwe.as_lwe_secret_key(), &c.ct).0)
    }
}

/// Seeded ciphertexts (one body each plus a shared seed), as a client uploads them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SeededCiphertexts {
    pub(crate) list: SeededLweCiphertextListOwned<u64>,
}

impl SeededCiphertexts {
    /// Number of ciphertexts.
    pub fn len(&self) -> usize {
        self.list.lwe_ciphertext_count().0
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Regenerates the masks: full ciphertexts under the big key.
    ///
    /// # Errors
    /// [`Error::Format`] if the ciphertext size does not match `params`.
    pub fn expand(&self, params: &ExactParams) -> Result<Vec<ExactCiphertext>> {
        if self.list.lwe_size() != params.big_lwe_dimension().to_lwe_size() {
            return Err(Error::format(
                "exact seeded ciphertexts",
                "wrong LWE size for these parameters",
            ));
        }
        let full = self.list.clone().decompress_into_lwe_ciphertext_list();
        Ok(full
            .iter()
            .map(|c| ExactCiphertext {
                ct: LweCiphertext::from_container(
                    c.as_ref().to_vec(),
                    CiphertextModulus::new_native(),
                ),
            })
            .collect())
    }
}

/// A lookup table for [`Evaluator::pbs`]: the trivially encrypted GLWE accumulator and which
/// bootstrapping key it is meant for.
#[derive(Clone, Debug)]
pub struct Lut {
    acc: GlweCiphertextOwned<u64>,
    fine: bool,
}

impl Lut {
    /// Table over the `2^(READ_BITS-1)` boxes of the half torus: an input whose top
    /// `READ_BITS` phase bits are `i < 16` gives `out(i)` (a raw `u64` phase), and
    /// `16 + i` gives `-out(i)` (negacyclicity). `fine` selects the fine bootstrapping key
    /// (lower output noise, about twice the cost).
    pub fn new(params: &ExactParams, fine: bool, out: impl Fn(usize) -> u64) -> Self {
        let acc = generate_programmable_bootstrap_glwe_lut(
            params.polynomial_size(),
            params.glwe_dimension().to_glwe_size(),
            1usize << (READ_BITS - 1),
            CiphertextModulus::new_native(),
            1u64,
            |i: u64| out(i as usize),
        );
        Self { acc, fine }
    }
}

/// Server-side evaluator: linear algebra on ciphertexts and programmable bootstrapping.
/// Counts the bootstrappings it performs.
pub struct Evaluator<'a> {
    key: &'a ServerKey,
    pbs_count: AtomicU64,
}

impl<'a> Evaluator<'a> {
    /// An evaluator over `key`.
    pub fn new(key: &'a ServerKey) -> Self {
        Self {
            key,
            pbs_count: AtomicU64::new(0),
        }
    }

    /// The parameters of the key.
    pub fn params(&self) -> &ExactParams {
        &self.key.params
    }

    /// Bootstrappings performed so far.
    pub fn pbs_count(&self) -> u64 {
        self.pbs_count.load(Ordering::Relaxed)
    }

    fn check(&self, c: &ExactCiphertext) -> Result<()> {
        let n = self.key.params.big_lwe_dimension().to_lwe_size().0;
        if c.ct.lwe_size().0 != n {
            return Err(Error::dims("exact ciphertext size", n, c.ct.lwe_size().0));
        }
        Ok(())
    }

    /// `sum_i w_i · x_i + bias_phase` with wrapping arithmetic: exact modulo `2^p` for any
    /// encoding scale. Cost: `len · (k·N + 1)` word multiply-adds, no bootstrapping.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for mismatched lengths or ciphertext sizes.
    pub fn dot(
        &self,
        xs: &[ExactCiphertext],
        w: &[i64],
        bias_phase: u64,
    ) -> Result<ExactCiphertext> {
        if xs.len() != w.len() {
            return Err(Error::dims("exact dot product", xs.len(), w.len()));
        }
        let n = self.key.params.big_lwe_dimension().to_lwe_size().0;
        let mut acc = vec![0u64; n];
        for (x, &wi) in xs.iter().zip(w) {
            self.check(x)?;
            if wi == 0 {
                continue;
            }
            let wu = wi as u64;
            for (a, &c) in acc.iter_mut().zip(x.ct.as_ref()) {
                *a = a.wrapping_add(c.wrapping_mul(wu));
            }
        }
        if let Some(b) = acc.last_mut() {
            *b = b.wrapping_add(bias_phase);
        }
        Ok(ExactCiphertext {
            ct: LweCiphertext::from_container(acc, CiphertextModulus::new_native()),
        })
    }

    /// `c · 2^shift` (wrapping): moves the low bits of the encoded value to the top.
    pub fn shl(&self, c: &ExactCiphertext, shift: u32) -> ExactCiphertext {
        let mut out = c.clone();
        for w in out.ct.as_mut() {
            *w = w.wrapping_shl(shift);
        }
        out
    }

    /// `a - b + phase` (wrapping).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for ciphertexts of the wrong size.
    pub fn sub_add(
        &self,
        a: &ExactCiphertext,
        b: &ExactCiphertext,
        phase: u64,
    ) -> Result<ExactCiphertext> {
        self.check(a)?;
        self.check(b)?;
        let mut out = a.clone();
        lwe_ciphertext_sub_assign(&mut out.ct, &b.ct);
        lwe_ciphertext_plaintext_add_assign(&mut out.ct, Plaintext(phase));
        Ok(out)
    }

    /// Programmable bootstrapping in KS-PBS order: keyswitch to the small key, centred
    /// modulus switch to 2N (as tfhe-rs's shortint does for these sets), blind rotation of
    /// `lut`, sample extraction back under the big key.
    ///
    /// Cost: one keyswitch (k·N·ℓ_ks·(n+1) word operations) and n external products
    /// (ℓ per GGSW row; the fine key costs about twice the coarse one).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a ciphertext of the wrong size.
    pub fn pbs(&self, c: &ExactCiphertext, lut: &Lut) -> Result<ExactCiphertext> {
        let small = self.keyswitch(c)?;
        self.bootstrap_small(&small, lut)
    }

    /// Several lookup tables of the same input: one keyswitch, one blind rotation per
    /// table (each counted as a PBS). Same noise as separate [`pbs`](Self::pbs) calls.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for a ciphertext of the wrong size.
    pub fn pbs_many(&self, c: &ExactCiphertext, luts: &[&Lut]) -> Result<Vec<ExactCiphertext>> {
        let small = self.keyswitch(c)?;
        luts.iter()
            .map(|l| self.bootstrap_small(&small, l))
            .collect()
    }

    fn keyswitch(&self, c: &ExactCiphertext) -> Result<LweCiphertextOwned<u64>> {
        self.check(c)?;
        let mut small = LweCiphertext::new(
            0u64,
            self.key.ksk.output_key_lwe_dimension().to_lwe_size(),
            CiphertextModulus::new_native(),
        );
        keyswitch_lwe_ciphertext(&self.key.ksk, &c.ct, &mut small);
        Ok(small)
    }

    fn bootstrap_small(
        &self,
        small: &LweCiphertextOwned<u64>,
        lut: &Lut,
    ) -> Result<ExactCiphertext> {
        let key = self.key;
        let bsk = if lut.fine { &key.bsk_fine } else { &key.bsk };
        let bsk = bsk.as_ref().ok_or_else(|| {
            Error::params(
                "these exact evaluation keys hold no bootstrapping key (made for a linear probe \
                 with --no-flooding); run `hepeft keygen --backend exact` without --no-flooding",
            )
        })?;
        let log_modulus = bsk.polynomial_size().to_blind_rotation_input_modulus_log();
        let msed = lwe_ciphertext_centered_binary_modulus_switch::<u64, usize, _>(
            small.as_view(),
            log_modulus,
        );
        let mut acc = lut.acc.clone();
        blind_rotate_assign(&msed, &mut acc, bsk);
        let mut out = LweCiphertext::new(
            0u64,
            key.params.big_lwe_dimension().to_lwe_size(),
            CiphertextModulus::new_native(),
        );
        extract_lwe_sample_from_glwe_ciphertext(&acc, &mut out, MonomialDegree(0));
        self.pbs_count.fetch_add(1, Ordering::Relaxed);
        Ok(ExactCiphertext { ct: out })
    }

    /// `a + b` (wrapping).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for ciphertexts of the wrong size.
    pub fn add(&self, a: &ExactCiphertext, b: &ExactCiphertext) -> Result<ExactCiphertext> {
        self.check(a)?;
        self.check(b)?;
        let mut out = a.clone();
        lwe_ciphertext_add_assign(&mut out.ct, &b.ct);
        Ok(out)
    }

    /// Any function of all `READ_BITS` = 5 top phase bits, without padding: for a phase
    /// `v · 2^59 (+ noise)`, `v` in `[0, 32)`, returns `table[v] mod 2^out_p` at scale
    /// `2^(64-out_p)`. One PBS only sees 4 bits plus a negacyclic sign, so this takes three:
    /// a coarse sign PBS clears the top bit (`u = v mod 16`); with `e(u) = T[u] + T[u+16]`
    /// and `o(u) = T[u] - T[u+16]`, a fine PBS of the padded `u` returns `e(u)/2` and a fine
    /// negacyclic PBS of `v` returns `±o(u)/2` (`+` below 16, `-` above), whose sum is
    /// `T[v]`. Halves are exact at scale `2^(63-out_p)`. Output noise: two fine PBS. The sign
    /// and odd bootstrappings share one keyswitch (three blind rotations, two keyswitches).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if `table` does not have 32 entries or `out_p` is not in
    /// `1..=62`.
    pub fn lut5(&self, c: &ExactCiphertext, table: &[i64], out_p: u32) -> Result<ExactCiphertext> {
        let half = 1usize << (READ_BITS - 1);
        if table.len() != 2 * half {
            return Err(Error::params(format!(
                "lut5 needs {} entries, got {}",
                2 * half,
                table.len()
            )));
        }
        check_log_modulus(out_p)?;
        let params = &self.key.params;
        let sign = Lut::new(params, false, |_| (1u64 << 62).wrapping_neg());
        let sh = 63 - out_p;
        let t: Vec<i64> = table.to_vec();
        let even = Lut::new(params, true, |i| {
            let x2 = t[i % half].wrapping_add(t[i % half + half]);
            (x2 as u64).wrapping_shl(sh)
        });
        let odd = Lut::new(params, true, |i| {
            let x2 = t[i % half].wrapping_sub(t[i % half + half]);
            (x2 as u64).wrapping_shl(sh)
        });
        // the sign and odd tables read the same input: one shared keyswitch
        let mut so = self.pbs_many(c, &[&sign, &odd])?.into_iter();
        let (Some(s), Some(o)) = (so.next(), so.next()) else {
            return Err(Error::params("lut5: missing bootstrapping output"));
        };
        let u = self.sub_add(c, &s, (1u64 << 62).wrapping_neg())?;
        let e = self.pbs(&u, &even)?;
        self.add(&e, &o)
    }

    /// A 64-entry table over six bits: for `w` at phase `w · 2^59` (`w` in `[0, 32)`) and
    /// `b` at phase `b · 2^59` (`b` in `{0, 1}`, the bit below `w`), returns
    /// [`lut6_value`]`(table, 2w + b) mod 2^out_p` at scale `2^(64-out_p)`, which is
    /// `table[2w + b]` for every entry but the last (see [`lut6_split`]). Two
    /// [`lut5`](Self::lut5) reads, `T1[w] + T2[(w + b) mod 32]`: six bootstrappings (four
    /// blind rotations on the fine key, two on the coarse one), output noise four fine PBS.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if `table` does not have 64 entries or `out_p` is not in
    /// `1..=62`.
    pub fn lut6(
        &self,
        w: &ExactCiphertext,
        b: &ExactCiphertext,
        table: &[i64],
        out_p: u32,
    ) -> Result<ExactCiphertext> {
        let (t1, t2) = lut6_split(table)?;
        let wb = self.add(w, b)?;
        let lo = self.lut5(w, &t1, out_p)?;
        let hi = self.lut5(&wb, &t2, out_p)?;
        self.add(&lo, &hi)
    }

    /// [`drop_low_nibble`](Self::drop_low_nibble) that also returns the top bit `b` of the
    /// removed nibble, `b = (a >> 3) & 1`, at the scale of the result `2^(64-p+4)`: the
    /// 6th bit a [`lut6`](Self::lut6) reads below the remaining value. One more blind
    /// rotation (coarse key) on the keyswitch the low-part bootstrapping already makes:
    /// three bootstrappings in all. `b` carries one coarse PBS output noise.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if `p < 5` or `p > 62`.
    pub fn drop_low_nibble_keep_top(
        &self,
        c: &ExactCiphertext,
        p: u32,
    ) -> Result<(ExactCiphertext, ExactCiphertext)> {
        if !(READ_BITS..=62).contains(&p) {
            return Err(Error::params(format!(
                "drop_low_nibble_keep_top needs {READ_BITS} <= p <= 62, got p = {p}"
            )));
        }
        let params = &self.key.params;
        let top = self.shl(c, p - READ_BITS);
        let sign = Lut::new(params, false, |_| (1u64 << 62).wrapping_neg());
        let s = self.pbs(&top, &sign)?;
        let low_in = self.sub_add(&top, &s, (1u64 << 62).wrapping_neg())?;
        let scale_shift = 64 - p;
        let low = Lut::new(params, true, move |i| (i as u64) << scale_shift);
        let bit = Lut::new(params, false, move |i| {
            ((i as u64) >> 3) << (scale_shift + 4)
        });
        let mut lb = self.pbs_many(&low_in, &[&low, &bit])?.into_iter();
        let (Some(l), Some(b)) = (lb.next(), lb.next()) else {
            return Err(Error::params(
                "drop_low_nibble_keep_top: missing bootstrapping output",
            ));
        };
        Ok((self.sub_add(c, &l, 0)?, b))
    }

    /// The top [`READ_BITS`] bits of a value held modulo `2^p`, `p = 4J + 5`: returns a
    /// ciphertext of `w = floor(a / 2^(4J)) mod 32` at phase `w · 2^59` plus a centred
    /// *fraction* of at most `2^50` in magnitude (the nibbles of `a` two or more below `w`,
    /// minus [`TOP_DIGITS_CENTRE`]; zero for `J = 1`), ready for [`lut5`](Self::lut5) /
    /// [`lut6`](Self::lut6); with `keep_top`, also the top bit `b` of the last nibble
    /// (bit `4J - 1` of `a`) at scale `2^59`, as
    /// [`drop_low_nibble_keep_top`](Self::drop_low_nibble_keep_top).
    ///
    /// Same digits as `J` calls of [`drop_low_nibble`](Self::drop_low_nibble), but no
    /// bootstrapping output is ever shifted, so every one of them comes from the **coarse**
    /// key and the fine key is left to the tables. Read `k` (`k = 1..J`, then the final read
    /// `J + 1` at `c` itself) takes `c · 2^(p-5-4(k-1))`, where nibble `k` and the bit above
    /// are on top, nibble `k-1` sits in `[2^55, 2^59)` and nibble `k-2` in `[2^51, 2^55)`;
    /// it subtracts those two nibbles as returned by the earlier stages *directly at these
    /// scales* (`d · 2^55`, `d · 2^51`: two coarse blind rotations on one keyswitch per
    /// stage). The nibbles further down stay, centred, as a fraction of at most 1/256 box,
    /// which costs each read about one bit of its failure exponent
    /// ([`noise::pbs_log2_p_fail_offset`](super::noise::pbs_log2_p_fail_offset)).
    ///
    /// Cost: `2J` keyswitches and `3J - 1` coarse blind rotations (one more with
    /// `keep_top`), against `2J` keyswitches and `J` coarse plus `J` fine ones for the
    /// shifted form. Noise: each read sees the shifted input noise plus up to two coarse
    /// outputs; the result carries two (one for `J = 1`).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if `stages > 13` or `p != 4 · stages + 5`.
    pub fn top_digits(
        &self,
        c: &ExactCiphertext,
        p: u32,
        stages: u32,
        keep_top: bool,
    ) -> Result<(ExactCiphertext, Option<ExactCiphertext>)> {
        if stages > 13 || p != 4 * stages + READ_BITS {
            return Err(Error::params(format!(
                "top_digits needs p = 4 · stages + {READ_BITS} <= 57, got p = {p}, stages = {stages}"
            )));
        }
        let params = &self.key.params;
        let sign = Lut::new(params, false, |_| (1u64 << 62).wrapping_neg());
        // box i of the padded read holds the nibble d = i; returned at the scales of the
        // next read (2^55) and of the one after (2^51)
        let near_lut = Lut::new(params, false, |i| (i as u64) << 55);
        let far_lut = Lut::new(params, false, |i| (i as u64) << 51);
        let bit_lut = Lut::new(params, false, |i| ((i as u64) >> 3) << (64 - READ_BITS));
        // read k subtracts nibble k-1 at 2^55 (`near`) and nibble k-2 at 2^51 (`far`), and
        // centres the nibbles below (present from read 3 on)
        let read_input = |k: u32,
                          near: Option<&ExactCiphertext>,
                          far: Option<&ExactCiphertext>|
         -> Result<ExactCiphertext> {
            let mut r = self.shl(c, p - READ_BITS - 4 * k);
            if let Some(d) = near {
                r = self.sub_add(&r, d, 0)?;
            }
            if let Some(d) = far {
                let centre = if k >= 3 {
                    TOP_DIGITS_CENTRE.wrapping_neg()
                } else {
                    0
                };
                r = self.sub_add(&r, d, centre)?;
            }
            Ok(r)
        };
        let (mut near, mut far, mut far_next): (Option<_>, Option<_>, Option<_>) =
            (None, None, None);
        let mut top_bit = None;
        for k in 0..stages {
            let top = read_input(k, near.as_ref(), far.as_ref())?;
            let s = self.pbs(&top, &sign)?;
            let low_in = self.sub_add(&top, &s, (1u64 << 62).wrapping_neg())?;
            let last = k + 1 == stages;
            // the last stage's nibble is read once more (the final read), at 2^55 only
            let mut luts = vec![&near_lut];
            if !last {
                luts.push(&far_lut);
            }
            if keep_top && last {
                luts.push(&bit_lut);
            }
            let mut outs = self.pbs_many(&low_in, &luts)?.into_iter();
            let n = outs
                .next()
                .ok_or_else(|| Error::params("top_digits: missing bootstrapping output"))?;
            let f = if last { None } else { outs.next() };
            if keep_top && last {
                top_bit = outs.next();
            }
            // read k + 1: nibble k at 2^55, nibble k - 1 at 2^51
            near = Some(n);
            far = std::mem::replace(&mut far_next, f);
        }
        let w = read_input(stages, near.as_ref(), far.as_ref())?;
        Ok((w, top_bit))
    }

    /// Removes the low 4 bits of a value held modulo `2^p` (`p >= READ_BITS`): returns a
    /// ciphertext of `floor(a / 16) mod 2^(p-4)` at scale `2^(64-p+4)`, i.e. the same phase
    /// minus `(a mod 16) · 2^(64-p)`. Exact (up to the PBS failure probability).
    ///
    /// Two bootstrappings: `c' = c · 2^(p-5)` puts the low 5 bits on top; a coarse "sign"
    /// PBS returns `∓2^62` by their top bit, which clears it from `c'`; a fine PBS reads the
    /// remaining 4 bits (now padded) and returns `(a mod 16) · 2^(64-p)`, subtracted from `c`.
    /// The coarse output only enters the fine PBS's input, so `c` gains one fine PBS noise.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if `p < 5` or `p > 62`.
    pub fn drop_low_nibble(&self, c: &ExactCiphertext, p: u32) -> Result<ExactCiphertext> {
        self.drop_low_bits(c, p, READ_BITS - 1)
    }

    /// Removes the low `k` bits (`1 <= k <= 4`) of a value held modulo `2^p`
    /// (`k + 1 <= p <= 62`): returns `floor(a / 2^k) mod 2^(p-k)` at scale `2^(64-p+k)`, the
    /// same phase minus `(a mod 2^k) · 2^(64-p)`. As [`drop_low_nibble`](Self::drop_low_nibble)
    /// (which is `k = 4`), with `c · 2^(p-k-1)` putting the low `k + 1` bits on top: they
    /// sit at multiples of `2^(63-k)`, which are box centres for `k <= 4`, so the same two
    /// bootstrappings (coarse sign, fine low part) read them exactly, with the same noise.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if `k` or `p` is out of range.
    pub fn drop_low_bits(&self, c: &ExactCiphertext, p: u32, k: u32) -> Result<ExactCiphertext> {
        if !(1..READ_BITS).contains(&k) || !(k + 1..=62).contains(&p) {
            return Err(Error::params(format!(
                "drop_low_bits needs 1 <= k <= 4 and k + 1 <= p <= 62, got k = {k}, p = {p}"
            )));
        }
        let params = &self.key.params;
        let top = self.shl(c, p - k - 1);
        let sign = Lut::new(params, false, |_| (1u64 << 62).wrapping_neg());
        let s = self.pbs(&top, &sign)?;
        let low_in = self.sub_add(&top, &s, (1u64 << 62).wrapping_neg())?;
        let scale_shift = 64 - p;
        // box i holds the low value u = i >> (4 - k) (values sit at u · 2^(63-k))
        let spread = READ_BITS - 1 - k;
        let low = Lut::new(params, true, move |i| ((i as u64) >> spread) << scale_shift);
        let l = self.pbs(&low_in, &low)?;
        self.sub_add(c, &l, 0)
    }
}

/// What [`Evaluator::top_digits`] subtracts from its reads from the third on, so that the
/// nibbles left below the read (in `[0, 2^51)`) sit within `±2^50` of the box centre.
pub const TOP_DIGITS_CENTRE: u64 = 1 << 50;

/// Splits a 64-entry table into the two 32-entry tables [`Evaluator::lut6`] reads:
/// `T2[0] = 0`, `T2[w + 1] = T2[w] + table[2w + 1] - table[2w]`, `T1[w] = table[2w] - T2[w]`,
/// so that `T1[w] + T2[w + b] = table[2w + b]` for `2w + b < 63`; the last entry becomes
/// `T1[31] + T2[0]` (the wrap of `w + b`), see [`lut6_value`].
///
/// # Errors
/// [`Error::InvalidParameters`] if `table` does not have 64 entries.
pub fn lut6_split(table: &[i64]) -> Result<(Vec<i64>, Vec<i64>)> {
    let n = 1usize << READ_BITS;
    if table.len() != 2 * n {
        return Err(Error::params(format!(
            "lut6 needs {} entries, got {}",
            2 * n,
            table.len()
        )));
    }
    let mut t2 = vec![0i64; n];
    for w in 1..n {
        let d = table[2 * w - 1].wrapping_sub(table[2 * w - 2]);
        t2[w] = t2[w - 1].wrapping_add(d);
    }
    let t1 = (0..n).map(|w| table[2 * w].wrapping_sub(t2[w])).collect();
    Ok((t1, t2))
}

/// What [`Evaluator::lut6`] returns for the 6-bit value `v` (`table[v]` except for
/// `v = 63`, where it is `T1[31] + T2[0]` of [`lut6_split`]); 0 for a table of the wrong
/// length or `v >= 64`.
pub fn lut6_value(table: &[i64], v: usize) -> i64 {
    let Ok((t1, t2)) = lut6_split(table) else {
        return 0;
    };
    let n = t1.len();
    let (w, b) = (v >> 1, v & 1);
    match (t1.get(w), t2.get((w + b) % n)) {
        (Some(a), Some(c)) => a.wrapping_add(*c),
        _ => 0,
    }
}
