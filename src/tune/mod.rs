//! Private adapter tuning with encrypted forward passes only (zeroth-order, SPSA/MeZO-style):
//! the model owner adapts its private adapter to a client's private labelled data. The owner
//! never sees features, labels, logits or losses; the client never sees a weight.
//!
//! Each step costs `2k` encrypted forward passes in the batch layout (no rotation), one
//! download of `2k` sanitized results, and an upload of `k` scalars (`18 + 8k` bytes); see
//! [`protocol`] for the step, [`privacy`] for what the scalars reveal and the optional
//! differential-privacy noise, and `docs/tuning.md` for the threat model and measurements.
//!
//! ```text
//! server                                   client
//!   theta, secret seed                       features, labels, secret key
//!                      <-- encrypted batch (once), public and evaluation keys
//!   z_j = PRG(seed, step), j < k
//!   results of theta +- eps z_j  -------->   decrypt, losses L+-_j
//!                      <-- g_j = clip((L+_j - L-_j) / 2 eps) (+ noise), k scalars
//!   theta -= lr/k sum_j g_j z_j
//! ```
//!
//! Every step has a plaintext twin: run the same [`TuneServer::perturbed_adapters`] through
//! [`crate::model::reference::evaluate_batch`] and feed the logits to the same
//! [`TuneClient::reply`]; encrypted and plaintext trajectories then differ only by CKKS noise.

pub mod local;
pub mod privacy;
pub mod protocol;
pub mod theta;

pub use local::{run_local, run_plain, LocalReport, LocalRun, StepRecord};
pub use privacy::{PrivacyLedger, ReplyPrivacy};
pub use protocol::{
    batch_options, loss_and_accuracy, per_sample_cross_entropy, Applied, StepReply, StepResults,
    TuneClient, TuneConfig, TuneServer,
};
pub use theta::{ThetaLayout, Trainable};
