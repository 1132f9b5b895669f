//! Private tuning over HTTP (issue 16): the model owner's service runs the server side of
//! [`crate::tune`] for clients that hold labelled data.
//!
//! | method | path | body in | body out |
//! | --- | --- | --- | --- |
//! | `POST` | `/v1/tune/{id}` | one batch query bundle (the training features) | JSON [`TuneStatus`] |
//! | `GET` | `/v1/tune/{id}` | | JSON [`TuneStatus`] |
//! | `POST` | `/v1/tune/{id}/step` | | `2k` result bundles back to back, header `x-hepeft-tune-step` |
//! | `POST` | `/v1/tune/{id}/reply` | a [`StepReply`] (`18 + 8k` bytes) | JSON [`TuneStatus`] |
//! | `DELETE` | `/v1/tune/{id}` | | 204 |
//!
//! `{id}` is the key id of the client's evaluation keys (`POST /v1/keys` first): a run is
//! bound to one key set, its query must be bound to it, and every step result is bound to
//! it and to the batch plan. The run's directions are drawn from a seed only the server
//! holds; the client sees the sanitized outputs of perturbed adapters and sends back `k`
//! scalars per step, nothing else. The served inference adapter never changes: the tuned
//! weights stay in the server's memory and, with [`TuneServiceConfig::checkpoint_dir`], in
//! a checkpoint per run (mode 0600) written after every step, which the owner turns into a
//! card with `TuneServer::resume` + `TuneServer::adapter`. A run whose checkpoint exists
//! resumes from it when the client starts it again (after a crash of either side).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::ckks::{Ciphertext, CkksParams, Evaluator};
use crate::io::binding::{Binding, KeySetId};
use crate::io::format::peek_header;
use crate::model::Adapter;
use crate::plan::{Plan, PlanOptions, SanitizeConfig};
use crate::session;
use crate::tune::{batch_options, Applied, StepReply, StepResults, TuneConfig, TuneServer};
use crate::{Error, Result};

use super::server::os_rng;
use super::wire;

/// Response header carrying the step number of a `/v1/tune/{id}/step` answer.
pub const TUNE_STEP_HEADER: &str = "x-hepeft-tune-step";

/// What the owner allows when it serves tuning (off unless set in
/// [`ServerConfig::tune`](super::ServerConfig::tune)).
#[derive(Clone, Debug, PartialEq)]
pub struct TuneServiceConfig {
    /// The run configuration every client gets (directions, perturbation, learning rate,
    /// which parameters move).
    pub config: TuneConfig,
    /// Where the per-run checkpoints go (`{key id}.tune.json`, mode 0600); `None` keeps
    /// runs in memory only.
    pub checkpoint_dir: Option<PathBuf>,
    /// Most runs held at once (each holds a copy of the adapter and one encrypted batch).
    pub max_runs: usize,
    /// Most steps a run may take (each costs `2k` batch forward passes).
    pub max_steps: u64,
}

impl Default for TuneServiceConfig {
    fn default() -> Self {
        TuneServiceConfig {
            config: TuneConfig::default(),
            checkpoint_dir: None,
            max_runs: 8,
            max_steps: 10_000,
        }
    }
}

/// The public state of a run (what `GET /v1/tune/{id}` answers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneStatus {
    /// The step the server expects next (the number of updates applied).
    pub step: u64,
    /// The run's public configuration.
    pub config: TuneConfig,
    /// Number of parameters that move.
    pub parameters: usize,
    /// Most steps the run may take.
    pub max_steps: u64,
    /// Whether the last reply was a duplicate of an applied step (set by `/reply` only).
    #[serde(default)]
    pub duplicate: bool,
}

/// One client's run.
struct Run {
    server: TuneServer,
    query: Vec<Ciphertext>,
    result_binding: Binding,
    key_set: KeySetId,
}

/// The runs of one service.
pub(super) struct TuneRuns {
    cfg: TuneServiceConfig,
    adapter: Adapter,
    plan: Plan,
    runs: Mutex<HashMap<String, Arc<Mutex<Run>>>>,
}

fn poisoned() -> Error {
    Error::model("a tuning run's lock was poisoned by an earlier failure; delete the run")
}

