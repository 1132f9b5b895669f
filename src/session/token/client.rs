//! The client side for token adapters: keys ([`TokenKeys`]), encryption of token matrices
//! into queries and decryption of results ([`TokenClient`]).

use ndarray::Array2;
use rand::{CryptoRng, RngCore};

use crate::ckks::{
    Ciphertext, Decryptor, Encoder, EncryptionKey, Encryptor, EvaluationKeys, KeyGenerator,
    PublicKey, SecretKey,
};
use crate::io::binding::{Binding, KeySetId, Role};
use crate::session::message::{Query, QueryResult};
use crate::{Error, Result};

use super::keydir::TokenKeyDir;
use super::TokenModel;

/// Fresh keys of a token model: secret, public, and exactly the Galois and relinearization
/// keys its plan needs (the evaluation keys carry the public key).
pub struct TokenKeys {
    /// Secret key (never sent).
    pub secret: SecretKey,
    /// Public key.
    pub public: PublicKey,
    /// Evaluation keys (uploaded).
    pub eval: EvaluationKeys,
    /// Key set and token structure digest.
    pub binding: Binding,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("secret", &"<redacted>")
            .field("key_set", &self.binding.key_set)
            .finish()
    }
}

impl TokenKeys {
    /// Generates the keys for `model`. Costs one switching key per Galois element plus the
    /// relinearization key.
    ///
    /// # Errors
    /// Key generation errors.
    pub fn generate<G: RngCore + CryptoRng>(model: &TokenModel, rng: &mut G) -> Result<TokenKeys> {
        let params = &model.params;
        let kg = KeyGenerator::new(params);
        let secret = kg.gen_secret_key(rng);
        let public = kg.gen_public_key(&secret, rng)?;
        let eval = kg
            .gen_evaluation_keys(
                &secret,
                &model.galois_elements(),
                model.plan.needs_relin(),
                rng,
            )?
            .with_public_key(public.clone())?;
        let binding = Binding::keys(
            crate::session::key_set_id(params, &public)?,
            model.structure,
        );
        Ok(TokenKeys {
            secret,
            public,
            eval,
            binding,
        })
    }
}

/// The client of one token model, holding the public key (encrypts) and/or the secret key
/// (encrypts with seeded ciphertexts, decrypts).
pub struct TokenClient {
    model: TokenModel,
    encoder: Encoder,
    key_set: KeySetId,
    public: Option<PublicKey>,
    secret: Option<(SecretKey, Binding)>,
}

