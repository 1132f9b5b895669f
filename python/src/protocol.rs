//! The client and server steps of the protocol, in one thin module.
//!
//! TODO(issue 17): `hepeft::session::{Client, Server}` is being written on branch
//! `issue-17`. Until it lands, this module strings together the same library calls the CLI
//! commands make (`src/cli/cmd/{keygen,encrypt,evaluate,decrypt}.rs`) and the query client
//! (`src/serve/client.rs`): every check is a `hepeft::session` binding check, nothing is
//! re-implemented. When the session layer lands, each function here becomes one call to it
//! and the Python classes do not change.

use std::sync::Arc;

use hepeft::ckks::{
    CiphertextBundle, Decryptor, Encoder, EncryptionKey, EvaluationKeys, Evaluator,
};
use hepeft::io::binding::Binding;
use hepeft::model::Adapter;
use hepeft::plan::{
    public_structure, FloodingConfig, Mode, Plan, PlanOptions, PreparedPlan, SanitizeConfig,
    SanitizeReport,
};
use hepeft::serve::client::ClientKeys;
use hepeft::{ckks::CkksParams, Error, Result};
use ndarray::{Array2, ArrayView2, Axis, Slice};
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;

/// OS randomness for keys, encryption and sanitization.
///
/// # Errors
/// [`Error::Io`] if the operating system's generator fails.
pub fn os_rng() -> Result<ChaCha20Rng> {
    ChaCha20Rng::try_from_os_rng().map_err(|e| Error::Io {
        path: None,
        source: std::io::Error::other(format!(
            "the operating system's random generator failed: {e}"
        )),
    })
}

/// Plan options for `mode` (the CLI's defaults: fusion on).
pub fn plan_options(mode: Mode) -> PlanOptions {
    PlanOptions {
        mode,
        ..PlanOptions::default()
    }
}

/// The plan a client compiles: from the public structure of `model`, so a public and a
/// private model give the same plan. Cost: compiling the plan (milliseconds).
///
/// # Errors
/// Model and parameter errors of [`Plan::compile`].
pub fn client_plan(model: &Adapter, params: &CkksParams, mode: Mode) -> Result<Plan> {
    let public = public_structure(model)?;
    Plan::compile(&public, params, plan_options(mode))
}

/// The server's plan, compiled from the private model, prepared (weights encoded), and
/// checked to have the structure of the public one.
///
/// # Errors
/// As [`Plan::compile`]; [`Error::InvalidParameters`] for a parameter set that opted out
/// of the security check (the server re-randomizes results under RLWE, as `hepeft
/// evaluate` refuses it too).
pub fn server_plan(model: &Adapter, params: &CkksParams, mode: Mode) -> Result<PreparedPlan> {
    if params.security().bits().is_none() {
        return Err(Error::params(
            "the parameter set is marked `security = \"unchecked\"`: the server refuses it, because \
             re-randomizing results (and the client's own privacy) relies on RLWE at a checked \
             security level; use a preset or hepeft.params.select",
        ));
    }
    let plan = Plan::compile(model, params, plan_options(mode))?;
    let public = client_plan(model, params, mode)?;
    if plan.structure_digest() != public.structure_digest() {
        return Err(Error::model(
            "internal error: the model and its public structure compile to different plans",
        ));
    }
    plan.prepare()
}

/// Fresh client keys for `plan`: secret, public, and exactly the evaluation keys it needs
/// (as `hepeft keygen`). Cost: one key switching key per Galois element, plus
/// relinearization if the plan multiplies ciphertexts.
///
/// # Errors
/// Key generation errors; [`Error::Io`] if the OS generator fails.
pub fn keygen(plan: &Plan) -> Result<ClientKeys> {
    ClientKeys::generate(plan, &mut os_rng()?)
}

/// Encrypts `inputs` (one `samples x dim` matrix per adapter input) into queries: one
/// sample per query in latency mode, up to N/2 in batch mode, as `hepeft encrypt`. Public
/// key encryption when the keys hold one, else seeded secret-key encryption.
///
/// # Errors
/// [`Error::DimensionMismatch`] for a wrong input count, width or sample count;
/// [`Error::InvalidValue`] for NaN / infinite values.
pub fn encrypt(
    plan: &Plan,
    encoder: &Encoder,
    keys: &ClientKeys,
    inputs: &[ArrayView2<f64>],
) -> Result<(CiphertextBundle, Binding)> {
    let specs = plan.input_dims();
    if inputs.len() != specs.len() {
        return Err(Error::dims("adapter inputs", specs.len(), inputs.len()));
    }
    let samples = inputs.first().map_or(0, |m| m.nrows());
    if samples == 0 {
        return Err(Error::dims("samples (at least one)", 1, 0));
    }
    if let Some(m) = inputs.iter().find(|m| m.nrows() != samples) {
        return Err(Error::dims("samples of every input", samples, m.nrows()));
    }
    let chunk = match plan.options().mode {
        Mode::Latency => 1,
        Mode::Batch => plan.params().slots(),
    };
    let key = match &keys.public {
        Some(pk) => EncryptionKey::Public(pk),
        None => EncryptionKey::Secret(&keys.secret),
    };
    let mut rng = os_rng()?;
    let mut items = Vec::new();
    let mut queries = Vec::new();
    let mut start = 0;
    while start < samples {
        let end = (start + chunk).min(samples);
        let views: Vec<ArrayView2<f64>> = inputs
            .iter()
            .map(|m| m.slice_axis(Axis(0), Slice::from(start..end)))
            .collect();
        items.extend(plan.encrypt_query(encoder, key, &views, &mut rng)?);
        queries.push(end - start);
        start = end;
    }
    let binding = hepeft::session::query_binding(keys.binding.key_set, plan, &queries);
    Ok((
        CiphertextBundle {
            digest: plan.params().digest(),
            items,
        },
        binding,
    ))
}