impl TuneRuns {
    /// Compiles the batch plan tuning runs in. The service must serve that same plan
    /// (`options` = [`batch_options`]), so that the clients' evaluation keys, registered
    /// for the served plan, cover the tuning passes. Cost: one plan compilation.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a served layout other than batch, zero limits or a bad
    /// run configuration; plan errors.
    pub(super) fn new(
        adapter: &Adapter,
        params: &CkksParams,
        options: PlanOptions,
        cfg: TuneServiceConfig,
    ) -> Result<Self> {
        if options != batch_options() {
            return Err(Error::InvalidValue {
                context: "tuning service".into(),
                reason: "private tuning runs in the batch layout: serve the adapter with \
                         `--mode batch` to offer tuning"
                    .into(),
            });
        }
        if cfg.max_runs == 0 || cfg.max_steps == 0 {
            return Err(Error::InvalidValue {
                context: "tuning service".into(),
                reason: "max_runs and max_steps must be positive".into(),
            });
        }
        // Validates the configuration and that something is trainable, before any client.
        TuneServer::new(adapter, cfg.config, &mut rand::rng())?;
        let plan = Plan::compile(adapter, params, batch_options())?;
        Ok(TuneRuns {
            cfg,
            adapter: adapter.clone(),
            plan,
            runs: Mutex::new(HashMap::new()),
        })
    }

    fn checkpoint(&self, id: &str) -> Option<PathBuf> {
        self.cfg
            .checkpoint_dir
            .as_ref()
            .map(|d| d.join(format!("{id}.tune.json")))
    }

    fn status(&self, run: &Run, duplicate: bool) -> TuneStatus {
        TuneStatus {
            step: run.server.step(),
            config: *run.server.config(),
            parameters: run.server.dim(),
            max_steps: self.cfg.max_steps,
            duplicate,
        }
    }

    /// Whether key id `id` has a run.
    pub(super) fn exists(&self, id: &str) -> bool {
        self.runs.lock().is_ok_and(|r| r.contains_key(id))
    }

    fn get(&self, id: &str) -> Result<Arc<Mutex<Run>>> {
        self.runs
            .lock()
            .map_err(|_| poisoned())?
            .get(id)
            .cloned()
            .ok_or_else(|| Error::MissingKey {
                what: format!("tuning run for key id {id}: start it with POST /v1/tune/{id}"),
            })
    }

    /// Starts (or, with an existing run or checkpoint, resumes) the run of key id `id` on
    /// the batch query in `body`, bound to `key_set`. Cost: parsing the query; a resumed
    /// run reads its checkpoint.
    ///
    /// # Errors
    /// A query not bound to `key_set` and the batch plan, more than one query, too many
    /// runs, a damaged checkpoint.
    pub(super) fn start(
        &self,
        params: &CkksParams,
        id: &str,
        key_set: KeySetId,
        body: &[u8],
    ) -> Result<TuneStatus> {
        let query = wire::read_queries(params, body, &self.plan, key_set)?;
        let count = query.chunks().count();
        if count != 1 {
            return Err(Error::dims(
                "queries in a tuning batch (one batch query holds up to N/2 samples)",
                1,
                count,
            ));
        }
        let result_binding = crate::session::result_binding(&query.binding, &self.plan);
        let query = query.items;
        let mut runs = self.runs.lock().map_err(|_| poisoned())?;
        if let Some(run) = runs.get(id) {
            let mut run = run.lock().map_err(|_| poisoned())?;
            if run.key_set != key_set {
                return Err(Error::mismatch(
                    "tuning query",
                    "bound to another key set than the run",
                ));
            }
            // A client re-uploading its batch (after its own restart): same run, new query.
            run.query = query;
            run.result_binding = result_binding;
            return Ok(self.status(&run, false));
        }
        if runs.len() >= self.cfg.max_runs {
            return Err(Error::TooLarge {
                what: "tuning runs held by this server (DELETE /v1/tune/{id} ends one)".into(),
                found: format!("{}", runs.len() + 1),
                limit: format!("{}", self.cfg.max_runs),
            });
        }
        let server = match self.checkpoint(id).filter(|p| p.exists()) {
            Some(path) => TuneServer::resume(&self.adapter, &path)?,
            None => {
                let mut rng = os_rng()?;
                TuneServer::new(&self.adapter, self.cfg.config, &mut rng)?
            }
        };
        let run = Run {
            server,
            query,
            result_binding,
            key_set,
        };
        let status = self.status(&run, false);
        if let Some(path) = self.checkpoint(id) {
            save_checkpoint(&run.server, &path)?;
        }
        runs.insert(id.to_string(), Arc::new(Mutex::new(run)));
        Ok(status)
    }

