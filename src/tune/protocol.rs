//! The two roles of a tuning run and the messages between them.
//!
//! One step:
//! 1. [`TuneServer::evaluate_step`]: the server draws `k` directions `z_j` from its secret
//!    seed and the step number, and evaluates the client's encrypted batch under
//!    `theta + eps z_j` and `theta - eps z_j` (`2k` forward passes in the batch layout), each
//!    result sanitized like every result the server returns ([`StepResults`]).
//! 2. [`TuneClient::decrypt_step`] and [`TuneClient::reply`]: the client decrypts, computes
//!    its losses with its labels and returns only `k` scalars ([`StepReply`]).
//! 3. [`TuneServer::apply`]: `theta <- theta - lr/k sum_j g_j z_j`.
//!
//! Both sides checkpoint after every step ([`TuneServer::save`], [`TuneClient::save`]) and
//! resume without losing or repeating one: the server refuses a reply for another step and
//! ignores a duplicate of the last one; the client resends the reply it saved (the same
//! noisy scalars, so a resend costs no privacy).
//!
//! Size: the two roles of one protocol (`TuneServer`, `TuneClient`) and their messages and checkpoints, which must change together; the loss helpers at the end are their twin.

use super::privacy::{privatize, PrivacyLedger, ReplyPrivacy};
use super::theta::{ThetaLayout, Trainable};
use crate::ckks::{
    Ciphertext, CiphertextBundle, CkksParams, Decryptor, Encoder, Evaluator, PublicKey,
};
use crate::math::sample::normal_f64;
use crate::model::Adapter;
use crate::plan::{Mode, Plan, PlanOptions, SanitizeConfig};
use crate::{Error, Result};
use ndarray::{Array2, ArrayView2, Axis};
use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use zeroize::Zeroize;

/// What the model owner chooses for a run (public: the client sees `directions` and
/// `perturbation`, which it needs to form its replies).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneConfig {
    /// Directions `k` per step (`2k` encrypted forward passes).
    pub directions: usize,
    /// Perturbation size `eps`.
    pub perturbation: f64,
    /// Learning rate `lr`.
    pub learning_rate: f64,
    /// Which parameters move.
    pub trainable: Trainable,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            directions: 4,
            perturbation: 1e-3,
            learning_rate: 1e-2,
            trainable: Trainable::All,
        }
    }
}

impl TuneConfig {
    fn check(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::InvalidValue {
                context: "tuning configuration".into(),
                reason,
            })
        };
        if self.directions == 0 || self.directions > 256 {
            return bad(format!(
                "{} directions per step; use 1 to 256",
                self.directions
            ));
        }
        if !(self.perturbation.is_finite() && self.perturbation > 0.0) {
            return bad(format!(
                "perturbation {} must be positive",
                self.perturbation
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning rate {} must be positive",
                self.learning_rate
            ));
        }
        Ok(())
    }
}

/// Server -> client: the sanitized results of the `2k` perturbed forward passes of one step,
/// in the order `+z_0, -z_0, +z_1, -z_1, ...`.
#[derive(Clone, Debug)]
pub struct StepResults {
    /// Step number.
    pub step: u64,
    /// One result (the output ciphertexts of a batch query) per perturbed adapter.
    pub outputs: Vec<Vec<Ciphertext>>,
}

/// Client -> server: the `k` scalars `g_j` of one step, and nothing else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReply {
    /// Step number.
    pub step: u64,
    /// `g_j = (L(theta + eps z_j) - L(theta - eps z_j)) / (2 eps)`, clipped and noised as
    /// the client's [`ReplyPrivacy`] says.
    pub g: Vec<f64>,
}

const REPLY_MAGIC: &[u8; 4] = b"HPTR";
const RESULTS_MAGIC: &[u8; 4] = b"HPTS";
const TUNE_WIRE_VERSION: u16 = 1;

