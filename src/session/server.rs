//! The server side of the protocol: a prepared plan with its sanitization settings
//! ([`Server`]), the evaluation-key checks ([`Server::check_keys`]) and the
//! evaluate-then-sanitize loop ([`Server::evaluate_queries`]). The CLI's `evaluate` and
//! the HTTP service both run exactly this.
//!
//! ```no_run
//! # fn demo(plan: hepeft::plan::Plan, keys: &[u8], query: &[u8]) -> hepeft::Result<()> {
//! use hepeft::plan::SanitizeConfig;
//! use hepeft::session::{Query, Role, Server};
//! let server = Server::new(plan, SanitizeConfig::flooded())?; // prepares the weights once
//! let keys = std::sync::Arc::new(server.read_keys(keys)?); // checked against the plan
//! let query = Query::from_bytes(server.params(), query, Role::Query)?;
//! let mut rng = hepeft::session::os_rng()?;
//! let (result, _report) = server.evaluate_queries(keys, &query, &mut rng, &|_, _, _| {})?;
//! let answer = result.to_bytes(server.params())?;
//! # let _ = answer; Ok(()) }
//! ```

use std::sync::Arc;

use rand::{CryptoRng, RngCore};

use crate::ckks::{from_bytes_bound, CkksParams, EvaluationKeys, Evaluator};
use crate::io::binding::{Binding, KeySetId};
use crate::plan::{FloodingConfig, Plan, PreparedPlan, SanitizeConfig, SanitizeReport};
use crate::{Error, Result};

use super::message::{Query, QueryResult};

/// Refuses a flooding that would leave less than one bit of precision with `plan`'s
/// parameters (the prediction [`Plan::flooded_precision_bits`] makes; a few float
/// operations).
///
/// # Errors
/// [`Error::InvalidValue`] ("noise flooding") naming settings that work.
pub fn check_flooding(plan: &Plan, flooding: Option<&FloodingConfig>) -> Result<()> {
    if let Some(f) = flooding {
        let bits = plan.flooded_precision_bits(f);
        if bits < 1.0 {
            return Err(Error::InvalidValue {
                context: "noise flooding".into(),
                reason: format!(
                    "noise flooding at {} bits would leave {bits:.1} bits of precision with these parameters: \
                     choose parameters with a larger scale (`hepeft params select --flooding-bits {}`), lower \
                     the flooding bits, or, for a trusted client only, turn flooding off",
                    f.statistical_security, f.statistical_security
                ),
            });
        }
    }
    Ok(())
}

/// Refuses a parameter set that opted out of the security check: re-randomizing results
/// (and the client's own privacy) relies on RLWE at a checked level.
///
/// # Errors
/// [`Error::Refused`].
pub fn check_params_secure(params: &CkksParams) -> Result<()> {
    if params.security().bits().is_none() {
        return Err(Error::Refused {
            reason: "the parameter set is marked `security = \"unchecked\"`: the server refuses it, because \
                     re-randomizing results (and the client's own privacy) relies on RLWE at a checked security \
                     level; use a preset or `hepeft params select`"
                .into(),
        });
    }
    Ok(())
}

/// A plan prepared for evaluation, with the sanitization every result gets.
pub struct Server {
    prepared: PreparedPlan,
    sanitize: SanitizeConfig,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("stages", &self.plan().report().len())
            .field("sanitize", &self.sanitize)
            .finish()
    }
}

impl Server {
    /// Checks the flooding leaves precision ([`check_flooding`]) and prepares the plan's
    /// weights ([`Plan::prepare`]: one encoding per non-zero diagonal, done once).
    ///
    /// # Errors
    /// As [`check_flooding`] and [`Plan::prepare`] (weights the scale cannot carry).
    pub fn new(plan: Plan, sanitize: SanitizeConfig) -> Result<Server> {
        check_flooding(&plan, sanitize.flooding.as_ref())?;
        Ok(Server {
            prepared: plan.prepare()?,
            sanitize,
        })
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        self.prepared.plan()
    }

    /// The prepared plan.
    pub fn prepared(&self) -> &PreparedPlan {
        &self.prepared
    }