impl std::fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenClient")
            .field("key_set", &self.key_set)
            .field("public", &self.public.is_some())
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl TokenClient {
    /// A client holding the secret and public keys of `keys`; returns it with the
    /// evaluation keys (for the server).
    ///
    /// # Errors
    /// Encoder construction errors.
    pub fn from_keys(model: TokenModel, keys: TokenKeys) -> Result<(TokenClient, EvaluationKeys)> {
        let client = TokenClient {
            encoder: Encoder::new(&model.params)?,
            key_set: keys.binding.key_set,
            public: Some(keys.public),
            secret: Some((keys.secret, keys.binding)),
            model,
        };
        Ok((client, keys.eval))
    }

    /// An encrypt-only client from a token key directory: checks `model` against
    /// `plan.json` and reads the public key.
    ///
    /// # Errors
    /// As [`TokenKeyDir::check_model`] and [`TokenKeyDir::public_key`].
    pub fn for_encryption(
        dir: &TokenKeyDir,
        model: TokenModel,
        source: &std::path::Path,
    ) -> Result<TokenClient> {
        dir.check_model(&model, source)?;
        let (pk, key_set) = dir.public_key()?;
        Ok(TokenClient {
            encoder: Encoder::new(&model.params)?,
            key_set,
            public: Some(pk),
            secret: None,
            model,
        })
    }

    /// A decrypt-only client from a token key directory: checks `model` against `plan.json`
    /// and reads the secret key.
    ///
    /// # Errors
    /// As [`TokenKeyDir::check_model`] and [`TokenKeyDir::secret_key`].
    pub fn for_decryption(
        dir: &TokenKeyDir,
        model: TokenModel,
        source: &std::path::Path,
    ) -> Result<TokenClient> {
        dir.check_model(&model, source)?;
        let (sk, binding) = dir.secret_key(&model)?;
        Ok(TokenClient {
            encoder: Encoder::new(&model.params)?,
            key_set: binding.key_set,
            public: None,
            secret: Some((sk, binding)),
            model,
        })
    }

    /// The model.
    pub fn model(&self) -> &TokenModel {
        &self.model
    }

    /// Encrypts `samples` (each: one `T x d_i` matrix per input, in the adapter's order)
    /// into one query per sample, bound to this key set and model. Under the secret key
    /// when held (seeded ciphertexts), else the public key. Cost per sample: one encoding
    /// and encryption per packed input ciphertext ([`TokenModel::query_ciphertexts`]).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] for no sample; shape errors of
    /// [`TokenPlan::encrypt_inputs`](crate::plan::token::TokenPlan::encrypt_inputs) naming
    /// the input; [`Error::MissingKey`] without a key.
    pub fn encrypt_samples<G: RngCore + CryptoRng>(
        &self,
        samples: &[Vec<Array2<f64>>],
        rng: &mut G,
    ) -> Result<Query> {
        if samples.is_empty() {
            return Err(Error::dims("samples (at least one)", 1, 0));
        }
        let key = match (&self.secret, &self.public) {
            (Some((sk, _)), _) => EncryptionKey::Secret(sk),
            (None, Some(pk)) => EncryptionKey::Public(pk),
            (None, None) => {
                return Err(Error::MissingKey {
                    what: "public or secret key to encrypt with".into(),
                })
            }
        };
        let enc = Encryptor::new(&self.model.params, key)?;
        let mut items: Vec<Ciphertext> =
            Vec::with_capacity(samples.len() * self.model.query_ciphertexts());
        for (s, x) in samples.iter().enumerate() {
            let cts = self
                .model
                .plan
                .encrypt_inputs(&self.model.adapter, &self.encoder, &enc, x, rng)
                .map_err(|e| Error::InvalidValue {
                    context: format!("token sample {s}"),
                    reason: e.to_string(),
                })?;
            items.extend(cts.into_iter().flatten());
        }
        Ok(Query {
            items,
            binding: self.model.query_binding(self.key_set, samples.len()),
        })
    }

    /// Checks a result (bound as a result to this key set and model, one sample per query,
    /// every ciphertext at the output level) and decrypts it into `samples x output_dim`.
    /// Cost: one decryption and decoding per ciphertext.
    ///
    /// # Errors
    /// [`Error::MissingKey`] without the secret key; [`Error::Mismatch`] or
    /// [`Error::DimensionMismatch`] from the checks.
    pub fn decrypt(&self, result: &QueryResult) -> Result<Array2<f64>> {
        let (sk, _) = self.secret.as_ref().ok_or_else(|| Error::MissingKey {
            what: "secret key (this client can only encrypt)".into(),
        })?;
        let per = self.model.result_ciphertexts();
        self.model.check_binding(
            &result.binding,
            Role::Result,
            self.key_set,
            per,
            result.items.len(),
        )?;
        let floor = self.model.params.output_floor_level();
        if let Some((i, c)) = result
            .items
            .iter()
            .enumerate()
            .find(|(_, c)| c.level() != floor)
        {
            return Err(Error::mismatch(
                "level",
                format!(
                    "result ciphertext {i} is at level {}, a sanitized result is at level {floor} (is this an \
                     unevaluated query?)",
                    c.level()
                ),
            ));
        }
        let dec = Decryptor::new(&self.model.params, sk)?;
        let samples = result.binding.queries.len();
        let width = self.model.output_dim();
        let mut out = Array2::zeros((samples, width));
        for (s, cts) in result.items.chunks(per.max(1)).enumerate() {
            let m = self.model.plan.decrypt_output(&self.encoder, &dec, cts)?;
            for (j, v) in m.iter().enumerate().take(width) {
                out[[s, j]] = *v;
            }
        }
        Ok(out)
    }
}
