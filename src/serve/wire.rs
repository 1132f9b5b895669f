//! Request and response bodies of `/v1/evaluate`: ciphertext bundle envelopes.

use crate::ckks::{
    from_bytes_bound, to_bytes_bound, Ciphertext, CiphertextBundle, CkksParams, HeObject,
};
use crate::io::binding::{Binding, KeySetId, Role};
use crate::io::format::{peek_header, read_envelope, PayloadReader, FLAG_BOUND};
use crate::plan::Plan;
use crate::session::{self, Query};
use crate::{Error, Result};

/// Parses one or more `CiphertextBundle` envelopes written back to back and splits their
/// ciphertexts into queries of the plan's input size. Every bundle must be a query bound
/// to `key_set` (the registered evaluation keys' key set) and `plan`
/// (`session::check_query_matches_keys`). Returns them as one query whose binding lists
/// every bundle's samples in order.
pub(crate) fn read_queries(
    params: &CkksParams,
    body: &[u8],
    plan: &Plan,
    key_set: KeySetId,
) -> Result<Query> {
    let per_query = plan.input_ciphertexts();
    let mut all_samples = Vec::new();
    if body.is_empty() {
        return Err(Error::format("ciphertext bundle", "empty body"));
    }
    if per_query == 0 {
        return Err(Error::model("plan takes no input ciphertexts"));
    }
    let mut cursor = body;
    let mut items = Vec::new();
    let mut index = 0usize;
    while !cursor.is_empty() {
        // One envelope per stream for `read_envelope`: cut this one out by its header.
        let total = peek_header(cursor)
            .ok()
            .and_then(|h| h.total_len())
            .and_then(|t| usize::try_from(t).ok())
            .map_or(cursor.len(), |t| t.min(cursor.len()));
        let (mut one, rest) = cursor.split_at(total);
        cursor = rest;
        let env = read_envelope(
            &mut one,
            CiphertextBundle::KIND,
            CiphertextBundle::max_payload(params),
        )
        .map_err(|e| match e {
            Error::Format { what, reason } => {
                Error::format(what, format!("bundle {index}: {reason}"))
            }
            other => other,
        })?;
        env.check_params(&params.digest(), &format!("ciphertext bundle {index}"))?;
        let mut r = PayloadReader::new(&env.payload, CiphertextBundle::WHAT);
        let binding = if env.flags & FLAG_BOUND != 0 {
            Some(Binding::read(&mut r)?)
        } else {
            None
        };
        let bundle = CiphertextBundle::read_payload(params, &mut r)?;
        r.finish()?;
        let n = bundle.items.len();
        if n == 0 || n % per_query != 0 {
            return Err(Error::dims(
                format!("ciphertexts in bundle {index} (a positive multiple of the query size)"),
                per_query,
                n,
            ));
        }
        let b =
            session::check_query_matches_keys(binding.as_ref(), key_set, plan, n).map_err(|e| {
                match e {
                    Error::Mismatch { what, reason } => {
                        Error::mismatch(what, format!("bundle {index}: {reason}"))
                    }
                    other => other,
                }
            })?;
        all_samples.extend(b.queries);
        items.extend(bundle.items);
        index += 1;
    }
    let binding = Binding {
        role: Role::Query,
        key_set,
        structure: plan.structure_digest(),
        per_query: per_query as u32,
        queries: all_samples,
    };
    Ok(Query { items, binding })
}

/// One bundle envelope holding `cts` in order, with `binding`.
pub(crate) fn write_bundle(
    params: &CkksParams,
    cts: Vec<Ciphertext>,
    binding: &Binding,
) -> Result<Vec<u8>> {
    to_bytes_bound(
        params,
        &CiphertextBundle {
            digest: params.digest(),
            items: cts,
        },
        binding,
    )
}

/// Parses exactly one bundle envelope and its binding.
pub(crate) fn read_bundle(
    params: &CkksParams,
    body: &[u8],
) -> Result<(Vec<Ciphertext>, Option<Binding>)> {
    let (b, binding): (CiphertextBundle, _) = from_bytes_bound(params, body)?;
    Ok((b.items, binding))
}