impl StepReply {
    /// Wire form: magic `HPTR`, version (u16), step (u64), k (u32), then `k` f64, all
    /// little-endian: `18 + 8k` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + 8 * self.g.len());
        out.extend_from_slice(REPLY_MAGIC);
        out.extend_from_slice(&TUNE_WIRE_VERSION.to_le_bytes());
        out.extend_from_slice(&self.step.to_le_bytes());
        out.extend_from_slice(&(self.g.len() as u32).to_le_bytes());
        for g in &self.g {
            out.extend_from_slice(&g.to_le_bytes());
        }
        out
    }

    /// Parses [`StepReply::to_bytes`]; `k` must be at most 256 and every value finite.
    ///
    /// # Errors
    /// [`Error::Format`] for a wrong magic, version or length, or a non-finite value.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| Err(Error::format("tuning reply", reason));
        if bytes.len() < 18 || &bytes[..4] != REPLY_MAGIC {
            return bad("not a tuning reply (magic HPTR)".into());
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != TUNE_WIRE_VERSION {
            return bad(format!(
                "version {version}, this build reads {TUNE_WIRE_VERSION}"
            ));
        }
        let mut step = [0u8; 8];
        step.copy_from_slice(&bytes[6..14]);
        let mut k = [0u8; 4];
        k.copy_from_slice(&bytes[14..18]);
        let k = u32::from_le_bytes(k) as usize;
        if k == 0 || k > 256 || bytes.len() != 18 + 8 * k {
            return bad(format!(
                "{} bytes for {k} scalars (expected 18 + 8k, 1 <= k <= 256)",
                bytes.len()
            ));
        }
        let g: Vec<f64> = bytes[18..]
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                f64::from_le_bytes(w)
            })
            .collect();
        if g.iter().any(|v| !v.is_finite()) {
            return bad("a scalar is not finite".into());
        }
        Ok(StepReply {
            step: u64::from_le_bytes(step),
            g,
        })
    }
}

impl StepResults {
    /// Wire form: magic `HPTS`, version (u16), step (u64), passes (u32), ciphertexts per pass
    /// (u32), then one ciphertext bundle (the library's versioned, checksummed format).
    ///
    /// # Errors
    /// Serialization errors of the ciphertexts.
    pub fn to_bytes(&self, params: &CkksParams) -> Result<Vec<u8>> {
        let per = self.outputs.first().map_or(0, |o| o.len());
        if self.outputs.iter().any(|o| o.len() != per) {
            return Err(Error::model("every pass must return as many ciphertexts"));
        }
        let bundle = CiphertextBundle {
            digest: params.digest(),
            items: self.outputs.iter().flatten().cloned().collect(),
        };
        let mut out = Vec::new();
        out.extend_from_slice(RESULTS_MAGIC);
        out.extend_from_slice(&TUNE_WIRE_VERSION.to_le_bytes());
        out.extend_from_slice(&self.step.to_le_bytes());
        out.extend_from_slice(&(self.outputs.len() as u32).to_le_bytes());
        out.extend_from_slice(&(per as u32).to_le_bytes());
        out.extend_from_slice(&crate::ckks::serialize::to_bytes(params, &bundle)?);
        Ok(out)
    }

    /// Parses [`StepResults::to_bytes`] under `params`.
    ///
    /// # Errors
    /// [`Error::Format`] for a wrong header or counts; the bundle reader's errors.
    pub fn from_bytes(params: &CkksParams, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| Err(Error::format("tuning step results", reason));
        if bytes.len() < 22 || &bytes[..4] != RESULTS_MAGIC {
            return bad("not tuning step results (magic HPTS)".into());
        }
        if u16::from_le_bytes([bytes[4], bytes[5]]) != TUNE_WIRE_VERSION {
            return bad("unsupported version".into());
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut step = [0u8; 8];
        step.copy_from_slice(&bytes[6..14]);
        let (passes, per) = (u32_at(14) as usize, u32_at(18) as usize);
        if passes == 0 || passes > 512 || per == 0 {
            return bad(format!("{passes} passes of {per} ciphertexts"));
        }
        let bundle: CiphertextBundle = crate::ckks::serialize::from_bytes(params, &bytes[22..])?;
        if bundle.items.len() != passes * per {
            return bad(format!(
                "{} ciphertexts for {passes} passes of {per}",
                bundle.items.len()
            ));
        }
        let mut items = bundle.items.into_iter();
        let outputs = (0..passes)
            .map(|_| items.by_ref().take(per).collect())
            .collect();
        Ok(StepResults {
            step: u64::from_le_bytes(step),
            outputs,
        })
    }
}

/// The model owner's side: the adapter, its secret direction seed and the step counter.
pub struct TuneServer {
    template: Adapter,
    layout: ThetaLayout,
    theta: Vec<f64>,
    step: u64,
    seed: [u8; 32],
    config: TuneConfig,
}

impl Drop for TuneServer {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

impl std::fmt::Debug for TuneServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TuneServer")
            .field("step", &self.step)
            .field("parameters", &self.theta.len())
            .field("config", &self.config)
            .field("seed", &"<redacted>")
            .finish()
    }
}

