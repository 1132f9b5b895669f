//! Request and response bodies of `/v1/evaluate`: ciphertext bundle envelopes.

use crate::ckks::serialize::MAX_PAYLOAD;
use crate::ckks::{to_bytes, Ciphertext, CiphertextBundle, CkksParams, HeObject};
use crate::io::format::{peek_header, read_envelope, PayloadReader};
use crate::{Error, Result};

/// Parses one or more `CiphertextBundle` envelopes written back to back and splits their
/// ciphertexts into queries of `per_query` ciphertexts each. Every bundle must hold a
/// positive multiple of `per_query`.
pub(crate) fn read_queries(
    params: &CkksParams,
    body: &[u8],
    per_query: usize,
) -> Result<Vec<Vec<Ciphertext>>> {
    if body.is_empty() {
        return Err(Error::format("ciphertext bundle", "empty body"));
    }
    if per_query == 0 {
        return Err(Error::model("plan takes no input ciphertexts"));
    }
    let mut cursor = body;
    let mut queries = Vec::new();
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
        let env =
            read_envelope(&mut one, CiphertextBundle::KIND, MAX_PAYLOAD).map_err(|e| match e {
                Error::Format { what, reason } => {
                    Error::format(what, format!("bundle {index}: {reason}"))
                }
                other => other,
            })?;
        env.check_params(&params.digest(), &format!("ciphertext bundle {index}"))?;
        let mut r = PayloadReader::new(&env.payload, CiphertextBundle::WHAT);
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
        let mut items = bundle.items.into_iter();
        for _ in 0..n / per_query {
            queries.push(items.by_ref().take(per_query).collect());
        }
        index += 1;
    }
    Ok(queries)
}

/// One bundle envelope holding `cts` in order.
pub(crate) fn write_bundle(params: &CkksParams, cts: Vec<Ciphertext>) -> Result<Vec<u8>> {
    to_bytes(
        params,
        &CiphertextBundle {
            digest: params.digest(),
            items: cts,
        },
    )
}

/// Parses exactly one bundle envelope.
pub(crate) fn read_bundle(params: &CkksParams, body: &[u8]) -> Result<Vec<Ciphertext>> {
    let b: CiphertextBundle = crate::ckks::from_bytes(params, body)?;
    Ok(b.items)
}
