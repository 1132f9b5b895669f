//! # hepeft
//!
//! Private inference of parameter-efficient fine-tuned adapters under RNS-CKKS.
//!
//! Layers point one way only (a module names only modules to its left or above it):
//!
//! ```text
//! math  ->  ckks | exact        model        io (envelopes, binding, bounded readers)
//!               \               |           /
//!                +---------->  plan  <-----+      (compile, fuse, layouts, run, sanitize)
//!                               |
//!                             select                (parameters from depth and precision)
//!                               |
//!                  session (binding checks)   tune (private tuning: server, client, twin)
//!                               |
//!                          cli | serve              (thin front ends)
//! ```
//!
//! `exact` (feature `exact`, on by default) is the TFHE backend: quantized heads evaluated
//! bit-exactly with tfhe-rs (see `docs/exact.md`). `session` holds, once, every check that
//! ties keys, queries, results and plans together (the CLI and the service call it);
//! `tune` runs private tuning over the batch layout (`docs/tuning.md`).

pub mod ckks;
pub mod error;
#[cfg(feature = "exact")]
pub mod exact;
pub mod io;
pub mod math;
pub mod model;
pub mod plan;
pub mod select;
#[cfg(feature = "serve")]
pub mod serve;
pub mod session;
pub mod tune;

pub use error::Error;

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;
