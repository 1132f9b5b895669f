//! The client side of the protocol: keys for a plan ([`ClientKeys`]), encrypting samples
//! into queries and decrypting results ([`Client`], or the free functions
//! [`encrypt_samples`] and [`decrypt_queries`] for callers that hold the keys elsewhere).
//!
//! ```no_run
//! # fn demo(plan: hepeft::plan::Plan, x: ndarray::Array2<f64>) -> hepeft::Result<()> {
//! use hepeft::session::{Client, Role};
//! let mut rng = hepeft::session::os_rng()?;
//! let client = Client::keygen(plan, &mut rng)?; // secret, public and evaluation keys
//! let eval_keys = client.eval_keys_bytes()?; // send to the server once
//! let query = client.encrypt_samples(&[x.view()], &mut rng)?;
//! let bytes = query.to_bytes(client.params())?; // send to the server
//! # let answer: Vec<u8> = bytes;
//! let result = hepeft::session::QueryResult::from_bytes(client.params(), &answer, Role::Result)?;
//! let logits = client.decrypt(&result)?; // samples x output_dim
//! # let _ = (eval_keys, logits); Ok(()) }
//! ```

use std::path::Path;

use ndarray::{Array2, ArrayView2, Axis, Slice};
use rand::{CryptoRng, RngCore};

use crate::ckks::{
    load, load_bound, save, save_bound, to_bytes_bound, Ciphertext, CkksParams, Decryptor, Encoder,
    EncryptionKey, EvaluationKeys, KeyGenerator, PublicKey, SecretKey,
};
use crate::io::binding::{Binding, KeySetId};
use crate::plan::Plan;
use crate::{Error, Result};

use super::keydir::{KeyDir, EVAL_KEYS, PUBLIC_KEY, SECRET_KEY};
use super::message::{Query, QueryResult};

/// The client's keys: the secret key (never sent), the evaluation keys (uploaded) and,
/// when known, the public key.
pub struct ClientKeys {
    /// Secret key: decrypts, and encrypts with seeded (half-size) ciphertexts.
    pub secret: SecretKey,
    /// Public key, if the key directory has one.
    pub public: Option<PublicKey>,
    /// The evaluation keys the plan needs.
    pub eval: EvaluationKeys,
    /// What the keys are bound to: their key set (the id of the public key the evaluation
    /// keys carry) and the plan they were generated for.
    pub binding: Binding,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeys")
            .field("secret", &"<redacted>")
            .field("galois_elements", &self.eval.galois_elements().len())
            .field("relin", &self.eval.relin().is_some())
            .finish()
    }
}

impl ClientKeys {
    /// Fresh keys for `plan`: secret, public, and exactly the Galois and relinearization
    /// keys the plan needs; the evaluation keys carry the public key (the server
    /// re-randomizes results under it). Costs one switching key per Galois element (each
    /// `dnum` encryptions of a ring element) plus the relinearization key.
    ///
    /// # Errors
    /// Key generation errors.
    pub fn generate<G: RngCore + CryptoRng>(plan: &Plan, rng: &mut G) -> Result<Self> {
        let params = plan.params();
        let kg = KeyGenerator::new(params);
        let secret = kg.gen_secret_key(rng);
        let public = kg.gen_public_key(&secret, rng)?;
        let eval = kg
            .gen_evaluation_keys(&secret, &plan.galois_elements(), plan.needs_relin(), rng)?
            .with_public_key(public.clone())?;
        let binding = Binding::keys(super::key_set_id(params, &public)?, plan.structure_digest());
        Ok(ClientKeys {
            secret,
            public: Some(public),
            eval,
            binding,
        })
    }

