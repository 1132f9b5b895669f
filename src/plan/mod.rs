//! Layer 3: compile an [`Adapter`](crate::model::Adapter) into an encrypted execution plan.
//!
//! A [`Plan`] is derived from the adapter's *structure* only (shapes, activation degrees):
//! the client, who never sees the weights, compiles the same plan from the public model
//! description and gets the same input layout and the same Galois elements, so keygen,
//! encryption and evaluation cannot drift. The server then [`Plan::prepare`]s the plan with
//! the real weights (encoded diagonals, biases) and [`PreparedPlan::evaluate`]s queries.
//!
//! Two layouts:
//! - [`Mode::Latency`]: one sample; each vector is packed in slots, replicated with a
//!   power-of-two period, and matrix products use the diagonal method with baby-step
//!   giant-step and hoisted rotations (rectangular blocks use `min(m, n)` diagonals plus a
//!   rotate-and-sum when the matrix is wide). Vectors wider than N/2 are split in segments.
//! - [`Mode::Batch`]: up to N/2 samples; one ciphertext per feature, samples in slots.
//!   Linear layers need no rotation at all (constant products only). With
//!   [`PlanOptions::batch_pack`] `= g > 1` the client packs `g` features per query
//!   ciphertext (blocks of N/(2g) samples) and the server unpacks them with `g - 1`
//!   rotations each before the first stage: a `g`-fold smaller query.

mod bounds;
mod compile;
#[cfg(feature = "exact")]
pub mod exact;
mod fuse;
mod layout;
pub mod public;
#[cfg(feature = "exact")]
pub use self::exact as quantize;
mod run_ckks;
#[cfg(feature = "exact")]
mod run_exact;
pub mod sanitize;
pub mod token;

pub use compile::{
    InputLayout, Mode, Plan, PlanOptions, StageReport, AUTO_MAX_COPIES, MAX_BATCH_PACK,
    PRE_ROTATE_AUTO,
};
#[cfg(feature = "exact")]
pub use exact::{
    argmax_one_hot, argmax_pbs, argmax_reductions, quantize, QuantPublic, QuantizeOptions,
    QuantizedPlan, ARGMAX_LOG_MODULUS, ARGMAX_MAX_CLASSES,
};
pub use fuse::depth_lower_bound;
pub use layout::Segment;
pub use public::public_structure;
pub use run_ckks::PreparedPlan;
#[cfg(feature = "exact")]
pub use run_exact::ExactRun;
pub use sanitize::{FloodingConfig, SanitizeConfig, SanitizeReport, DEFAULT_STATISTICAL_SECURITY};
