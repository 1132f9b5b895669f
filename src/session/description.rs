//! The public description of a served model ([`ModelDescription`], `GET /v1/model`):
//! what a server announces and what a client checks before it trusts the plan it
//! compiles locally ([`ModelDescription::for_plan`], [`ModelDescription::check`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ckks::CkksParams;
use crate::io::format::digest_hex;
use crate::model::load::{ModelCard, TensorStore};
use crate::model::Adapter;
use crate::plan::{FloodingConfig, Mode, Plan, PlanOptions, SanitizeConfig};
use crate::{Error, Result};

use super::client::samples_per_query;

/// Format tag of [`ModelDescription`].
pub const DESCRIPTION_FORMAT: &str = "hepeft-model/1";

/// SHA-256 hex of `bytes` (key ids, weights digest).
pub fn sha256_hex(bytes: &[u8]) -> String {
    digest_hex(&Sha256::digest(bytes).into())
}

/// The public description of a served model (`GET /v1/model`): everything a client needs
/// to compile the server's plan, and nothing about the weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelDescription {
    /// [`DESCRIPTION_FORMAT`].
    pub format: String,
    /// Optional name.
    pub name: Option<String>,
    /// `latency` or `batch`.
    pub mode: String,
    /// Plan option `fold_normalization`.
    pub fold_normalization: bool,
    /// Plan option `pre_rotate`: client pre-rotated copies per input segment, at most
    /// (1: the replicated layout; absent in descriptions from servers that predate it).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub pre_rotate: usize,
    /// Plan option `batch_pack`: batch-mode input features per query ciphertext (1: one
    /// ciphertext per feature; absent in descriptions from servers that predate it).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub batch_pack: usize,
    /// Widths of the adapter inputs, in order.
    pub input_dims: Vec<usize>,
    /// Width of the output (logits).
    pub output_dim: usize,
    /// Ciphertexts per query.
    pub input_ciphertexts: usize,
    /// Ciphertexts per result.
    pub output_ciphertexts: usize,
    /// Samples per query: 1 in latency mode, N/2 in batch mode (N/(2g) packed).
    pub max_samples_per_query: usize,
    /// The parameter set as TOML (frozen primes).
    pub params_toml: String,
    /// SHA-256 hex of the parameter set.
    pub params_digest: String,
    /// SHA-256 hex of the plan structure ([`Plan::structure_digest`](crate::plan::Plan::structure_digest)).
    pub structure_digest: String,
    /// Galois elements the evaluation keys must contain.
    pub galois_elements: Vec<crate::ckks::GaloisElement>,
    /// Whether a relinearization key is needed.
    pub needs_relin: bool,
    /// Levels the plan consumes.
    pub depth: usize,
    /// The public card: the adapter's structure with every weight zero.
    pub card: ModelCard,
    /// SHA-256 hex of the zero-weight safetensors served at `/v1/model/weights`.
    pub weights_digest: String,
    /// Largest request body the server accepts.
    pub max_body_bytes: usize,
    /// Noise flooding on every result (statistical security, queries covered); `None`:
    /// off. Absent in descriptions from servers that predate issue 8.
    #[serde(default)]
    pub flooding: Option<FloodingConfig>,
    /// Predicted precision of each logit after flooding (bits, unit-sized output).
    #[serde(default)]
    pub flooded_precision_bits: Option<f64>,
}

impl ModelDescription {
    /// The plan options the description names.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for an unknown mode.
    pub fn plan_options(&self) -> Result<PlanOptions> {
        Ok(PlanOptions {
            mode: Mode::parse(&self.mode)?,
            fold_normalization: self.fold_normalization,
            pre_rotate: self.pre_rotate,
            batch_pack: self.batch_pack,
        })
    }