/// The server's checkpoint (written with mode 0600: it holds the weights and the seed).
#[derive(Serialize, Deserialize)]
struct ServerCheckpoint {
    format: String,
    step: u64,
    config: TuneConfig,
    layout: ThetaLayout,
    theta: Vec<f64>,
    seed: String,
}

const SERVER_CHECKPOINT_FORMAT: &str = "hepeft-tune-server/1";
const CLIENT_CHECKPOINT_FORMAT: &str = "hepeft-tune-client/1";
/// Largest checkpoint read back (a theta of a few million values).
const MAX_CHECKPOINT_BYTES: u64 = 256 << 20;

/// Whether [`TuneServer::apply`] moved theta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The step's update was applied; the server is at the next step.
    Updated,
    /// The reply repeats the step already applied (a client resending after a crash).
    Duplicate,
}

impl TuneServer {
    /// Starts a run at step 0 from `adapter`, drawing the secret direction seed from `rng`.
    ///
    /// # Errors
    /// A bad configuration, or nothing of the chosen kind to tune.
    pub fn new<G: RngCore + CryptoRng>(
        adapter: &Adapter,
        config: TuneConfig,
        rng: &mut G,
    ) -> Result<Self> {
        config.check()?;
        let layout = ThetaLayout::new(adapter, config.trainable)?;
        let theta = layout.read(adapter)?;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Ok(TuneServer {
            template: adapter.clone(),
            layout,
            theta,
            step: 0,
            seed,
            config,
        })
    }

    /// The step the server expects next.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The run's public configuration.
    pub fn config(&self) -> &TuneConfig {
        &self.config
    }

    /// Number of parameters that move.
    pub fn dim(&self) -> usize {
        self.theta.len()
    }

    /// The adapter at the current `theta`.
    ///
    /// # Errors
    /// As [`ThetaLayout::write`].
    pub fn adapter(&self) -> Result<Adapter> {
        self.layout.write(&self.template, &self.theta)
    }

    /// The `k` directions of `step`: standard normal vectors from ChaCha20 keyed by
    /// `SHA-256(seed || step)`. Cost: `k · dim` Gaussian samples.
    fn directions(&self, step: u64) -> Vec<Vec<f64>> {
        let mut h = Sha256::new();
        h.update(b"hepeft-tune-directions");
        h.update(self.seed);
        h.update(step.to_le_bytes());
        let mut key: [u8; 32] = h.finalize().into();
        let mut rng = ChaCha20Rng::from_seed(key);
        key.zeroize();
        (0..self.config.directions)
            .map(|_| normal_f64(&mut rng, self.theta.len(), 1.0))
            .collect()
    }

    /// The `2k` adapters of the current step, `theta + eps z_0, theta - eps z_0, ...`.
    ///
    /// # Errors
    /// As [`ThetaLayout::write`].
    pub fn perturbed_adapters(&self) -> Result<Vec<Adapter>> {
        let eps = self.config.perturbation;
        let mut out = Vec::with_capacity(2 * self.config.directions);
        for z in self.directions(self.step) {
            for sign in [1.0, -1.0] {
                let t: Vec<f64> = self
                    .theta
                    .iter()
                    .zip(&z)
                    .map(|(t, z)| t + sign * eps * z)
                    .collect();
                out.push(self.layout.write(&self.template, &t)?);
            }
        }
        Ok(out)
    }

