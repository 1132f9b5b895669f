//! Layer 1': the exact backend, quantized integer arithmetic on TFHE (tfhe-rs `core_crypto`).
//!
//! Nothing cryptographic is reimplemented here: keys, encryption, keyswitching, modulus
//! switching and bootstrapping are tfhe-rs functions, run with the dimensions, key and
//! noise distributions of a vetted tfhe-rs parameter set ([`params`]). What this module adds
//! is the *encoding* (modular integers at scale `2^(64-p)`, see [`eval`]), exact low-bit
//! removal with two bootstrappings ([`Evaluator::drop_low_nibble`]), lookup tables at any
//! output scale ([`Lut`]), the noise and failure-probability model ([`noise`]) and the file
//! payloads ([`io`]). The quantized plan that drives it lives in
//! [`plan::quantize`](fn@crate::plan::quantize). Design and parameter justification:
//! `docs/exact.md`.

pub mod eval;
pub mod io;
pub mod keys;
pub mod noise;
pub mod params;
pub mod sanitize;

pub use eval::{
    encode, lut6_split, lut6_value, to_signed, Evaluator, ExactCiphertext, Lut, SeededCiphertexts,
    TOP_DIGITS_CENTRE,
};
pub use keys::{
    generate_key_set, generate_keys, ClientKey, CompressedServerKey, KeySet, ServerKey,
};
pub use params::{
    DecompositionBaseLog, DecompositionLevelCount, ExactParams, ExactParamsLiteral, GlweDimension,
    LweDimension, PolynomialSize, DEFAULT_VETTED, READ_BITS,
};
pub use sanitize::{sanitize_pbs, ExactPublicKey};
