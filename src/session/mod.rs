//! The protocol shared by the CLI and the service: what binds keys, queries and results to
//! each other and to a plan.
//!
//! [`binding`] holds every check that two objects belong together (a secret key and a
//! public key, evaluation keys and a plan, a query and evaluation keys, a result and a
//! secret key). The CLI (`src/cli/cmd`) and the HTTP service (`src/serve`) call these
//! functions; none of them re-implements a check.

pub mod binding;

pub use binding::{
    check_eval_keys, check_keys_cover_plan, check_query_matches_keys, check_result_matches_secret,
    check_secret_matches_public, eval_keys_id, key_set_id, query_binding, require_binding,
    result_binding,
};
