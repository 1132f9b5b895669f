//! # hepeft
//!
//! Private inference of parameter-efficient fine-tuned adapters under RNS-CKKS.
//!
//! Layers point one way only:
//!
//! ```text
//! math  ->  ckks  ->  model  ->  plan  ->  select  ->  cli
//! ```

pub mod ckks;
pub mod error;
pub mod io;
pub mod math;
pub mod model;
pub mod plan;
pub mod select;
#[cfg(feature = "serve")]
pub mod serve;

pub use error::Error;

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;
