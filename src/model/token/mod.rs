//! Token-level adapters: graphs whose values are `T x w` token matrices (one row per
//! token), as in CryptPEFT's one-way-communication (OWC) side network.
//!
//! A [`TokenAdapter`] is an ordered DAG of [`TokenOp`]s on named `T x d` inputs (the
//! backbone's token states at tapped layers). Token-wise maps (linear, LoRA, affine,
//! polynomial activation) act on every row independently; [`TokenOp::LinearAttention`]
//! mixes tokens with a learned `T x T` matrix instead of a softmax; [`TokenOp::Pool`]
//! reduces the `T` rows to one (`[CLS]` or mean). The output is the last node.
//!
//! [`owc_adapter`] builds CryptPEFT's architecture (the recurrence over `s` tapped layers,
//! each with a LoRA-down / encoder block / LoRA-up adapter), [`random_owc`] a seeded random
//! one, and [`evaluate_tokens`] is the `f64` twin of every encrypted run.

mod graph;
mod ops;
mod owc;
mod public;
mod twin;

pub use graph::{TokenAdapter, TokenAdapterBuilder, TokenNode};
pub use ops::{rowwise_linear, LinearAttention, Pooling, TokenOp};
pub use owc::{owc_adapter, random_owc, uniform_tokens, OwcBlock, OwcShape};
pub use public::public_token_structure;
pub use twin::{evaluate_tokens, TokenReference};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::unreachable)]
mod tests;