    /// The status of `id`'s run.
    ///
    /// # Errors
    /// [`Error::MissingKey`] for no run.
    pub(super) fn status_of(&self, id: &str) -> Result<TuneStatus> {
        let run = self.get(id)?;
        let run = run.lock().map_err(|_| poisoned())?;
        Ok(self.status(&run, false))
    }

    /// Evaluates the current step of `id`'s run under its client's keys `ev` and public key
    /// `pk`, sanitized with `sanitize`: `2k` bound result bundles back to back, and the step.
    /// Cost: `2k` batch forward passes and sanitizations.
    ///
    /// # Errors
    /// No run; a run past its step budget; evaluation errors.
    pub(super) fn step(
        &self,
        params: &CkksParams,
        id: &str,
        ev: &Evaluator,
        pk: &crate::ckks::PublicKey,
        sanitize: &SanitizeConfig,
    ) -> Result<(Vec<u8>, u64)> {
        let run = self.get(id)?;
        let run = run.lock().map_err(|_| poisoned())?;
        if run.server.step() >= self.cfg.max_steps {
            return Err(Error::InvalidValue {
                context: "tuning step".into(),
                reason: format!(
                    "the run took its {} steps, the most this server allows",
                    self.cfg.max_steps
                ),
            });
        }
        let mut rng = os_rng()?;
        let results = run
            .server
            .evaluate_step(params, ev, pk, &run.query, sanitize, &mut rng)?;
        let mut body = Vec::new();
        for out in results.outputs {
            body.extend(wire::write_bundle(params, out, &run.result_binding)?);
        }
        Ok((body, results.step))
    }

    /// Applies the client's reply to `id`'s run and checkpoints it. Cost: `k · dim`
    /// Gaussian samples and one checkpoint write.
    ///
    /// # Errors
    /// No run; a malformed reply or one for another step (a repeat of the last step is
    /// answered as a duplicate, not applied twice).
    pub(super) fn reply(&self, id: &str, body: &[u8]) -> Result<TuneStatus> {
        let reply = StepReply::from_bytes(body)?;
        let run = self.get(id)?;
        let mut run = run.lock().map_err(|_| poisoned())?;
        let applied = run.server.apply(&reply)?;
        if applied == Applied::Updated {
            if let Some(path) = self.checkpoint(id) {
                save_checkpoint(&run.server, &path)?;
            }
        }
        Ok(self.status(&run, applied == Applied::Duplicate))
    }

    /// Forgets `id`'s run (its checkpoint stays: the owner's tuned weights). Returns
    /// whether there was one.
    ///
    /// # Errors
    /// A poisoned lock.
    pub(super) fn remove(&self, id: &str) -> Result<bool> {
        Ok(self
            .runs
            .lock()
            .map_err(|_| poisoned())?
            .remove(id)
            .is_some())
    }
}

fn save_checkpoint(server: &TuneServer, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: Some(dir.to_path_buf()),
            source: e,
        })?;
    }
    server.save(path)
}

/// Splits `2k` bound result bundles written back to back, checks each against the
/// client's key set, the batch `plan` and level 0, and returns them as [`StepResults`].
/// Cost: parsing `body` once.
///
/// # Errors
/// [`Error::Format`] for a malformed body; [`Error::Mismatch`] for a result of another key
/// set or plan; [`Error::DimensionMismatch`] for a wrong count.
pub(crate) fn read_step_results(
    params: &CkksParams,
    plan: &Plan,
    key_set: KeySetId,
    step: u64,
    passes: usize,
    body: &[u8],
) -> Result<StepResults> {
    let mine = Binding::keys(key_set, plan.structure_digest());
    let mut outputs = Vec::with_capacity(passes);
    let mut cursor = body;
    while !cursor.is_empty() {
        let total = peek_header(cursor)?
            .total_len()
            .and_then(|t| usize::try_from(t).ok())
            .filter(|&t| t <= cursor.len())
            .ok_or_else(|| Error::format("tuning step results", "truncated bundle"))?;
        let (one, rest) = cursor.split_at(total);
        cursor = rest;
        let (cts, binding) = wire::read_bundle(params, one)?;
        session::check_result_matches_secret(binding.as_ref(), &mine, plan, &cts)?;
        outputs.push(cts);
        if outputs.len() > passes {
            break;
        }
    }
    if outputs.len() != passes {
        return Err(Error::dims(
            "tuning step results (passes)",
            passes,
            outputs.len(),
        ));
    }
    Ok(StepResults { step, outputs })
}

