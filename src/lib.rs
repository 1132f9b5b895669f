//! # hepeft
//!
//! Private inference of parameter-efficient fine-tuned adapters under RNS-CKKS.
//!
//! Layers point one way only (a module names only modules to its left or above it):
//!
//! ```text
//! math  ->  ckks | exact        model        io (envelope, payload, fs, binding, limits, object)
//!               \               |           /
//!                +---------->  plan  <-----+      (compile, fuse, layouts, run, sanitize policy)
//!                               |
//!                             select                (parameters from depth and precision)
//!                               |
//!                            session                (the protocol: key directory, Client,
//!                           /   |   \               Server, queries, results, description)
//!                      cli  serve  python           (thin front ends; tune rides beside)
//! ```
//!
//! `ckks` owns the scheme operations, re-randomization and noise flooding included
//! (`ckks::sanitize`); `plan::sanitize` only decides which ciphertexts get them and how wide
//! the flooding is. `exact` (feature `exact`, on by default) is the TFHE backend: quantized heads evaluated
//! bit-exactly with tfhe-rs (see `docs/exact.md`). `session` is the one home of the
//! client/server protocol: the key directory and its metadata, `Client::{keygen,
//! encrypt_samples, decrypt}`, `Server::{check_keys, evaluate_queries}` (sanitization
//! inside), query and result metadata, the model description, and every check that ties
//! keys, queries, results and plans together. The CLI (`src/cli`, binary only), the HTTP
//! service (`serve`) and the Python bindings call it and add only transport and reporting.
//! `tune` runs private tuning over the batch layout (`docs/tuning.md`).
//!
//! Quantities that cross these boundaries carry their units: a CKKS level is a
//! [`ckks::Level`] and a Galois element a [`ckks::GaloisElement`] from `ckks` up to the
//! reports; the exact backend's parameters hand out tfhe-rs's `LweDimension`,
//! `GlweDimension`, `PolynomialSize` and decomposition newtypes. Every object with a file of
//! its own, CKKS or exact, goes through one serialization trait, `io::object::HeObject`.

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
