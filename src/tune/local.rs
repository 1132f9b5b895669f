//! Both roles of a tuning run in one process, with every message passed through its wire
//! form (so byte counts are real): what `hepeft tune` and the real-task example run. The two
//! parties' secrets stay in their own values ([`TuneServer`] holds the weights and the seed;
//! the client's key, features and labels never reach it).

use super::privacy::ReplyPrivacy;
use super::protocol::{
    batch_options, loss_and_accuracy, Applied, StepReply, StepResults, TuneClient, TuneConfig,
    TuneServer,
};
use crate::ckks::{Decryptor, Encoder, EncryptionKey, Evaluator, KeyGenerator};
use crate::model::{reference, Adapter};
use crate::plan::{Plan, SanitizeConfig};
use crate::select::{select, SelectRequest};
use crate::{Error, Result};
use ndarray::{Array2, ArrayView2};
use rand::{CryptoRng, RngCore};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What a local run does.
#[derive(Clone, Debug)]
pub struct LocalRun {
    /// The server's run configuration.
    pub tune: TuneConfig,
    /// The client's reply privacy.
    pub privacy: ReplyPrivacy,
    /// Steps to run (in total, counting steps done before a resume).
    pub steps: u64,
    /// Output sanitization of every result.
    pub sanitize: SanitizeConfig,
    /// Precision asked of the parameter selection, bits.
    pub precision_bits: u32,
    /// Directory for both checkpoints (`server.json`, `client.json`); a run finding them
    /// resumes. `None`: no checkpoints.
    pub state_dir: Option<PathBuf>,
}

/// One step's figures, as the client and the server each see their part.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// Step number.
    pub step: u64,
    /// The client's estimate of its training loss (mean over the `2k` perturbed passes).
    pub train_loss: f64,
    /// Validation loss and accuracy at the weights after the step (when the client holds a
    /// validation split; one more encrypted pass).
    pub validation: Option<(f64, f64)>,
    /// Wall time of the step (both roles and the validation pass), seconds.
    pub seconds: f64,
    /// Bytes server -> client (the step's results).
    pub bytes_down: usize,
    /// Bytes client -> server (the `k` scalars).
    pub bytes_up: usize,
}

/// The outcome of a local run.
#[derive(Clone, Debug, Serialize)]
pub struct LocalReport {
    /// log2 N of the selected parameters.
    pub log_n: u32,
    /// Parameter digest.
    pub params_digest: String,
    /// Bytes of the encrypted training (and validation) batch, uploaded once.
    pub query_bytes: usize,
    /// Bytes of the evaluation keys and public key, uploaded once.
    pub key_bytes: usize,
    /// Encrypted forward passes per step.
    pub passes_per_step: usize,
    /// Steps run in this process (after a resume, the remaining ones).
    pub steps: Vec<StepRecord>,
    /// `epsilon` of the replies' `(epsilon, delta)`-DP, when they carried noise.
    pub dp_epsilon: Option<f64>,
}

/// The server's and the client's checkpoint paths.
type CheckpointPaths = Option<(PathBuf, PathBuf)>;