impl super::client::QueryClient {
    /// The plan tuning runs in on this server: the served plan, which must be in batch
    /// layout. The client encrypts its training batch for it and generates its keys for it
    /// ([`super::client::ClientKeys::generate`]).
    ///
    /// # Errors
    /// As [`QueryClient::connect`](super::client::QueryClient::connect);
    /// [`Error::InvalidValue`] for a server in latency layout.
    pub fn tune_plan(&self) -> Result<&Plan> {
        let plan = self.connect()?.plan();
        if plan.options() != batch_options() {
            return Err(Error::InvalidValue {
                context: "tuning".into(),
                reason: "the server serves the latency layout; tuning needs a server in \
                         batch layout (`hepeft serve --mode batch --tune`)"
                    .into(),
            });
        }
        Ok(plan)
    }

    /// Starts (or resumes) the tuning run of key id `id` on the encrypted training batch
    /// `query` ([`Plan::encrypt_query`] of `samples` rows under [`QueryClient::tune_plan`](super::client::QueryClient::tune_plan)).
    /// Cost: one upload of the query.
    ///
    /// # Errors
    /// Transport errors; the server's refusals (404 no keys or no tuning, 409 another key
    /// set, 413 too many runs) as [`super::client::RemoteError`].
    pub fn tune_start(&self, id: &str, query: &[Ciphertext], samples: usize) -> Result<TuneStatus> {
        let plan = self.tune_plan()?;
        let params = self.connect()?.params();
        let key_set = self.key_set_of(id);
        let binding = session::query_binding(key_set, plan, &[samples]);
        let body = wire::write_bundle(params, query.to_vec(), &binding)?;
        let answer = self.post(&format!("/v1/tune/{id}"), &body)?;
        parse_status(&answer)
    }

    /// The status of the run of key id `id`.
    ///
    /// # Errors
    /// Transport errors; 404 for no run.
    pub fn tune_status(&self, id: &str) -> Result<TuneStatus> {
        parse_status(&self.get(&format!("/v1/tune/{id}"))?)
    }

    /// Asks for the current step's `2k` sanitized results and checks each is a result of
    /// this client's key set and the tuning plan, at level 0. `status` is the run's status
    /// (its step and number of directions). Cost: `2k` result downloads.
    ///
    /// # Errors
    /// Transport errors; results bound elsewhere or of the wrong count.
    pub fn tune_step(&self, id: &str, status: &TuneStatus) -> Result<StepResults> {
        let plan = self.tune_plan()?;
        let params = self.connect()?.params();
        let key_set = self.key_set_of(id);
        let answer = self.post(&format!("/v1/tune/{id}/step"), &[])?;
        read_step_results(
            params,
            plan,
            key_set,
            status.step,
            2 * status.config.directions,
            &answer,
        )
    }

    /// Sends the `k` scalars of a step; the answer says whether the server applied them or
    /// had already (a resend after a crash). Cost: `18 + 8k` bytes up.
    ///
    /// # Errors
    /// Transport errors; 400 for a reply to another step.
    pub fn tune_reply(&self, id: &str, reply: &StepReply) -> Result<TuneStatus> {
        parse_status(&self.post(&format!("/v1/tune/{id}/reply"), &reply.to_bytes())?)
    }

    /// Ends the run of key id `id` on the server.
    ///
    /// # Errors
    /// Transport errors; 404 for no run.
    pub fn tune_stop(&self, id: &str) -> Result<()> {
        self.delete(&format!("/v1/tune/{id}")).map(|_| ())
    }
}

