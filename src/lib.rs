//! # hepeft
//!
//! Private inference of parameter-efficient fine-tuned adapters under RNS-CKKS.
//!
//! Layers point one way only:
//!
//! ```text
//! math  ->  ckks | exact  ->  model  ->  plan  ->  select  ->  session  ->  cli | serve
//! ```
//!
//! `exact` (feature `exact`, on by default) is the TFHE backend: quantized heads evaluated
//! bit-exactly with tfhe-rs (see `docs/exact.md`).

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