    /// Reads `secret.key`, `eval.keys` and (if present) `public.key` of a key directory
    /// written by `hepeft keygen` or [`ClientKeys::save_dir`].
    ///
    /// # Errors
    /// [`Error::Io`] for a missing file; format and parameter errors of [`load`].
    /// The secret key and the evaluation keys must be bound to the same key set (the
    /// public key the evaluation keys carry) and plan, and `public.key`, if present, must
    /// be that public key.
    pub fn load_dir(dir: impl AsRef<Path>, params: &CkksParams) -> Result<Self> {
        let dir = dir.as_ref();
        let (secret, sk_binding) = load_bound(dir.join(SECRET_KEY), params)?;
        let (eval, ek_binding): (EvaluationKeys, _) = load_bound(dir.join(EVAL_KEYS), params)?;
        let key_set = super::check_eval_keys(params, &eval, ek_binding.as_ref(), None)?;
        let binding = super::check_secret_matches_public(sk_binding.as_ref(), key_set, None)?;
        if ek_binding.as_ref().map(|b| b.structure) != Some(binding.structure) {
            return Err(Error::mismatch(
                "plan",
                "the secret key and the evaluation keys were generated for different plans",
            ));
        }
        let pk = dir.join(PUBLIC_KEY);
        let public = if pk.exists() {
            let public: PublicKey = load(pk, params)?;
            let id = super::key_set_id(params, &public)?;
            if id != key_set {
                return Err(Error::mismatch(
                    "key set",
                    format!("{PUBLIC_KEY} is key set {id}, the evaluation keys carry {key_set}"),
                ));
            }
            Some(public)
        } else {
            None
        };
        Ok(ClientKeys {
            secret,
            public,
            eval,
            binding,
        })
    }

    /// Writes the three key files to `dir` (created if needed; the secret key gets mode
    /// 0600). [`KeyDir::create`] writes a whole key directory (with `params.toml` and
    /// `plan.json`).
    ///
    /// # Errors
    /// [`Error::Io`] on file-system failures.
    pub fn save_dir(&self, dir: impl AsRef<Path>, params: &CkksParams) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        save_bound(dir.join(SECRET_KEY), params, &self.secret, &self.binding)?;
        save_bound(dir.join(EVAL_KEYS), params, &self.eval, &self.binding)?;
        if let Some(pk) = &self.public {
            save(dir.join(PUBLIC_KEY), params, pk)?;
        }
        Ok(())
    }

    /// Checks the keys belong to `plan`'s parameters and hold every key it needs.
    ///
    /// # Errors
    /// [`Error::ParameterMismatch`] or [`Error::MissingKey`].
    pub fn check_for(&self, plan: &Plan) -> Result<()> {
        let params = plan.params();
        params.check_digest("secret key", &self.secret.params_digest())?;
        super::check_eval_keys(params, &self.eval, Some(&self.binding), Some(plan))?;
        Ok(())
    }
}

/// Samples per query of `plan`: 1 in latency mode, N/2 (the slots) in batch mode, N/(2g)
/// with `g` features packed per ciphertext ([`Plan::samples_per_query`]).
pub fn samples_per_query(plan: &Plan) -> usize {
    plan.samples_per_query()
}

/// Encrypts `inputs` (one `samples x dim` matrix per adapter input, in the plan's input
/// order) into queries of [`samples_per_query`] samples each, bound to `key_set` and
/// `plan`. Cost: per query, one encoding and one encryption per input ciphertext
/// ([`Plan::input_ciphertexts`]); a secret `key` gives seeded, half-size ciphertexts.
///
/// # Errors
/// [`Error::DimensionMismatch`] for a wrong number of inputs, a wrong width, unequal
/// sample counts or no sample; encoding errors of [`Plan::encrypt_query`] (values too
/// large for the scale).
pub fn encrypt_samples<G: RngCore + CryptoRng>(
    plan: &Plan,
    encoder: &Encoder,
    key: EncryptionKey<'_>,
    key_set: KeySetId,
    inputs: &[ArrayView2<f64>],
    rng: &mut G,
) -> Result<Query> {
    if inputs.len() != plan.input_dims().len() {
        return Err(Error::dims(
            "adapter inputs",
            plan.input_dims().len(),
            inputs.len(),
        ));
    }
    let samples = inputs.first().map_or(0, |a| a.nrows());
    if samples == 0 {
        return Err(Error::dims("samples (at least one)", 1, 0));
    }
    if let Some(a) = inputs.iter().find(|a| a.nrows() != samples) {
        return Err(Error::dims("samples of every input", samples, a.nrows()));
    }
    let chunk = samples_per_query(plan);
    let mut items = Vec::new();
    let mut queries = Vec::new();
    let mut start = 0;
    while start < samples {
        let end = (start + chunk).min(samples);
        let views: Vec<ArrayView2<f64>> = inputs
            .iter()
            .map(|m| m.slice_axis(Axis(0), Slice::from(start..end)))
            .collect();
        items.extend(plan.encrypt_query(encoder, key, &views, rng)?);
        queries.push(end - start);
        start = end;
    }
    Ok(Query {
        items,
        binding: super::query_binding(key_set, plan, &queries),
    })
}