fn parse_status(body: &[u8]) -> Result<TuneStatus> {
    serde_json::from_slice(body).map_err(|e| Error::format("tuning status", e.to_string()))
}

/// What a remote run did, as the client saw it.
#[derive(Clone, Debug, Serialize)]
pub struct RemoteTuneReport {
    /// The run's status after the last step.
    pub status: TuneStatus,
    /// One record per step taken in this call (train loss is the mean over the `2k`
    /// perturbed passes; no validation: the served adapter does not move).
    pub steps: Vec<crate::tune::StepRecord>,
    /// Bytes of the encrypted training batch uploaded once.
    pub query_bytes: usize,
    /// The differential-privacy epsilon of the replies so far, if they were noised.
    pub dp_epsilon: Option<f64>,
}

/// The client's whole side of a remote run: uploads the encrypted batch `x` once (under
/// `keys`, generated for [`QueryClient::tune_plan`](super::client::QueryClient::tune_plan)
/// and registered as `id`), then takes steps until the run reaches `steps`, replying with
/// `labels` under `privacy`. With `state`, the client's checkpoint (ledger and last reply)
/// is written after every reply and read back on start, so a crashed client resumes
/// without a second privacy cost. Cost per step: `2k` result downloads and decryptions,
/// `18 + 8k` bytes up.
///
/// # Errors
/// Transport errors and the server's refusals; decryption and shape errors.
#[allow(clippy::too_many_arguments)]
pub fn run_remote<G: rand::RngCore + rand::CryptoRng>(
    client: &super::client::QueryClient,
    keys: &super::client::ClientKeys,
    id: &str,
    x: ndarray::ArrayView2<f64>,
    labels: &[usize],
    privacy: crate::tune::ReplyPrivacy,
    steps: u64,
    state: Option<&Path>,
    on_step: &mut dyn FnMut(&crate::tune::StepRecord),
    rng: &mut G,
) -> Result<RemoteTuneReport> {
    use crate::ckks::{Decryptor, EncryptionKey};
    use crate::tune::TuneClient;
    let plan = client.tune_plan()?.clone();
    let remote = client.connect()?;
    let pk = keys.public.as_ref().ok_or_else(|| Error::MissingKey {
        what: "public key in the key directory (tuning encrypts the batch under it)".into(),
    })?;
    let query = plan.encrypt_query(remote.encoder(), EncryptionKey::Public(pk), &[x], rng)?;
    let query_bytes = wire::write_bundle(
        remote.params(),
        query.clone(),
        &session::query_binding(keys.binding.key_set, &plan, &[x.nrows()]),
    )?
    .len();
    let mut status = client.tune_start(id, &query, x.nrows())?;
    let mut tuner = match state.filter(|p| p.exists()) {
        Some(p) => TuneClient::resume(labels.to_vec(), p, rng)?,
        None => TuneClient::new(labels.to_vec(), privacy, rng)?,
    };
    let dec = Decryptor::new(remote.params(), &keys.secret)?;
    let mut records = Vec::new();
    while status.step < steps {
        let t = std::time::Instant::now();
        let results = client.tune_step(id, &status)?;
        let down: usize = results.outputs.iter().map(Vec::len).sum::<usize>()
            * crate::ckks::serialize::to_bytes(
                remote.params(),
                results
                    .outputs
                    .first()
                    .and_then(|o| o.first())
                    .ok_or_else(|| Error::format("tuning step results", "no ciphertext"))?,
            )?
            .len();
        let logits = tuner.decrypt_step(&plan, remote.encoder(), &dec, &results, &status.config)?;
        let reply = tuner.reply(status.step, &logits, &status.config)?;
        if let Some(p) = state {
            tuner.save(p)?;
        }
        let next = client.tune_reply(id, &reply)?;
        let rec = crate::tune::StepRecord {
            step: status.step,
            train_loss: crate::tune::local::mean_loss(&logits, labels)?,
            validation: None,
            seconds: t.elapsed().as_secs_f64(),
            bytes_down: down,
            bytes_up: reply.to_bytes().len(),
        };
        on_step(&rec);
        records.push(rec);
        status = next;
    }
    Ok(RemoteTuneReport {
        status,
        steps: records,
        query_bytes,
        dp_epsilon: tuner.ledger().epsilon(tuner.privacy().delta),
    })
}
