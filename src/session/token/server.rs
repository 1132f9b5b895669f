//! The server side for token adapters: check evaluation keys against the token plan,
//! evaluate every query and sanitize every result ([`TokenServer`]).

use std::sync::Arc;

use rand::{CryptoRng, RngCore};

use crate::ckks::{from_bytes_bound, EvaluationKeys, Evaluator};
use crate::io::binding::{Binding, KeySetId, Role};
use crate::plan::{SanitizeConfig, SanitizeReport};
use crate::session::message::{Query, QueryResult};
use crate::{Error, Result};

use super::TokenModel;

/// A token model (with its weights) and the sanitization every result gets.
#[derive(Debug)]
pub struct TokenServer {
    model: TokenModel,
    sanitize: SanitizeConfig,
}

impl TokenServer {
    /// Checks the flooding leaves at least one bit of precision
    /// ([`TokenPlan::flooded_precision_bits`](crate::plan::token::TokenPlan::flooded_precision_bits))
    /// and the output has a level for the mask. A few float operations.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] ("noise flooding"), [`Error::LevelExhausted`] naming the
    /// settings that work.
    pub fn new(model: TokenModel, sanitize: SanitizeConfig) -> Result<TokenServer> {
        let params = &model.params;
        if let Some(f) = &sanitize.flooding {
            let bits =
                model
                    .plan
                    .flooded_precision_bits(f, params.default_scale().log2(), params.log_n());
            if bits < 1.0 {
                return Err(Error::InvalidValue {
                    context: "noise flooding".into(),
                    reason: format!(
                        "noise flooding at {} bits would leave {bits:.1} bits of precision with these parameters: \
                         choose parameters selected for it (`hepeft params select --model <token card> \
                         --flooding-bits {}`), lower the flooding bits, or, for a trusted client only, turn \
                         flooding off",
                        f.statistical_security, f.statistical_security
                    ),
                });
            }
        }
        if model.plan.output_level() <= params.output_floor_level() {
            return Err(Error::LevelExhausted {
                op: "masking the token adapter's output (every result is masked to its output slots): the \
                     parameters leave no level for it; choose them with `hepeft params select --model <token card>`"
                    .into(),
                needed: 1,
                available: 0,
            });
        }
        Ok(TokenServer { model, sanitize })
    }

    /// The model.
    pub fn model(&self) -> &TokenModel {
        &self.model
    }

    /// The sanitization applied to every result.
    pub fn sanitize_config(&self) -> &SanitizeConfig {
        &self.sanitize
    }

    /// Checks evaluation keys: for these parameters, carrying a public key, bound as keys
    /// of its key set and to this token plan, holding every Galois key and the
    /// relinearization key it uses. Returns the key-set id.
    ///
    /// # Errors
    /// [`Error::ParameterMismatch`], [`Error::MissingKey`], [`Error::Mismatch`].
    pub fn check_keys(&self, keys: &EvaluationKeys, binding: Option<&Binding>) -> Result<KeySetId> {
        let params = &self.model.params;
        params.check_digest("evaluation keys", &keys.params_digest())?;
        if keys.public_key().is_none() {
            return Err(Error::MissingKey {
                what: "public key in the evaluation keys (results are re-randomized under it)"
                    .into(),
            });
        }
        let id = crate::session::eval_keys_id(params, keys)?;
        let b = crate::session::require_binding(binding.cloned(), "the evaluation keys")?;
        crate::session::binding::check_role(&b, Role::Keys, "the evaluation-key file")?;
        crate::session::binding::check_key_set(
            b.key_set,
            id,
            "the evaluation-key file's binding",
            "the public key inside it",
        )?;
        if b.structure != self.model.structure {
            return Err(Error::mismatch(
                "plan",
                "the evaluation keys were generated for another token plan (card or parameters)",
            ));
        }
        let missing: Vec<crate::ckks::GaloisElement> = self
            .model
            .galois_elements()
            .into_iter()
            .filter(|g| keys.galois(*g).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingKey {
                what: format!("Galois keys for elements {missing:?} of the token plan"),
            });
        }
        if self.model.plan.needs_relin() && keys.relin().is_none() {
            return Err(Error::MissingKey {
                what: "relinearization key (the token plan multiplies ciphertexts)".into(),
            });
        }
        Ok(id)
    }

    /// Parses an evaluation-key envelope and checks it ([`TokenServer::check_keys`]).
    ///
    /// # Errors
    /// Envelope errors; as [`TokenServer::check_keys`].
    pub fn read_keys(&self, bytes: &[u8]) -> Result<EvaluationKeys> {
        let (keys, binding): (EvaluationKeys, _) = from_bytes_bound(&self.model.params, bytes)?;
        self.check_keys(&keys, binding.as_ref())?;
        Ok(keys)
    }

    /// Checks `query` (bound as a query to the keys' key set and this model, one sample per
    /// query), evaluates each sample ([`TokenPlan::evaluate`](crate::plan::token::TokenPlan::evaluate))
    /// and sanitizes each result ([`TokenPlan::sanitize`](crate::plan::token::TokenPlan::sanitize):
    /// mask, output level, re-randomization, flooding). `progress(sample, samples)` is
    /// called after each sample. Returns the result and the sanitization figures.
    ///
    /// # Errors
    /// The checks; evaluation and sanitization errors.
    pub fn evaluate_queries<G: RngCore + CryptoRng>(
        &self,
        keys: Arc<EvaluationKeys>,
        query: &Query,
        rng: &mut G,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<(QueryResult, Option<SanitizeReport>)> {
        let m = &self.model;
        let key_set = crate::session::eval_keys_id(&m.params, &keys)?;
        let per = m.query_ciphertexts();
        m.check_binding(&query.binding, Role::Query, key_set, per, query.items.len())?;
        let pk = keys
            .public_key()
            .cloned()
            .ok_or_else(|| Error::MissingKey {
                what: "public key in the evaluation keys".into(),
            })?;
        let ev = Evaluator::with_keys(&m.params, keys)?;
        let encoder = crate::ckks::Encoder::new(&m.params)?;
        let samples = query.binding.queries.len();
        let mut out = Vec::with_capacity(samples * m.result_ciphertexts());
        let mut report = None;
        for (s, cts) in query.items.chunks(per.max(1)).enumerate() {
            let mut inputs = Vec::with_capacity(m.adapter.inputs().len());
            let mut rest = cts;
            for spec in m.adapter.inputs() {
                let n = m
                    .plan
                    .ciphertexts_for(crate::plan::token::Layout::Packed, spec.dim);
                let (head, tail) = rest.split_at(n.min(rest.len()));
                inputs.push(head.to_vec());
                rest = tail;
            }
            let res = m.plan.evaluate(&m.adapter, &ev, &encoder, &inputs)?;
            let (clean, rep) = m.plan.sanitize(&ev, res, &pk, &self.sanitize, rng)?;
            out.extend(clean);
            report = Some(rep);
            progress(s + 1, samples);
        }
        Ok((
            QueryResult {
                items: out,
                binding: Binding {
                    role: Role::Result,
                    key_set,
                    structure: m.structure,
                    per_query: m.result_ciphertexts() as u32,
                    queries: query.binding.queries.clone(),
                },
            },
            report,
        ))
    }
}
