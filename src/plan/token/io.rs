//! Client side of a token plan: slot patterns, encryption of one sample's token matrices and
//! decryption of the output.

use ndarray::Array2;
use rand::{CryptoRng, RngCore};

use crate::ckks::{Ciphertext, Decryptor, Encoder, Encryptor, Level};
use crate::model::token::TokenAdapter;
use crate::{Error, Result};

use super::{Layout, TokenPlan};

impl TokenPlan {
    /// The slot vector of packed ciphertext `a` of a `width`-column value: slot `b T' + t`
    /// holds `f(t, a c + b)` for `t < rows` and a valid column, else 0.
    pub(super) fn packed_slots(
        &self,
        a: usize,
        width: usize,
        rows: usize,
        f: impl Fn(usize, usize) -> f64,
    ) -> Vec<f64> {
        let c = self.columns_per_ciphertext();
        (0..self.slots)
            .map(|i| {
                let (b, t) = (i / self.period, i % self.period);
                let col = a * c + b;
                if t < rows.min(self.tokens) && col < width {
                    f(t, col)
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The slot vector of one column of `T` tokens: zero-padded to `T'`, repeated.
    pub(super) fn column_slots(&self, column: impl Fn(usize) -> f64) -> Vec<f64> {
        (0..self.slots)
            .map(|i| {
                let t = i % self.period;
                if t < self.tokens {
                    column(t)
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Encrypts one sample: `inputs[i]` is `T x dim_i`; returns the packed ciphertexts of
    /// every input (`ceil(dim_i / c)` each, [`Layout::Packed`]), at
    /// [`TokenPlan::input_level`] and the default scale. Cost: one encoding and encryption
    /// per ciphertext.
    ///
    /// # Errors
    /// Wrong input shapes.
    pub fn encrypt_inputs<G: RngCore + CryptoRng>(
        &self,
        adapter: &TokenAdapter,
        encoder: &Encoder,
        encryptor: &Encryptor,
        inputs: &[Array2<f64>],
        rng: &mut G,
    ) -> Result<Vec<Vec<Ciphertext>>> {
        if inputs.len() != adapter.inputs().len() {
            return Err(Error::dims(
                "token adapter inputs",
                adapter.inputs().len(),
                inputs.len(),
            ));
        }
        let scale = self.scale;
        let mut out = Vec::with_capacity(inputs.len());
        for (spec, x) in adapter.inputs().iter().zip(inputs) {
            if x.dim() != (self.tokens, spec.dim) {
                return Err(Error::model(format!(
                    "input {}: expected {}x{} token features, got {}x{}",
                    spec.name,
                    self.tokens,
                    spec.dim,
                    x.nrows(),
                    x.ncols()
                )));
            }
            let n = self.ciphertexts_for(Layout::Packed, spec.dim);
            let mut cts = Vec::with_capacity(n);
            for a in 0..n {
                let v = self.packed_slots(a, spec.dim, self.tokens, |t, j| x[[t, j]]);
                let pt = encoder.encode(&v, Level(self.input_level), scale)?;
                cts.push(encryptor.encrypt(&pt, rng)?);
            }
            out.push(cts);
        }
        Ok(out)
    }

    /// Decrypts the output columns into the output matrix (`rows x width`: `1 x classes`
    /// after pooling).
    ///
    /// # Errors
    /// A wrong number of columns; decryption errors.
    pub fn decrypt_output(
        &self,
        encoder: &Encoder,
        decryptor: &Decryptor,
        cols: &[Ciphertext],
    ) -> Result<Array2<f64>> {
        let (rows, w) = self.output_shape;
        let layout = self.layouts.last().copied().unwrap_or(Layout::Cols);
        let n = self.ciphertexts_for(layout, w);
        if cols.len() != n {
            return Err(Error::dims(
                "token adapter output ciphertexts",
                n,
                cols.len(),
            ));
        }
        let c = self.columns_per_ciphertext();
        let mut out = Array2::zeros((rows, w));
        for (a, ct) in cols.iter().enumerate() {
            let v = encoder.decode(&decryptor.decrypt(ct)?)?;
            for t in 0..rows {
                match layout {
                    Layout::Cols => out[[t, a]] = v.get(t).copied().unwrap_or(0.0),
                    Layout::Packed => {
                        for b in 0..c {
                            let j = a * c + b;
                            if j < w {
                                out[[t, j]] = v.get(b * self.period + t).copied().unwrap_or(0.0);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}
