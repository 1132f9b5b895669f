//! The client/server protocol as library types: the one front door the CLI
//! (`src/cli/cmd`), the HTTP service (`src/serve`) and the Python bindings call.
//!
//! | piece | module | what |
//! |---|---|---|
//! | key directory | [`keydir`] | file names, `plan.json` ([`PlanInfo`]), [`KeyDir`] |
//! | client | [`client`] | [`ClientKeys`], [`Client`]: keygen, encrypt samples, decrypt |
//! | server | [`server`] | [`Server`]: check keys, evaluate queries and sanitize results |
//! | messages | [`message`] | [`Query`] / [`QueryResult`] (`to_bytes` / `from_bytes`), [`CtMeta`] |
//! | model description | [`description`] | [`ModelDescription`] (`GET /v1/model`) |
//! | binding checks | [`binding`] | every check that two objects belong together |
//!
//! Every type here is plain Rust: no printing, no global state, randomness passed in
//! explicitly (use [`os_rng`] for the operating system's), and the objects that travel
//! have byte-level `to_bytes` / `from_bytes`.
//!
//! ```text
//! client                                   server
//! Client::keygen(plan, rng)                Server::new(plan, sanitize)
//! client.eval_keys_bytes()  ---- keys ---> server.read_keys(bytes)      (check_keys)
//! client.encrypt_samples(x) ---- query --> server.evaluate_queries(keys, query, rng)
//! client.decrypt(result)    <--- result --
//! ```

pub mod binding;
pub mod client;
pub mod description;
pub mod keydir;
pub mod message;
pub mod server;
pub mod token;

pub use binding::{
    check_eval_keys, check_keys_cover_plan, check_query_matches_keys, check_result_matches_secret,
    check_secret_matches_public, eval_keys_id, key_set_id, query_binding, require_binding,
    result_binding,
};
pub use client::{decrypt_queries, encrypt_samples, samples_per_query, Client, ClientKeys};
pub use description::{sha256_hex, ModelDescription, DESCRIPTION_FORMAT};
pub use keydir::{
    KeyDir, PlanInfo, EVAL_KEYS, PARAMS_TOML, PLAN_FORMAT, PLAN_JSON, PUBLIC_KEY, SECRET_KEY,
};
pub use message::{meta_path, Ciphertexts, CtMeta, Query, QueryResult, META_FORMAT};
pub use server::{check_flooding, check_params_secure, Server};

pub use crate::io::binding::{Binding, KeySetId, Role};

use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;

use crate::ckks::CkksParams;
use crate::model::Adapter;
use crate::plan::{public_structure, Mode, Plan, PlanOptions};
use crate::{Error, Result};

/// A ChaCha20 generator seeded from the operating system: the randomness for keys,
/// encryption and sanitization when the caller has no generator of its own.
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

/// The plan options of a session in `mode` (the other options at their defaults).
pub fn plan_options(mode: Mode) -> PlanOptions {
    PlanOptions {
        mode,
        ..PlanOptions::default()
    }
}

/// The plan a client compiles: from the public structure of the adapter (every weight
/// replaced by zero), so a public and a private card give the same plan. Costs a plan
/// compilation (layouts, level schedule, Galois elements).
///
/// # Errors
/// Compilation errors of [`Plan::compile`].
pub fn public_plan(adapter: &Adapter, params: &CkksParams, mode: Mode) -> Result<Plan> {
    public_plan_with(adapter, params, plan_options(mode))
}

/// [`public_plan`] with every plan option given (the input layout among them: the key
/// directory's `plan.json` and a query's sidecar record it, [`keydir::PlanInfo::plan_options`],
/// [`message::CtMeta::plan_options`]).
///
/// # Errors
/// Compilation errors of [`Plan::compile`].
pub fn public_plan_with(
    adapter: &Adapter,
    params: &CkksParams,
    options: PlanOptions,
) -> Result<Plan> {
    Plan::compile(&public_structure(adapter)?, params, options)
}