    /// Evaluates the client's encrypted batch `query` (batch layout under `params`) on the
    /// `2k` perturbed adapters and sanitizes each result under the client's public key `pk`
    /// with `sanitize`. Cost: `2k` batch forward passes and sanitizations (no rotation).
    ///
    /// # Errors
    /// A query that does not fit the plan; evaluation and sanitization errors.
    pub fn evaluate_step<G: RngCore + CryptoRng>(
        &self,
        params: &CkksParams,
        ev: &Evaluator,
        pk: &PublicKey,
        query: &[Ciphertext],
        sanitize: &SanitizeConfig,
        rng: &mut G,
    ) -> Result<StepResults> {
        let outputs = self
            .perturbed_adapters()?
            .iter()
            .map(|a| {
                let plan = Plan::compile(a, params, batch_options())?;
                let out = plan.prepare()?.evaluate(ev, query)?;
                Ok(plan.sanitize(ev, out, pk, sanitize, rng)?.0)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StepResults {
            step: self.step,
            outputs,
        })
    }

    /// Applies the client's reply for the current step: `theta <- theta - lr/k sum g_j z_j`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a reply to another step (other than a duplicate of the
    /// last one), a wrong number of scalars or a non-finite one.
    pub fn apply(&mut self, reply: &StepReply) -> Result<Applied> {
        if reply.step + 1 == self.step {
            return Ok(Applied::Duplicate);
        }
        let bad = |reason: String| {
            Err(Error::InvalidValue {
                context: "tuning reply".into(),
                reason,
            })
        };
        if reply.step != self.step {
            return bad(format!(
                "reply for step {}, the server is at step {}",
                reply.step, self.step
            ));
        }
        if reply.g.len() != self.config.directions || reply.g.iter().any(|g| !g.is_finite()) {
            return bad(format!(
                "{} scalars (expected {} finite values)",
                reply.g.len(),
                self.config.directions
            ));
        }
        let rate = self.config.learning_rate / self.config.directions as f64;
        for (z, g) in self.directions(self.step).iter().zip(&reply.g) {
            for (t, z) in self.theta.iter_mut().zip(z) {
                *t -= rate * g * z;
            }
        }
        if self.theta.iter().any(|t| !t.is_finite()) {
            return bad("the update made a parameter non-finite; lower the learning rate".into());
        }
        self.step += 1;
        Ok(Applied::Updated)
    }

    /// Writes the checkpoint (step, theta, seed) atomically, readable by the owner only.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let ck = ServerCheckpoint {
            format: SERVER_CHECKPOINT_FORMAT.into(),
            step: self.step,
            config: self.config,
            layout: self.layout.clone(),
            theta: self.theta.clone(),
            seed: crate::io::format::digest_hex(&self.seed),
        };
        let mut json = serde_json::to_vec(&ck)
            .map_err(|e| Error::format("tuning checkpoint", e.to_string()))?;
        let r = crate::io::format::write_bytes_atomic(path, &json, Some(0o600));
        json.zeroize();
        r
    }

    /// Resumes from a checkpoint written by [`TuneServer::save`] for `adapter`'s structure
    /// (the weights come from the checkpoint).
    ///
    /// # Errors
    /// [`Error::Format`] for a foreign or damaged file; [`Error::Model`] when the checkpoint
    /// belongs to another adapter structure.
    pub fn resume(adapter: &Adapter, path: impl AsRef<Path>) -> Result<Self> {
        let bytes = crate::io::limits::read_bounded(
            path.as_ref(),
            MAX_CHECKPOINT_BYTES,
            "tuning checkpoint",
        )?;
        let ck: ServerCheckpoint = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format("tuning server checkpoint", e.to_string()))?;
        if ck.format != SERVER_CHECKPOINT_FORMAT {
            return Err(Error::format(
                "tuning server checkpoint",
                format!(
                    "format `{}`, expected `{SERVER_CHECKPOINT_FORMAT}`",
                    ck.format
                ),
            ));
        }
        ck.config.check()?;
        let layout = ThetaLayout::new(adapter, ck.config.trainable)?;
        if layout != ck.layout || ck.theta.len() != layout.dim() {
            return Err(Error::model(
                "the checkpoint was written for another adapter structure",
            ));
        }
        let seed = hex32(&ck.seed).ok_or_else(|| {
            Error::format("tuning server checkpoint", "the seed is not 64 hex digits")
        })?;
        let server = TuneServer {
            template: adapter.clone(),
            layout,
            theta: ck.theta,
            step: ck.step,
            seed,
            config: ck.config,
        };
        server.adapter()?; // finiteness and shapes
        Ok(server)
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The batch layout every tuning pass runs in.
pub fn batch_options() -> PlanOptions {
    PlanOptions {
        mode: Mode::Batch,
        ..PlanOptions::default()
    }
}