/// The server and client of a run: resumed from `run.state_dir` when both checkpoints are
/// there, else new, with their secrets (direction seed, privacy-noise seed) from `party_rng`.
fn parties<G: RngCore + CryptoRng>(
    adapter: &Adapter,
    train_y: &[usize],
    run: &LocalRun,
    party_rng: &mut G,
) -> Result<(TuneServer, TuneClient, CheckpointPaths)> {
    let paths = run
        .state_dir
        .as_ref()
        .map(|d| (d.join("server.json"), d.join("client.json")));
    if let Some(d) = &run.state_dir {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let (server, client) = match &paths {
        Some((sp, cp)) if sp.exists() && cp.exists() => (
            TuneServer::resume(adapter, sp)?,
            TuneClient::resume(train_y.to_vec(), cp, party_rng)?,
        ),
        _ => (
            TuneServer::new(adapter, run.tune, party_rng)?,
            TuneClient::new(train_y.to_vec(), run.privacy, party_rng)?,
        ),
    };
    if server.config() != &run.tune {
        return Err(Error::InvalidValue {
            context: "resumed tuning run".into(),
            reason: "the checkpoint was written with other settings (directions, perturbation, learning rate or trainable set)".into(),
        });
    }
    Ok((server, client, paths))
}

/// The plaintext twin of [`run_local`]: the same parties (same `party_rng`), the forward
/// passes evaluated in f64 by [`reference::evaluate_batch`] instead of under encryption. With
/// the same seeds both runs draw the same directions and noise, so their records differ only
/// by CKKS noise. No checkpoints.
///
/// # Errors
/// Reference evaluation errors.
pub fn run_plain<G: RngCore + CryptoRng>(
    adapter: &Adapter,
    train_x: ArrayView2<f64>,
    train_y: &[usize],
    validation: Option<(ArrayView2<f64>, &[usize])>,
    run: &LocalRun,
    party_rng: &mut G,
) -> Result<(Adapter, Vec<StepRecord>)> {
    let stateless = LocalRun {
        state_dir: None,
        ..run.clone()
    };
    let (mut server, mut client, _) = parties(adapter, train_y, &stateless, party_rng)?;
    let mut records = Vec::new();
    while server.step() < run.steps {
        let t = Instant::now();
        let step = server.step();
        let logits = server
            .perturbed_adapters()?
            .iter()
            .map(|a| Ok(reference::evaluate_batch(a, &[train_x])?.0))
            .collect::<Result<Vec<_>>>()?;
        let train_loss = mean_loss(&logits, train_y)?;
        let reply = client.reply(step, &logits, server.config())?;
        server.apply(&reply)?;
        let validation = match validation {
            Some((x, y)) => {
                let (l, _) = reference::evaluate_batch(&server.adapter()?, &[x])?;
                Some(loss_and_accuracy(l.view(), y)?)
            }
            None => None,
        };
        records.push(StepRecord {
            step,
            train_loss,
            validation,
            seconds: t.elapsed().as_secs_f64(),
            bytes_down: 0,
            bytes_up: 0,
        });
    }
    Ok((server.adapter()?, records))
}

pub(crate) fn mean_loss(logits: &[Array2<f64>], y: &[usize]) -> Result<f64> {
    Ok(logits
        .iter()
        .map(|l| loss_and_accuracy(l.view(), y).map(|(l, _)| l))
        .sum::<Result<f64>>()?
        / logits.len().max(1) as f64)
}

/// Runs a tuning session on `(train_x, train_y)` from `adapter` (the server's starting
/// weights), validating on `validation` after every step, calling `on_step` with each record.
/// The parties' secrets come from `party_rng` (see [`run_plain`]), keys, encryptions and
/// sanitization noise from `rng`. Returns the tuned adapter (the server's) and the report.
///
/// Cost per step: `2k` encrypted batch passes, `2k` sanitizations and decryptions, plus one
/// pass for validation.
///
/// # Errors
/// Parameter selection, encryption, evaluation and checkpoint errors.
#[allow(clippy::too_many_arguments)]
pub fn run_local<G: RngCore + CryptoRng>(
    adapter: &Adapter,
    train_x: ArrayView2<f64>,
    train_y: &[usize],
    validation: Option<(ArrayView2<f64>, &[usize])>,
    run: &LocalRun,
    on_step: &mut dyn FnMut(&StepRecord),
    party_rng: &mut G,
    rng: &mut G,
) -> Result<(Adapter, LocalReport)> {
    let (mut server, mut client, paths) = parties(adapter, train_y, run, party_rng)?;
    let samples = train_x
        .nrows()
        .max(validation.map_or(0, |(x, _)| x.nrows()));
    let req = SelectRequest {
        precision_bits: run.precision_bits,
        options: batch_options(),
        batch: Some(samples),
        flooding: run.sanitize.flooding,
        ..SelectRequest::default()
    };
    let selection = select(adapter, &req)?;
    let params = selection.params.clone();

    // client: keys and the encrypted batches (uploaded once)
    let kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key(rng);
    let pk = kg.gen_public_key(&sk, rng)?;
    let plan = Plan::compile(adapter, &params, batch_options())?;
    let eval_keys =
        kg.gen_evaluation_keys(&sk, &plan.galois_elements(), plan.needs_relin(), rng)?;
    let key_bytes = crate::ckks::serialize::to_bytes(&params, &eval_keys)?.len()
        + crate::ckks::serialize::to_bytes(&params, &pk)?.len();
    let encoder = Encoder::new(&params)?;
    let decryptor = Decryptor::new(&params, &sk)?;
    let encrypt = |x: ArrayView2<f64>, r: &mut G| {
        plan.encrypt_query(&encoder, EncryptionKey::Public(&pk), &[x], r)
    };
    let train_q = encrypt(train_x, rng)?;
    let val_q = match validation {
        Some((x, _)) => Some(encrypt(x, rng)?),
        None => None,
    };
    let bundle_bytes = |cts: &[crate::ckks::Ciphertext]| -> Result<usize> {
        let b = crate::ckks::CiphertextBundle {
            digest: params.digest(),
            items: cts.to_vec(),
        };
        Ok(crate::ckks::serialize::to_bytes(&params, &b)?.len())
    };
    let query_bytes = bundle_bytes(&train_q)? + val_q.as_deref().map_or(Ok(0), bundle_bytes)?;
    let ev = Evaluator::with_keys(&params, Arc::new(eval_keys))?;

    let mut records = Vec::new();
    while server.step() < run.steps {
        let t = Instant::now();
        let step = server.step();
        let results = server.evaluate_step(&params, &ev, &pk, &train_q, &run.sanitize, rng)?;
        let down = results.to_bytes(&params)?;
        let results = StepResults::from_bytes(&params, &down)?;
        let logits = client.decrypt_step(&plan, &encoder, &decryptor, &results, server.config())?;
        let train_loss = mean_loss(&logits, train_y)?;
        let reply = client.reply(step, &logits, server.config())?;
        if let Some((_, cp)) = &paths {
            client.save(cp)?;
        }
        let up = reply.to_bytes();
        let reply = StepReply::from_bytes(&up)?;
        if server.apply(&reply)? == Applied::Duplicate {
            return Err(Error::model(
                "the server saw a duplicate reply in a fresh step",
            ));
        }
        if let Some((sp, _)) = &paths {
            server.save(sp)?;
        }
        let validation = match (&val_q, validation) {
            (Some(q), Some((_, y))) => {
                let current = server.adapter()?;
                let vplan = Plan::compile(&current, &params, batch_options())?;
                let out = vplan.prepare()?.evaluate(&ev, q)?;
                let (out, _) = vplan.sanitize(&ev, out, &pk, &run.sanitize, rng)?;
                let logits: Array2<f64> =
                    plan.decrypt_result(&encoder, &decryptor, &out, y.len())?;
                Some(loss_and_accuracy(logits.view(), y)?)
            }
            _ => None,
        };
        let rec = StepRecord {
            step,
            train_loss,
            validation,
            seconds: t.elapsed().as_secs_f64(),
            bytes_down: down.len(),
            bytes_up: up.len(),
        };
        on_step(&rec);
        records.push(rec);
    }
    let report = LocalReport {
        log_n: params.log_n(),
        params_digest: crate::io::format::digest_hex(&params.digest()),
        query_bytes,
        key_bytes,
        passes_per_step: 2 * run.tune.directions,
        steps: records,
        dp_epsilon: client.ledger().epsilon(run.privacy.delta),
    };
    Ok((server.adapter()?, report))
}
