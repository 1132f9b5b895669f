//! Layer 2: the plaintext model of an adapter.
//!
//! * [`activation`]: polynomial activations in the Chebyshev basis on a declared interval.
//! * [`layer`] and [`adapter`]: the operations and the shape-checked graph ([`Adapter`]).
//! * [`reference`](mod@reference): the `f64` evaluator, the plaintext twin of every encrypted run.
//! * [`zoo`]: seeded random adapters for tests, benches and demos.
//! * [`load`]: model cards + safetensors, Hugging Face PEFT LoRA files, `.npy` features,
//!   re-exported from [`tensors`], [`peft`] (with [`peft_config`]), [`card`] and [`npy`].
//! * [`import`]: a model card from a PEFT checkpoint and the base weights (`hepeft import-peft`).
//!
//! Everything here is `f64` and knows nothing about encryption.

pub mod activation;
pub mod adapter;
pub mod card;
pub mod import;
pub mod layer;
pub mod load;
pub mod npy;
pub mod peft;
pub mod peft_config;
pub mod reference;
pub mod tensors;
pub mod token;
pub mod token_card;
pub mod token_npy;
pub mod zoo;

pub use activation::{Activation, ActivationFn};
pub use adapter::{Adapter, AdapterBuilder};
pub use layer::{InputSpec, Node, NodeRef, Op};
pub use reference::{
    evaluate, evaluate_batch, evaluate_exact_fn, evaluate_exact_fn_batch, PolyStats,
    ReferenceReport,
};