/// The data owner's side: labels, reply privacy, its ledger and the last reply sent.
#[derive(Debug)]
pub struct TuneClient {
    labels: Vec<usize>,
    privacy: ReplyPrivacy,
    ledger: PrivacyLedger,
    step: u64,
    last: Option<StepReply>,
    rng: ChaCha20Rng,
}

#[derive(Serialize, Deserialize)]
struct ClientCheckpoint {
    format: String,
    step: u64,
    privacy: ReplyPrivacy,
    ledger: PrivacyLedger,
    last: Option<StepReply>,
}

impl TuneClient {
    /// A client tuning on samples with these `labels` (class indices), drawing its privacy
    /// noise from `rng`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for no labels, noise without clipping, or a bad bound.
    pub fn new<G: RngCore + CryptoRng>(
        labels: Vec<usize>,
        privacy: ReplyPrivacy,
        rng: &mut G,
    ) -> Result<Self> {
        let bad = |reason: &str| {
            Err(Error::InvalidValue {
                context: "tuning client".into(),
                reason: reason.into(),
            })
        };
        if labels.is_empty() {
            return bad("no labelled samples");
        }
        if privacy.noise_multiplier.is_some() && privacy.clip.is_none() {
            return bad("privacy noise needs a clipping bound (--clip)");
        }
        if privacy.clip.is_some_and(|c| !(c.is_finite() && c > 0.0))
            || privacy
                .noise_multiplier
                .is_some_and(|z| !(z.is_finite() && z > 0.0))
            || !(privacy.delta > 0.0 && privacy.delta < 1.0)
        {
            return bad("clip and noise multiplier must be positive, delta in (0, 1)");
        }
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Ok(TuneClient {
            labels,
            privacy,
            ledger: PrivacyLedger::new(),
            step: 0,
            last: None,
            rng: ChaCha20Rng::from_seed(seed),
        })
    }

    /// The privacy spent so far.
    pub fn ledger(&self) -> &PrivacyLedger {
        &self.ledger
    }

    /// The reply privacy settings.
    pub fn privacy(&self) -> &ReplyPrivacy {
        &self.privacy
    }

    /// Decrypts the `2k` results of a step into logits (`samples x classes` each), checking
    /// the count against the run's `config`. Cost: `2k` result decryptions.
    ///
    /// # Errors
    /// A wrong number of passes; decryption errors.
    pub fn decrypt_step(
        &self,
        plan: &Plan,
        encoder: &Encoder,
        decryptor: &Decryptor<'_>,
        results: &StepResults,
        config: &TuneConfig,
    ) -> Result<Vec<Array2<f64>>> {
        if results.outputs.len() != 2 * config.directions {
            return Err(Error::DimensionMismatch {
                context: "tuning step results (passes)".into(),
                expected: 2 * config.directions,
                found: results.outputs.len(),
            });
        }
        results
            .outputs
            .iter()
            .map(|o| plan.decrypt_result(encoder, decryptor, o, self.labels.len()))
            .collect()
    }