/// Decrypts the results of consecutive queries (`items`: `queries.len()` results of
/// [`Plan::output_ciphertexts`] ciphertexts each; `queries[i]` samples in the `i`-th)
/// into one `samples x output_dim` matrix. Cost: one decryption and one decoding per
/// ciphertext. Checks no binding: see [`Client::decrypt`].
///
/// # Errors
/// [`Error::DimensionMismatch`] if `items` does not hold that many ciphertexts;
/// decoding errors.
pub fn decrypt_queries(
    plan: &Plan,
    encoder: &Encoder,
    dec: &Decryptor<'_>,
    items: &[Ciphertext],
    queries: &[usize],
) -> Result<Array2<f64>> {
    let per = plan.output_ciphertexts();
    if items.len() != queries.len() * per {
        return Err(Error::dims(
            "result ciphertexts",
            queries.len() * per,
            items.len(),
        ));
    }
    let samples: usize = queries.iter().sum();
    let mut out = Array2::zeros((samples, plan.output_dim()));
    let mut row = 0;
    for (q, cts) in queries.iter().zip(items.chunks(per.max(1))) {
        let part = plan.decrypt_result(encoder, dec, cts, *q)?;
        out.slice_axis_mut(Axis(0), Slice::from(row..row + part.nrows()))
            .assign(&part);
        row += part.nrows();
    }
    Ok(out)
}

/// The client of one plan: the plan compiled from the model's public structure, an
/// encoder, and the keys it holds. A client made by [`Client::keygen`] or
/// [`Client::from_keys`] holds all keys; [`Client::for_encryption`] only the public key
/// (encrypts, cannot decrypt); [`Client::for_decryption`] only the secret key.
pub struct Client {
    plan: Plan,
    encoder: Encoder,
    binding: Binding,
    public: Option<PublicKey>,
    secret: Option<SecretKey>,
    eval: Option<EvaluationKeys>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("key_set", &self.binding.key_set)
            .field("public", &self.public.is_some())
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("eval", &self.eval.is_some())
            .finish()
    }
}

impl Client {
    /// Generates fresh keys for `plan` ([`ClientKeys::generate`]; cost is there).
    ///
    /// # Errors
    /// Key generation errors.
    pub fn keygen<G: RngCore + CryptoRng>(plan: Plan, rng: &mut G) -> Result<Client> {
        let keys = ClientKeys::generate(&plan, rng)?;
        Client::from_keys(plan, keys)
    }

    /// A client with `keys`, after checking they were made for `plan` and cover it.
    ///
    /// # Errors
    /// As [`ClientKeys::check_for`].
    pub fn from_keys(plan: Plan, keys: ClientKeys) -> Result<Client> {
        keys.check_for(&plan)?;
        let encoder = Encoder::new(plan.params())?;
        Ok(Client {
            plan,
            encoder,
            binding: keys.binding,
            public: keys.public,
            secret: Some(keys.secret),
            eval: Some(keys.eval),
        })
    }

    /// An encrypt-only client from a key directory: checks `plan` against `plan.json`
    /// (`source` names where the plan came from, for the message) and reads the public
    /// key. The secret key is not read.
    ///
    /// # Errors
    /// As [`KeyDir::check_plan`] and [`KeyDir::public_key`].
    pub fn for_encryption(dir: &KeyDir, plan: Plan, source: &Path) -> Result<Client> {
        dir.check_plan(&plan, source)?;
        let (pk, key_set) = dir.public_key()?;
        Ok(Client {
            encoder: Encoder::new(plan.params())?,
            binding: Binding::keys(key_set, plan.structure_digest()),
            plan,
            public: Some(pk),
            secret: None,
            eval: None,
        })
    }

    /// A decrypt-only client from a key directory: checks `plan` against `plan.json` and
    /// reads the secret key, checked to belong to the directory's key set and to `plan`.
    ///
    /// # Errors
    /// As [`KeyDir::check_plan`] and [`KeyDir::secret_key`].
    pub fn for_decryption(dir: &KeyDir, plan: Plan, source: &Path) -> Result<Client> {
        dir.check_plan(&plan, source)?;
        let (sk, binding) = dir.secret_key(Some(&plan))?;
        Ok(Client {
            encoder: Encoder::new(plan.params())?,
            binding,
            plan,
            public: None,
            secret: Some(sk),
            eval: None,
        })
    }

