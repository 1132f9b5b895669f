//! Binding checks: each object names the key set, plan and role it belongs to (the
//! binding block of `io::binding`, inside the checksummed envelope), and every consumer
//! checks it here before using the object.
//!
//! | object | role | key set | plan structure | also checked |
//! |---|---|---|---|---|
//! | secret key | keys | id of its public key | plan of keygen | against `plan.json`'s `key_id` |
//! | evaluation keys | keys | id of the public key they carry | plan of keygen | covers the plan's Galois elements and relinearization |
//! | query | query | public key it was encrypted under | plan compiled by the client | ciphertexts per query, count |
//! | result | result | copied from the query | the server's plan | ciphertexts per query, count, level 0 |
//!
//! Each check costs a few comparisons; [`key_set_id`] hashes the public key once
//! (SHA-256 over its serialized bytes, about 1 ms per MiB).

use sha2::{Digest, Sha256};

use crate::ckks::{to_bytes, Ciphertext, CkksParams, EvaluationKeys, PublicKey};
use crate::io::binding::{Binding, KeySetId, Role};
use crate::io::format::digest_hex;
use crate::plan::Plan;
use crate::{Error, Result};

fn short(d: &[u8; 32]) -> String {
    digest_hex(d).chars().take(16).collect()
}

/// The key-set id of `pk`: the first 8 bytes of SHA-256 of its public-key file (the bytes
/// `save` writes, so it equals `key_id` in `plan.json`).
///
/// # Errors
/// [`Error::ParameterMismatch`] if `pk` belongs to other parameters.
pub fn key_set_id(params: &CkksParams, pk: &PublicKey) -> Result<KeySetId> {
    let bytes = to_bytes(params, pk)?;
    let d = Sha256::digest(&bytes);
    let mut id = [0u8; 8];
    for (o, b) in id.iter_mut().zip(d.iter()) {
        *o = *b;
    }
    Ok(KeySetId(id))
}

/// The key-set id of evaluation keys: that of the public key they carry.
///
/// # Errors
/// [`Error::MissingKey`] if they carry none (written before issue 8).
pub fn eval_keys_id(params: &CkksParams, eval: &EvaluationKeys) -> Result<KeySetId> {
    let pk = eval.public_key().ok_or_else(|| Error::MissingKey {
        what: "public key in the evaluation keys (the server re-randomizes every result under \
               it, and it identifies the key set; regenerate the keys with this version)"
            .into(),
    })?;
    key_set_id(params, pk)
}

/// Returns the binding of `what`, or refuses an object written without one.
///
/// # Errors
/// [`Error::Mismatch`] ("binding") naming `what`.
pub fn require_binding(binding: Option<Binding>, what: &str) -> Result<Binding> {
    binding.ok_or_else(|| {
        Error::mismatch(
            "binding",
            format!(
                "{what} carries no binding block (written before issue 20, or by another tool): \
                 nothing ties it to a key set and plan; regenerate it with this version"
            ),
        )
    })
}

pub(crate) fn check_role(b: &Binding, want: Role, what: &str) -> Result<()> {
    if b.role == want {
        Ok(())
    } else {
        Err(Error::mismatch(
            "role",
            format!(
                "{what} is bound as a {} but a {want} is expected{}",
                b.role,
                match (b.role, want) {
                    (Role::Query, Role::Result) =>
                        " (a query cannot be decrypted as a result: evaluate it first)",
                    (Role::Result, Role::Query) => " (a result cannot be evaluated again)",
                    _ => "",
                }
            ),
        ))
    }
}

fn check_structure(b: &Binding, plan: &Plan, what: &str) -> Result<()> {
    let want = plan.structure_digest();
    if b.structure == want {
        Ok(())
    } else {
        Err(Error::mismatch(
            "plan",
            format!(
                "{what}: made for a plan with structure digest {}, this plan is {} \
                 (another model card, mode or parameter set)",
                short(&b.structure),
                short(&want)
            ),
        ))
    }
}

pub(crate) fn check_key_set(
    found: KeySetId,
    want: KeySetId,
    what: &str,
    against: &str,
) -> Result<()> {
    if found == want {
        Ok(())
    } else {
        Err(Error::mismatch(
            "key set",
            format!("{what} belongs to key set {found}, {against} to key set {want}"),
        ))
    }
}

/// Checks that evaluation keys hold every key `plan` uses: the Galois keys of all its
/// rotations and, if it multiplies ciphertexts, a relinearization key. The one home of
/// "do these keys cover this plan" (CLI `evaluate`, `serve`, the query client).
///
/// # Errors
/// [`Error::MissingKey`] naming the missing Galois elements or the relinearization key.
pub fn check_keys_cover_plan(plan: &Plan, eval: &EvaluationKeys) -> Result<()> {
    let needed = plan.galois_elements();
    let missing: Vec<crate::ckks::GaloisElement> = needed
        .iter()
        .copied()
        .filter(|g| eval.galois(*g).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingKey {
            what: format!(
                "Galois keys for elements {missing:?} ({} of the plan's {} present): the keys \
                 were generated for another model or mode; generate them from this plan",
                needed.len() - missing.len(),
                needed.len()
            ),
        });
    }
    if plan.needs_relin() && eval.relin().is_none() {
        return Err(Error::MissingKey {
            what: "relinearization key: the plan multiplies ciphertexts and the keys have none \
                   (generated for another model); generate them from this plan"
                .into(),
        });
    }
    Ok(())
}