    /// The description of `plan` served with the public `card` and its zero-weight
    /// safetensors `weights` (hashed here: one SHA-256), a body limit and the
    /// sanitization every result gets (the predicted precision after flooding is
    /// included).
    ///
    /// # Errors
    /// [`Error::Format`] if the parameter set cannot be written as TOML.
    pub fn for_plan(
        plan: &Plan,
        name: Option<String>,
        card: ModelCard,
        weights: &[u8],
        max_body_bytes: usize,
        sanitize: &SanitizeConfig,
    ) -> Result<ModelDescription> {
        let params = plan.params();
        Ok(ModelDescription {
            format: DESCRIPTION_FORMAT.into(),
            name,
            mode: plan.options().mode.name().into(),
            fold_normalization: plan.options().fold_normalization,
            pre_rotate: plan.options().pre_rotate,
            batch_pack: plan.options().batch_pack,
            input_dims: plan.input_dims().to_vec(),
            output_dim: plan.output_dim(),
            input_ciphertexts: plan.input_ciphertexts(),
            output_ciphertexts: plan.output_ciphertexts(),
            max_samples_per_query: samples_per_query(plan),
            params_toml: params.to_toml()?,
            params_digest: digest_hex(&params.digest()),
            structure_digest: digest_hex(&plan.structure_digest()),
            galois_elements: plan.galois_elements(),
            needs_relin: plan.needs_relin(),
            depth: plan.depth(),
            card,
            weights_digest: sha256_hex(weights),
            max_body_bytes,
            flooding: sanitize.flooding,
            flooded_precision_bits: sanitize
                .flooding
                .as_ref()
                .map(|f| plan.flooded_precision_bits(f)),
        })
    }

    /// Pretty JSON (the body of `GET /v1/model`).
    ///
    /// # Errors
    /// [`Error::Format`] if serialization fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| Error::format("model description", e.to_string()))
    }

    /// Parses JSON written by [`ModelDescription::to_bytes`] (not yet checked: see
    /// [`ModelDescription::check`]).
    ///
    /// # Errors
    /// [`Error::Format`] for malformed JSON.
    pub fn from_bytes(bytes: &[u8]) -> Result<ModelDescription> {
        serde_json::from_slice(bytes).map_err(|e| Error::format("model description", e.to_string()))
    }

    /// What a client checks before it trusts a description and the zero weights served
    /// with it: the format tag, the parameter set against its digest (and against
    /// `expected_params`, a hex prefix, when given), the weights against their digest, and
    /// the plan compiled locally from the public card against the announced structure
    /// digest and keys. Returns the parameters, the public adapter and the plan. Costs a
    /// plan compilation.
    ///
    /// # Errors
    /// [`Error::Format`] for an unknown format or a weights digest that does not match;
    /// [`Error::ParameterMismatch`] if the parameter set does not hash to the advertised
    /// digest (or to `expected_params`); [`Error::Model`] if the local plan differs from
    /// the server's.
    pub fn check(
        &self,
        weights: &[u8],
        expected_params: Option<&str>,
    ) -> Result<(CkksParams, Adapter, Plan)> {
        if self.format != DESCRIPTION_FORMAT {
            return Err(Error::format(
                "model description",
                format!("format {:?}, expected {DESCRIPTION_FORMAT:?}", self.format),
            ));
        }
        let params = CkksParams::from_toml(&self.params_toml)?;
        let got = digest_hex(&params.digest());
        if got != self.params_digest {
            return Err(Error::ParameterMismatch {
                what: "the server's parameter set".into(),
                expected: self.params_digest.clone(),
                found: got,
            });
        }
        if let Some(want) = expected_params {
            if !got.starts_with(&want.to_ascii_lowercase()) || want.is_empty() {
                return Err(Error::ParameterMismatch {
                    what: "the server's parameter set".into(),
                    expected: want.to_string(),
                    found: got,
                });
            }
        }
        if sha256_hex(weights) != self.weights_digest {
            return Err(Error::format(
                "public model weights",
                "SHA-256 differs from the description",
            ));
        }
        let store = TensorStore::from_bytes(weights)?;
        let adapter = self.card.to_adapter(Some(&store), None)?;
        let plan = Plan::compile(&adapter, &params, self.plan_options()?)?;
        let local = digest_hex(&plan.structure_digest());
        if local != self.structure_digest {
            return Err(Error::model(format!(
                "the plan compiled from the server's public card has structure digest {local}, the server announces {}; client and server versions may differ",
                self.structure_digest
            )));
        }
        if plan.galois_elements() != self.galois_elements || plan.needs_relin() != self.needs_relin
        {
            return Err(Error::model(
                "the local plan needs other keys than the server announces",
            ));
        }
        Ok((params, adapter, plan))
    }
}

pub(crate) fn one() -> usize {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
pub(crate) fn is_one(v: &usize) -> bool {
    *v == 1
}
