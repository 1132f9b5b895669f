//! # hepeft
//!
//! Private inference of parameter-efficient fine-tuned adapters under RNS-CKKS.
//!
//! Layers point one way only:
//!
//! ```text
//! math  ->  ckks  ->  model  ->  plan  ->  select  ->  cli
//! ```

pub mod error;
pub mod model;

pub use error::Error;

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;