    /// The parameter set.
    pub fn params(&self) -> &CkksParams {
        self.plan().params()
    }

    /// The sanitization applied to every result.
    pub fn sanitize_config(&self) -> &SanitizeConfig {
        &self.sanitize
    }

    /// Checks evaluation keys as the server receives them: made for these parameters,
    /// carrying the client's public key (results are re-randomized under it), bound to
    /// that key set and to this plan, and holding every Galois and relinearization key the
    /// plan uses ([`super::check_eval_keys`]). Returns the key-set id. Costs one SHA-256
    /// over the public key.
    ///
    /// # Errors
    /// [`Error::ParameterMismatch`], [`Error::MissingKey`], [`Error::Mismatch`].
    pub fn check_keys(&self, keys: &EvaluationKeys, binding: Option<&Binding>) -> Result<KeySetId> {
        if keys.public_key().is_none() {
            return Err(Error::MissingKey {
                what: "public key in the evaluation keys: the server re-randomizes every result with a fresh \
                       encryption of zero under the client's public key; regenerate the keys with this version"
                    .into(),
            });
        }
        super::check_eval_keys(self.params(), keys, binding, Some(self.plan()))
    }

    /// Parses an evaluation-key envelope (the bytes of `eval.keys`) and checks it
    /// ([`Server::check_keys`]).
    ///
    /// # Errors
    /// Envelope errors; as [`Server::check_keys`].
    pub fn read_keys(&self, bytes: &[u8]) -> Result<EvaluationKeys> {
        let (keys, binding): (EvaluationKeys, _) = from_bytes_bound(self.params(), bytes)?;
        self.check_keys(&keys, binding.as_ref())?;
        Ok(keys)
    }

    /// Evaluates every query of `query` under `keys` and sanitizes each result (mask, drop
    /// to level 0, re-randomize under the public key the keys carry, flood; see
    /// [`Plan::sanitize`]). First checks the query is bound as a query to the keys' key
    /// set and this plan, with the plan's ciphertexts per query
    /// ([`super::check_query_matches_keys`]). `progress(query, stage, stages)` is called
    /// after each stage.
    ///
    /// Returns the result (bound as the result of `query`) and the sanitization figures
    /// (the same for every query; `None` only for an empty query, which the checks
    /// refuse). Cost per query: the plan's key switches ([`Plan::key_switches`]) and
    /// levels, plus one public-key encryption of zero per output ciphertext.
    ///
    /// # Errors
    /// [`Error::MissingKey`], [`Error::Mismatch`], [`Error::DimensionMismatch`] from the
    /// checks; evaluation and sanitization errors.
    pub fn evaluate_queries<G: RngCore + CryptoRng>(
        &self,
        keys: Arc<EvaluationKeys>,
        query: &Query,
        rng: &mut G,
        progress: &(dyn Fn(usize, usize, usize) + Sync),
    ) -> Result<(QueryResult, Option<SanitizeReport>)> {
        let plan = self.plan();
        let params = self.params();
        let key_set = super::eval_keys_id(params, &keys)?;
        let binding = super::check_query_matches_keys(
            Some(&query.binding),
            key_set,
            plan,
            query.items.len(),
        )?;
        let pk = keys.public_key().cloned().ok_or_else(|| Error::MissingKey {
            what: "public key in the evaluation keys (needed to re-randomize results; register keys \
                   generated by this version)"
                .into(),
        })?;
        let ev = Evaluator::with_keys(params, keys)?;
        let per = plan.input_ciphertexts().max(1);
        let mut report = None;
        let mut out = Vec::with_capacity(binding.queries.len() * plan.output_ciphertexts());
        for (qi, cts) in query.items.chunks(per).enumerate() {
            let stage = |done: usize, total: usize| progress(qi, done, total);
            let res = self.prepared.evaluate_with_progress(&ev, cts, &stage)?;
            let (clean, rep) = plan.sanitize(&ev, res, &pk, &self.sanitize, rng)?;
            report = Some(rep);
            out.extend(clean);
        }
        Ok((
            QueryResult {
                items: out,
                binding: super::result_binding(&binding, plan),
            },
            report,
        ))
    }
}