    /// Writes a whole key directory (see [`KeyDir::create`]); needs all three keys.
    ///
    /// # Errors
    /// [`Error::MissingKey`] if this client does not hold every key; as
    /// [`KeyDir::create`].
    pub fn save(&self, dir: &Path, force: bool) -> Result<KeyDir> {
        let missing = |what: &str| Error::MissingKey {
            what: format!("{what} (this client cannot write a key directory)"),
        };
        let secret = self.secret.as_ref().ok_or_else(|| missing("secret key"))?;
        let eval = self
            .eval
            .as_ref()
            .ok_or_else(|| missing("evaluation keys"))?;
        let public = self.public.as_ref().ok_or_else(|| missing("public key"))?;
        super::keydir::create_from_parts(
            dir,
            &self.plan,
            super::keydir::KeyParts {
                secret,
                public,
                eval,
                binding: &self.binding,
            },
            force,
            Some(&crate::select::SelectionRecord::keygen(
                self.plan.options().mode,
            )),
        )
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The parameter set.
    pub fn params(&self) -> &CkksParams {
        self.plan.params()
    }

    /// The key set the keys belong to (the id of the public key).
    pub fn key_set(&self) -> KeySetId {
        self.binding.key_set
    }

    /// The keys' binding (key set and plan structure).
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// The evaluation keys, if this client holds them.
    pub fn eval_keys(&self) -> Option<&EvaluationKeys> {
        self.eval.as_ref()
    }

    /// The evaluation keys as the bound envelope the server receives (the bytes of
    /// `eval.keys`). Costs one serialization of the keys.
    ///
    /// # Errors
    /// [`Error::MissingKey`] if this client does not hold them.
    pub fn eval_keys_bytes(&self) -> Result<Vec<u8>> {
        let eval = self.eval.as_ref().ok_or_else(|| Error::MissingKey {
            what: "evaluation keys (this client was opened without them)".into(),
        })?;
        to_bytes_bound(self.params(), eval, &self.binding)
    }

    /// Encrypts `inputs` into a query (see [`encrypt_samples`] for the cost): under the
    /// secret key when this client holds it (seeded, half-size ciphertexts), else under
    /// the public key.
    ///
    /// # Errors
    /// As [`encrypt_samples`]; [`Error::MissingKey`] for a client with neither key.
    pub fn encrypt_samples<G: RngCore + CryptoRng>(
        &self,
        inputs: &[ArrayView2<f64>],
        rng: &mut G,
    ) -> Result<Query> {
        let key = match (&self.secret, &self.public) {
            (Some(sk), _) => EncryptionKey::Secret(sk),
            (None, Some(pk)) => EncryptionKey::Public(pk),
            (None, None) => {
                return Err(Error::MissingKey {
                    what: "public or secret key to encrypt with".into(),
                })
            }
        };
        encrypt_samples(
            &self.plan,
            &self.encoder,
            key,
            self.binding.key_set,
            inputs,
            rng,
        )
    }

    /// Checks a result as [`Client::decrypt`] does, without decrypting: bound as a result,
    /// to this client's key set and plan, with the plan's shape, at level 0. Returns its
    /// binding. A few comparisons.
    ///
    /// # Errors
    /// [`Error::Mismatch`] or [`Error::DimensionMismatch`].
    pub fn check_result(&self, result: &QueryResult) -> Result<Binding> {
        super::check_result_matches_secret(
            Some(&result.binding),
            &self.binding,
            &self.plan,
            &result.items,
        )
    }

    /// Checks a result against the keys and the plan
    /// ([`super::check_result_matches_secret`]: role, key set, plan, shape, level 0) and
    /// decrypts it into `samples x output_dim`. Cost: one decryption and decoding per
    /// ciphertext.
    ///
    /// # Errors
    /// [`Error::MissingKey`] without a secret key; [`Error::Mismatch`] or
    /// [`Error::DimensionMismatch`] from the checks; decoding errors.
    pub fn decrypt(&self, result: &QueryResult) -> Result<Array2<f64>> {
        let sk = self.secret.as_ref().ok_or_else(|| Error::MissingKey {
            what: "secret key (this client can only encrypt)".into(),
        })?;
        let b = self.check_result(result)?;
        let queries: Vec<usize> = b.queries.iter().map(|&q| q as usize).collect();
        let dec = Decryptor::new(self.params(), sk)?;
        decrypt_queries(&self.plan, &self.encoder, &dec, &result.items, &queries)
    }
}