/// The sanitization the server applies: flooding at `flooding_bits` (statistical
/// security) for `queries` decryptions, or none.
pub fn sanitize_config(flooding_bits: Option<u32>, queries: u64) -> SanitizeConfig {
    SanitizeConfig {
        flooding: flooding_bits.map(|s| FloodingConfig::new(s, queries.max(1))),
    }
}

/// Server side, as `hepeft evaluate`: checks the evaluation keys (bound to their public
/// key and to this plan, covering every key it uses) and the query (a query under that key
/// set, for this plan), evaluates every query, and sanitizes each result (mask, level 0,
/// re-randomization under the client's public key, flooding). Cost: the plan's key
/// switches per query plus one encryption of zero per result ciphertext.
///
/// # Errors
/// The binding checks of `hepeft::session`; [`Error::InvalidValue`] when flooding would
/// leave less than one bit of precision; evaluation errors.
pub fn evaluate(
    prepared: &PreparedPlan,
    eval: &Arc<EvaluationKeys>,
    eval_binding: &Binding,
    query: &CiphertextBundle,
    query_binding: &Binding,
    cfg: &SanitizeConfig,
) -> Result<(CiphertextBundle, Binding, Option<SanitizeReport>)> {
    let plan = prepared.plan();
    let params = plan.params();
    let key_set = hepeft::session::check_eval_keys(params, eval, Some(eval_binding), Some(plan))?;
    let client_pk = eval
        .public_key()
        .cloned()
        .ok_or_else(|| Error::MissingKey {
            what:
                "public key in the evaluation keys (the server re-randomizes every result under it)"
                    .into(),
        })?;
    if let Some(f) = &cfg.flooding {
        let bits = plan.flooded_precision_bits(f);
        if bits < 1.0 {
            return Err(Error::InvalidValue {
                context: "noise flooding".into(),
                reason: format!(
                    "flooding at {} bits would leave {bits:.1} bits of precision with these parameters: \
                     choose parameters with a larger scale (hepeft.params.select(..., flooding_bits={})), \
                     lower flooding_bits, or, for a trusted client only, flooding_bits=None",
                    f.statistical_security, f.statistical_security
                ),
            });
        }
    }
    let query_binding = hepeft::session::check_query_matches_keys(
        Some(query_binding),
        key_set,
        plan,
        query.items.len(),
    )?;
    let ev = Evaluator::with_keys(params, Arc::clone(eval))?;
    let mut rng = os_rng()?;
    let per = plan.input_ciphertexts().max(1);
    let mut out = Vec::with_capacity(query_binding.queries.len() * plan.output_ciphertexts());
    let mut report = None;
    for cts in query.items.chunks(per) {
        let res = prepared.evaluate(&ev, cts)?;
        let (clean, rep) = plan.sanitize(&ev, res, &client_pk, cfg, &mut rng)?;
        report = Some(rep);
        out.extend(clean);
    }
    let binding = hepeft::session::result_binding(&query_binding, plan);
    Ok((
        CiphertextBundle {
            digest: params.digest(),
            items: out,
        },
        binding,
        report,
    ))
}

/// Client side, as `hepeft decrypt`: checks the result belongs to these keys and this plan
/// (at level 0), decrypts and decodes it into `samples x output_dim`.
///
/// # Errors
/// The binding checks of `hepeft::session`; decoding errors.
pub fn decrypt(
    plan: &Plan,
    encoder: &Encoder,
    keys: &ClientKeys,
    result: &CiphertextBundle,
    binding: &Binding,
) -> Result<Array2<f64>> {
    let b = hepeft::session::check_result_matches_secret(
        Some(binding),
        &keys.binding,
        plan,
        &result.items,
    )?;
    let dec = Decryptor::new(plan.params(), &keys.secret)?;
    let per = plan.output_ciphertexts().max(1);
    let samples: usize = b.queries.iter().map(|&q| q as usize).sum();
    let mut logits = Array2::zeros((samples, plan.output_dim()));
    let mut row = 0;
    for (q, cts) in b.queries.iter().zip(result.items.chunks(per)) {
        let q = *q as usize;
        let part = plan.decrypt_result(encoder, &dec, cts, q)?;
        if row + part.nrows() > samples {
            return Err(Error::dims("result samples", samples, row + part.nrows()));
        }
        logits
            .slice_axis_mut(Axis(0), Slice::from(row..row + part.nrows()))
            .assign(&part);
        row += part.nrows();
    }
    Ok(logits)
}