/// Checks evaluation keys as a server receives them: they carry a public key, they are
/// bound as keys of that public key's key set and, when `plan` is given, made for it and
/// covering it. Returns the key-set id.
///
/// # Errors
/// [`Error::MissingKey`], [`Error::Mismatch`] naming the mismatch.
pub fn check_eval_keys(
    params: &CkksParams,
    eval: &EvaluationKeys,
    binding: Option<&Binding>,
    plan: Option<&Plan>,
) -> Result<KeySetId> {
    params.check_digest("evaluation keys", &eval.params_digest())?;
    let id = eval_keys_id(params, eval)?;
    let b = require_binding(binding.cloned(), "the evaluation keys")?;
    check_role(&b, Role::Keys, "the evaluation-key file")?;
    check_key_set(
        b.key_set,
        id,
        "the evaluation-key file's binding",
        "the public key inside it",
    )?;
    if let Some(plan) = plan {
        check_keys_cover_plan(plan, eval)?;
        check_structure(&b, plan, "the evaluation keys")?;
    }
    Ok(id)
}

/// Checks that a secret key belongs to the key set `public` (the id of `public.key`, or
/// `key_id` of `plan.json`), and, if `plan` is given, was made for it.
///
/// # Errors
/// [`Error::Mismatch`]: no binding, not bound as keys, another key set or plan.
pub fn check_secret_matches_public(
    secret: Option<&Binding>,
    public: KeySetId,
    plan: Option<&Plan>,
) -> Result<Binding> {
    let b = require_binding(secret.cloned(), "the secret key")?;
    check_role(&b, Role::Keys, "the secret-key file")?;
    check_key_set(b.key_set, public, "the secret key", "the public key")?;
    if let Some(plan) = plan {
        check_structure(&b, plan, "the secret key")?;
    }
    Ok(b)
}

/// Checks a query against the evaluation keys' key set and the plan: bound as a query,
/// encrypted under `keys`, made for `plan`, with the plan's ciphertexts per query and
/// `ciphertexts` in all.
///
/// # Errors
/// [`Error::Mismatch`] or [`Error::DimensionMismatch`] naming the mismatch.
pub fn check_query_matches_keys(
    query: Option<&Binding>,
    keys: KeySetId,
    plan: &Plan,
    ciphertexts: usize,
) -> Result<Binding> {
    let b = require_binding(query.cloned(), "the query")?;
    check_role(&b, Role::Query, "the ciphertext")?;
    check_key_set(
        b.key_set,
        keys,
        "the query",
        "the evaluation keys (another client's keys: the result would be garbage)",
    )?;
    check_structure(&b, plan, "the query")?;
    check_shape(&b, plan.input_ciphertexts(), ciphertexts, "query")?;
    Ok(b)
}

fn check_shape(b: &Binding, per: usize, ciphertexts: usize, what: &str) -> Result<()> {
    if b.per_query as usize != per {
        return Err(Error::mismatch(
            "plan",
            format!(
                "the {what} is bound to {} ciphertexts per query, the plan has {per}",
                b.per_query
            ),
        ));
    }
    if b.queries.is_empty() || b.queries.contains(&0) {
        return Err(Error::format(
            what,
            "the binding lists no queries, or an empty one",
        ));
    }
    let expect = b.queries.len().saturating_mul(per);
    if expect != ciphertexts {
        return Err(Error::dims(
            format!(
                "ciphertexts of the {what} ({} quer(ies) of {per} in its binding)",
                b.queries.len()
            ),
            expect,
            ciphertexts,
        ));
    }
    Ok(())
}

/// Checks a result against the secret key's binding and the plan: bound as a result,
/// encrypted under the secret key's key set, made for `plan`, with the plan's output
/// ciphertexts per query, and every ciphertext at level 0 (the server sanitizes results
/// down to level 0; a fresh query sits at the top level).
///
/// # Errors
/// [`Error::Mismatch`] or [`Error::DimensionMismatch`] naming the mismatch.
pub fn check_result_matches_secret(
    result: Option<&Binding>,
    secret: &Binding,
    plan: &Plan,
    cts: &[Ciphertext],
) -> Result<Binding> {
    let b = require_binding(result.cloned(), "the result")?;
    check_role(&b, Role::Result, "the ciphertext")?;
    check_key_set(
        b.key_set,
        secret.key_set,
        "the result",
        "the secret key (it cannot decrypt it)",
    )?;
    check_structure(&b, plan, "the result")?;
    check_shape(&b, plan.output_ciphertexts(), cts.len(), "result")?;
    let floor = plan.params().output_floor_level();
    if let Some((i, ct)) = cts.iter().enumerate().find(|(_, c)| c.level() != floor) {
        return Err(Error::mismatch(
            "level",
            format!(
                "result ciphertext {i} is at level {}, a sanitized result is at level {floor} \
                 (is this an unevaluated query?)",
                ct.level()
            ),
        ));
    }
    Ok(b)
}

/// The binding of a query: encrypted under `key_set` for `plan`, `queries[i]` samples in
/// query `i`.
pub fn query_binding(key_set: KeySetId, plan: &Plan, queries: &[usize]) -> Binding {
    Binding {
        role: Role::Query,
        key_set,
        structure: plan.structure_digest(),
        per_query: plan.input_ciphertexts() as u32,
        queries: queries.iter().map(|&q| q as u32).collect(),
    }
}

/// The binding of the result of `query` under `plan`: same key set and queries, role
/// result, the plan's output ciphertexts per query.
pub fn result_binding(query: &Binding, plan: &Plan) -> Binding {
    Binding {
        role: Role::Result,
        key_set: query.key_set,
        structure: plan.structure_digest(),
        per_query: plan.output_ciphertexts() as u32,
        queries: query.queries.clone(),
    }
}