    /// The reply for `step` from the `2k` logits of its passes: per-sample finite
    /// differences of the cross-entropy, clipped and noised ([`privatize`]). A second call
    /// for the same step returns the saved reply unchanged (no second privacy cost).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a step other than the current or the last one, an odd
    /// number of passes, or logits of the wrong shape.
    pub fn reply(
        &mut self,
        step: u64,
        logits: &[Array2<f64>],
        config: &TuneConfig,
    ) -> Result<StepReply> {
        if let Some(last) = self.last.as_ref().filter(|l| l.step == step) {
            return Ok(last.clone());
        }
        if step != self.step {
            return Err(Error::InvalidValue {
                context: "tuning reply".into(),
                reason: format!(
                    "results of step {step}, the client is at step {}",
                    self.step
                ),
            });
        }
        if logits.len() != 2 * config.directions {
            return Err(Error::DimensionMismatch {
                context: "tuning passes".into(),
                expected: 2 * config.directions,
                found: logits.len(),
            });
        }
        let losses = logits
            .iter()
            .map(|l| per_sample_cross_entropy(l.view(), &self.labels))
            .collect::<Result<Vec<_>>>()?;
        let g = losses
            .chunks_exact(2)
            .map(|pm| {
                let d: Vec<f64> = pm[0]
                    .iter()
                    .zip(&pm[1])
                    .map(|(p, m)| (p - m) / (2.0 * config.perturbation))
                    .collect();
                privatize(&d, &self.privacy, &mut self.rng)
            })
            .collect();
        self.ledger.record(config.directions, &self.privacy);
        let reply = StepReply { step, g };
        self.last = Some(reply.clone());
        self.step = step + 1;
        Ok(reply)
    }

    /// Writes the client's checkpoint (step, ledger, the last reply) atomically.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let ck = ClientCheckpoint {
            format: CLIENT_CHECKPOINT_FORMAT.into(),
            step: self.step,
            privacy: self.privacy,
            ledger: self.ledger,
            last: self.last.clone(),
        };
        let json = serde_json::to_vec(&ck)
            .map_err(|e| Error::format("tuning checkpoint", e.to_string()))?;
        crate::io::format::write_bytes_atomic(path, &json, Some(0o600))
    }

    /// Resumes from [`TuneClient::save`] with the same `labels`.
    ///
    /// # Errors
    /// [`Error::Format`] for a foreign or damaged file.
    pub fn resume<G: RngCore + CryptoRng>(
        labels: Vec<usize>,
        path: impl AsRef<Path>,
        rng: &mut G,
    ) -> Result<Self> {
        let bytes = crate::io::limits::read_bounded(
            path.as_ref(),
            MAX_CHECKPOINT_BYTES,
            "tuning checkpoint",
        )?;
        let ck: ClientCheckpoint = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format("tuning client checkpoint", e.to_string()))?;
        if ck.format != CLIENT_CHECKPOINT_FORMAT {
            return Err(Error::format(
                "tuning client checkpoint",
                format!(
                    "format `{}`, expected `{CLIENT_CHECKPOINT_FORMAT}`",
                    ck.format
                ),
            ));
        }
        let mut c = TuneClient::new(labels, ck.privacy, rng)?;
        c.step = ck.step;
        c.ledger = ck.ledger;
        c.last = ck.last;
        Ok(c)
    }
}

/// Cross-entropy of softmax(`logits` row) against each label. Cost: O(samples · classes).
///
/// # Errors
/// [`Error::DimensionMismatch`] for a row count other than `labels.len()`;
/// [`Error::InvalidValue`] for a label out of range or a non-finite logit.
pub fn per_sample_cross_entropy(logits: ArrayView2<f64>, labels: &[usize]) -> Result<Vec<f64>> {
    if logits.nrows() != labels.len() {
        return Err(Error::DimensionMismatch {
            context: "logits rows vs labels".into(),
            expected: labels.len(),
            found: logits.nrows(),
        });
    }
    logits
        .axis_iter(Axis(0))
        .zip(labels)
        .map(|(row, &y)| {
            if y >= row.len() || row.iter().any(|v| !v.is_finite()) {
                return Err(Error::InvalidValue {
                    context: "loss".into(),
                    reason: format!("label {y} of {} classes, or a non-finite logit", row.len()),
                });
            }
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            Ok(lse - row[y])
        })
        .collect()
}

/// Mean cross-entropy and accuracy of `logits` against `labels` (for progress reports on a
/// validation split the client holds).
///
/// # Errors
/// As [`per_sample_cross_entropy`].
pub fn loss_and_accuracy(logits: ArrayView2<f64>, labels: &[usize]) -> Result<(f64, f64)> {
    let l = per_sample_cross_entropy(logits, labels)?;
    let correct = logits
        .axis_iter(Axis(0))
        .zip(labels)
        .filter(|(row, &y)| crate::model::reference::argmax(*row) == y)
        .count();
    Ok((
        l.iter().sum::<f64>() / l.len() as f64,
        correct as f64 / labels.len() as f64,
    ))
}
