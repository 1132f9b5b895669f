//! `hepeft demo`: the whole pipeline on an embedded example, through the session layer the
//! file commands use (publish, then `session::{ClientKeys, KeyDir, Client, Server}` for
//! keygen, encrypt, evaluate and decrypt, each party reading only the files that cross
//! over), then checked against the plaintext twin. Needs no external file: the default is a real task (a trained adapter and
//! held-out features from `assets/real/`, embedded in the binary).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use ndarray::{Array2, ArrayView2, Axis};

use serde::Serialize;
use std::sync::Arc;

use hepeft::ckks::{load_bound, CkksParams, EvaluationKeys, PrecisionStats};
use hepeft::model::reference;
use hepeft::plan::{Mode, Plan, SanitizeConfig};
use hepeft::session::{self, Client, ClientKeys, KeyDir, Query, QueryResult, Role, Server};

use super::publish;
#[cfg(feature = "exact")]
pub(crate) use cases::real_task;
use cases::{demo_case, DemoCase};

mod cases;
use crate::cli::args::{Backend, DemoArgs};
use crate::cli::common::*;
use crate::cli::Ui;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("hepeft-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Serialize)]
struct Timings {
    publish: f64,
    keygen: f64,
    encrypt: f64,
    evaluate: f64,
    decrypt: f64,
}

#[derive(Debug, Serialize)]
struct Bytes {
    evaluation_keys: u64,
    public_key: u64,
    query: u64,
    result: u64,
}

#[derive(Debug, Serialize)]
struct Accuracy {
    samples: usize,
    argmax_agree: usize,
    max_abs_error: f64,
    max_abs_logit: f64,
    precision_bits_min: f64,
    precision_bits_median: f64,
}

#[derive(Debug, Serialize)]
struct DemoReport {
    model: String,
    adapter: String,
    params: String,
    /// Noise flooding applied to the result ("OFF" or its settings).
    flooding: String,
    plan: String,
    mode: String,
    seconds: Timings,
    bytes: Bytes,
    accuracy: Accuracy,
    predictions: Vec<(usize, usize)>,
    /// Real tasks: the held-out labels, class names, and the accuracy of the decrypted
    /// predictions against the labels.
    labels: Option<Vec<usize>>,
    classes: Option<Vec<String>>,
    label_accuracy: Option<f64>,
    kept: Option<PathBuf>,
}
/// `hepeft demo`: one pipeline per backend.
pub fn run(args: &DemoArgs, ui: &Ui) -> Result<()> {
    match args.backend {
        Backend::Ckks => ckks_demo(args, ui),
        #[cfg(feature = "exact")]
        Backend::Exact => super::exact::demo(args, ui),
        #[cfg(not(feature = "exact"))]
        Backend::Exact => bail!("this build has no exact backend (feature `exact`)"),
    }
}

/// The demo's working directory (a temporary one unless `--keep`) and its three parts:
/// `server/` (private card, result), `client/` (parameters, features, keys, query,
/// logits), `public/` (the public card).
struct WorkDir {
    root: PathBuf,
    server: PathBuf,
    client: PathBuf,
    _tmp: Option<TempDir>,
}

impl WorkDir {
    fn new(keep: Option<&Path>) -> Result<Self> {
        let (root, tmp) = match keep {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                (d.to_path_buf(), None)
            }
            None => {
                let t = TempDir::new()?;
                (t.0.clone(), Some(t))
            }
        };
        let (server, client) = (root.join("server"), root.join("client"));
        for d in [&server, &client] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(WorkDir {
            root,
            server,
            client,
            _tmp: tmp,
        })
    }
}

/// The CKKS pipeline through the session layer, each party reading only what crosses
/// over: publish, client keygen and encrypt, server evaluate, client decrypt, then the
/// plaintext twin.
fn ckks_demo(args: &DemoArgs, ui: &Ui) -> Result<()> {
    let samples = usize::try_from(args.samples).unwrap_or(1);
    let mode = Mode::from(args.mode);
    let work = WorkDir::new(args.keep.as_deref())?;
    let case = demo_case(args.model, &work.server, samples)?;
    // Latency mode floods at the default 40 bits, on parameters chosen for it by `select`
    // (scales near 2^57, a prime reserved for the output); batch mode cannot carry flooding
    // at useful precision (docs/threat-model.md) and runs on the preset without it.
    let flood = mode == Mode::Latency && !args.no_flooding;
    let (params, params_name) = demo_params(&case, flood, mode, samples, &work.client)?;
    ui.note(&format!(
        "demo: {}, {samples} sample(s), working in {}\n",
        case.label,
        work.root.display()
    ));
    let t = Instant::now();
    let (public_card, _, _) = publish::write_public(
        &case.adapter,
        &work.root.join("public"),
        Some("hepeft demo (public)"),
    )?;
    let t_publish = t.elapsed().as_secs_f64();
    save_features(&case.features, &work.client)?;

    let client = client_keygen_encrypt(&public_card, &params, mode, &case.features, &work)?;
    let server = server_evaluate(&work, mode, flood)?;
    let (logits, t_decrypt) = client_decrypt(&client, &public_card, &work)?;

    let timings = Timings {
        publish: t_publish,
        keygen: client.keygen_seconds,
        encrypt: client.encrypt_seconds,
        evaluate: server.evaluate_seconds,
        decrypt: t_decrypt,
    };
    let bytes = Bytes {
        evaluation_keys: file_size(&client.keys.path(EVAL_KEYS)),
        public_key: file_size(&client.keys.path(PUBLIC_KEY)),
        query: file_size(&work.client.join("query.ct")),
        result: file_size(&work.server.join("result.ct")),
    };
    let report = twin_report(
        args,
        ui,
        &case,
        &logits,
        format!("{params_name}: {}", params.describe()),
        client.plan.summary(),
        flood,
        timings,
        bytes,
    )?;
    let text = render(&report, &server, &work.root, args.keep.is_some());
    ui.report(&report, &text, true)?;
    let agree = report.accuracy.argmax_agree;
    if agree != samples {
        bail!(
            "the encrypted and plaintext predictions differ on {} sample(s)",
            samples - agree
        );
    }
    Ok(())
}

/// The parameters: selected for 40-bit flooding (written to `client/params.toml`), or the
/// case's preset without flooding. Returns them with the name the report prints.
fn demo_params(
    case: &DemoCase,
    flood: bool,
    mode: Mode,
    samples: usize,
    client: &Path,
) -> Result<(CkksParams, String)> {
    let (params, name) = if flood {
        let sel = hepeft::select::select(
            &hepeft::plan::public_structure(&case.adapter)?,
            &hepeft::select::SelectRequest {
                flooding: Some(hepeft::plan::FloodingConfig::default()),
                ..Default::default()
            },
        )
        .context("selecting parameters for 40-bit noise flooding")?;
        write_atomic(
            &client.join("params.toml"),
            sel.params.to_toml()?.as_bytes(),
        )?;
        (sel.params, "selected for 40-bit flooding".to_string())
    } else {
        (CkksParams::preset(case.preset)?, case.preset.to_string())
    };
    if mode == Mode::Batch && samples > params.slots() {
        bail!(
            "batch mode takes at most {} samples with {}",
            params.slots(),
            case.preset
        );
    }
    Ok((params, name))
}

/// The client's feature files (one `.npy` per model input), kept with `--keep`.
fn save_features(features: &[Array2<f64>], client: &Path) -> Result<()> {
    for (i, m) in features.iter().enumerate() {
        let name = if features.len() == 1 {
            "features.npy".to_string()
        } else {
            format!("features{i}.npy")
        };
        save_npy_atomic(&client.join(name), m.view())?;
    }
    Ok(())
}

/// What the client holds after keygen and encryption.
struct ClientRun {
    keys: KeyDir,
    plan: Plan,
    keygen_seconds: f64,
    encrypt_seconds: f64,
}

/// Client: keys for the public card's plan into `client/keys/` (as `hepeft keygen`), then
/// the features encrypted under the public key read back from there into
/// `client/query.ct` (as `hepeft encrypt`).
fn client_keygen_encrypt(
    public_card: &Path,
    params: &CkksParams,
    mode: Mode,
    features: &[Array2<f64>],
    work: &WorkDir,
) -> Result<ClientRun> {
    let plan = public_plan(&load_model(public_card, None)?, params, mode)?;
    let t = Instant::now();
    let keys =
        ClientKeys::generate(&plan, &mut session::os_rng()?).context("generating the keys")?;
    let record = hepeft::select::SelectionRecord::keygen(mode);
    let keydir =
        KeyDir::create_with_record(&work.client.join("keys"), &plan, &keys, true, Some(&record))?;
    let keygen_seconds = t.elapsed().as_secs_f64();
    let client = Client::for_encryption(&keydir, plan.clone(), public_card)?;
    let t = Instant::now();
    let views: Vec<ArrayView2<f64>> = features.iter().map(|m| m.view()).collect();
    let query = client
        .encrypt_samples(&views, &mut session::os_rng()?)
        .context("encrypting the samples")?;
    let encrypt_seconds = t.elapsed().as_secs_f64();
    let path = work.client.join("query.ct");
    query.save(&path, params)?;
    query.meta(client.plan()).write(&path)?;
    Ok(ClientRun {
        keys: keydir,
        plan,
        keygen_seconds,
        encrypt_seconds,
    })
}

/// Server timings.
struct ServerRun {
    load_seconds: f64,
    prepare_seconds: f64,
    evaluate_seconds: f64,
}

/// Server (as `hepeft evaluate`): reads only what crosses over (the client's
/// `params.toml`, `eval.keys` and `query.ct`) and its private card, checks the keys,
/// evaluates and sanitizes every query, writes `server/result.ct`.
fn server_evaluate(work: &WorkDir, mode: Mode, flood: bool) -> Result<ServerRun> {
    let t = Instant::now();
    let keys_dir = work.client.join("keys");
    let params_path = keys_dir.join(PARAMS_TOML);
    let text = std::fs::read_to_string(&params_path)
        .with_context(|| format!("reading {}", params_path.display()))?;
    let params_file = hepeft::select::ParamsFile::from_toml(&text)?;
    let params = params_file.params.clone();
    session::check_params_secure(&params)?;
    let adapter = load_model(&work.server.join("adapter.toml"), None)?;
    let plan =
        Plan::compile(&adapter, &params, plan_options(mode)).context("compiling the model")?;
    let (keys, binding): (EvaluationKeys, _) = load_bound(keys_dir.join(EVAL_KEYS), &params)?;
    session::server::check_keys(&plan, &keys, binding.as_ref())?;
    let sanitize = demo_sanitize(&params_file, &adapter, &plan, flood)?;
    session::check_flooding(&plan, sanitize.flooding.as_ref())?;
    let query = Query::load(&work.client.join("query.ct"), &params, Role::Query)?;
    let load_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let server = Server::new(plan, sanitize).context("preparing the model's weights")?;
    let prepare_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (result, _) = server
        .evaluate_queries(
            Arc::new(keys),
            &query,
            &mut session::os_rng()?,
            &|_, _, _| {},
        )
        .context("evaluating the query")?;
    let evaluate_seconds = t.elapsed().as_secs_f64();
    let path = work.server.join("result.ct");
    result.save(&path, &params)?;
    result.meta(server.plan()).write(&path)?;
    Ok(ServerRun {
        load_seconds,
        prepare_seconds,
        evaluate_seconds,
    })
}

/// The sanitization `hepeft evaluate` settles on without flooding flags (or with
/// `--no-flooding` when `flood` is false): the parameters' record, and flooding sized from
/// the adapter's own calibrated error bound (seeded, so the same on every run).
fn demo_sanitize(
    params_file: &hepeft::select::ParamsFile,
    adapter: &hepeft::model::Adapter,
    plan: &Plan,
    flood: bool,
) -> Result<SanitizeConfig> {
    use hepeft::select::record;
    let profile = if flood {
        hepeft::select::calibrate(adapter, None).context("calibrating the adapter's error bound")?
    } else {
        None
    };
    let public_adapter = hepeft::plan::public_structure(adapter)?;
    let ctx = record::SelectContext {
        adapter: &public_adapter,
        command: "hepeft params select --model <public card>",
    };
    let request = record::FloodingRequest {
        off: !flood,
        profile,
        ..Default::default()
    };
    Ok(record::resolve_sanitize(params_file.record.as_ref(), &request, plan, Some(&ctx))?.config)
}

/// Client (as `hepeft decrypt`): the result checked against the secret key's key set and
/// plan, decrypted, written to `client/logits.npy`. Returns the logits and the seconds
/// spent reading, checking and decrypting.
fn client_decrypt(
    client: &ClientRun,
    public_card: &Path,
    work: &WorkDir,
) -> Result<(Array2<f64>, f64)> {
    let t = Instant::now();
    let params = &client.keys.params;
    let result = QueryResult::load(&work.server.join("result.ct"), params, Role::Result)?;
    let decryptor = Client::for_decryption(&client.keys, client.plan.clone(), public_card)?;
    decryptor.check_result(&result)?;
    let logits = decryptor
        .decrypt(&result)
        .context("decrypting the result")?;
    let seconds = t.elapsed().as_secs_f64();
    save_npy_atomic(&work.client.join("logits.npy"), logits.view())?;
    Ok((logits, seconds))
}

/// Compares the decrypted logits with the plaintext twin and assembles the report.
#[allow(clippy::too_many_arguments)]
fn twin_report(
    args: &DemoArgs,
    ui: &Ui,
    case: &DemoCase,
    got: &Array2<f64>,
    params: String,
    plan: String,
    flood: bool,
    seconds: Timings,
    bytes: Bytes,
) -> Result<DemoReport> {
    let views: Vec<ArrayView2<f64>> = case.features.iter().map(|m| m.view()).collect();
    let (want, rep) = reference::evaluate_batch(&case.adapter, &views)?;
    if !rep.is_clean() {
        ui.note("warning: some values left an activation interval; the encrypted result differs there\n");
    }
    let got_flat: Vec<f64> = got.iter().copied().collect();
    let want_flat: Vec<f64> = want.iter().copied().collect();
    let stats = PrecisionStats::relative_to_largest(&got_flat, &want_flat);
    let max_logit = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let predictions: Vec<(usize, usize)> = got
        .axis_iter(Axis(0))
        .zip(want.axis_iter(Axis(0)))
        .map(|(g, w)| (argmax(g), argmax(w)))
        .collect();
    let agree = predictions.iter().filter(|(g, w)| g == w).count();
    let truth = case.truth.as_ref();
    Ok(DemoReport {
        model: case.label.into(),
        adapter: case.adapter.summary(),
        params,
        flooding: if flood {
            "40-bit noise flooding, 1 query".into()
        } else {
            "OFF".into()
        },
        plan,
        mode: Mode::from(args.mode).name().into(),
        seconds,
        bytes,
        accuracy: Accuracy {
            samples: got.nrows(),
            argmax_agree: agree,
            max_abs_error: stats.max_abs_error,
            max_abs_logit: max_logit,
            precision_bits_min: stats.min_bits,
            precision_bits_median: stats.median_bits,
        },
        label_accuracy: truth.map(|(y, _)| {
            let hits = predictions
                .iter()
                .zip(y)
                .filter(|((g, _), t)| g == *t)
                .count();
            hits as f64 / y.len().max(1) as f64
        }),
        labels: truth.map(|(y, _)| y.clone()),
        classes: truth.map(|(_, c)| c.iter().map(|s| s.to_string()).collect()),
        predictions,
        kept: args.keep.clone(),
    })
}

fn render(r: &DemoReport, server: &ServerRun, dir: &Path, kept: bool) -> String {
    let mut s = format!(
        "hepeft demo: {}, {} sample(s), {} mode\n\n",
        r.model, r.accuracy.samples, r.mode
    );
    s.push_str(&r.adapter);
    s.push_str(&format!("parameters: {}\n", r.params));
    s.push_str(&r.plan);
    s.push_str("\nstep                         time\n");
    let rows = [
        ("publish (server)", r.seconds.publish),
        ("keygen (client)", r.seconds.keygen),
        ("encrypt (client)", r.seconds.encrypt),
        ("evaluate (server)", r.seconds.evaluate),
        ("decrypt (client)", r.seconds.decrypt),
    ];
    for (name, t) in rows {
        s.push_str(&format!("  {name:<24} {t:>8.3} s\n"));
    }
    s.push_str(&format!(
        "  (server also spent {:.3} s loading and {:.3} s preparing the weights)\n",
        server.load_seconds, server.prepare_seconds
    ));
    s.push_str("\nbytes exchanged\n");
    s.push_str(&format!(
        "  evaluation keys  client -> server, once   {:>12}\n",
        human_bytes(r.bytes.evaluation_keys)
    ));
    s.push_str(&format!(
        "  query            client -> server         {:>12}\n",
        human_bytes(r.bytes.query)
    ));
    s.push_str(&format!(
        "  result           server -> client         {:>12}\n",
        human_bytes(r.bytes.result)
    ));
    let a = &r.accuracy;
    if r.flooding == "OFF" {
        s.push_str(
            "\noutput sanitization: non-output slots masked, result dropped to the output level and\n  \
             re-randomized under the client's public key; NOISE FLOODING OFF (--no-flooding or batch\n  \
             mode): the decryption error depends on the weights (docs/threat-model.md)\n",
        );
    } else {
        s.push_str(&format!(
            "\noutput sanitization: non-output slots masked, result dropped to the output level,\n  \
             re-randomized under the client's public key, {} (docs/threat-model.md)\n",
            r.flooding
        ));
    }
    s.push_str("\naccuracy against the plaintext twin\n");
    s.push_str(&format!(
        "  argmax agreement   {}/{}\n",
        a.argmax_agree, a.samples
    ));
    s.push_str(&format!(
        "  max |error|        {:.3e} (largest |logit| {:.3})\n",
        a.max_abs_error, a.max_abs_logit
    ));
    s.push_str(&format!(
        "  precision          {:.1} bits relative to the largest logit (median {:.1})\n",
        a.precision_bits_min, a.precision_bits_median
    ));
    let name = |c: usize| match &r.classes {
        Some(names) => names.get(c).cloned().unwrap_or_else(|| c.to_string()),
        None => c.to_string(),
    };
    let preds: Vec<String> = r
        .predictions
        .iter()
        .take(16)
        .map(|(g, _)| name(*g))
        .collect();
    s.push_str(&format!(
        "  predicted classes  {}{}\n",
        preds.join(" "),
        if r.predictions.len() > 16 { " ..." } else { "" }
    ));
    if let (Some(labels), Some(acc)) = (&r.labels, r.label_accuracy) {
        let truth: Vec<String> = labels.iter().take(16).map(|&y| name(y)).collect();
        s.push_str(&format!(
            "  true labels        {}{}\n  accuracy           {:.3} on these held-out samples (decrypted predictions vs labels)\n",
            truth.join(" "),
            if labels.len() > 16 { " ..." } else { "" },
            acc
        ));
    }
    if kept {
        s.push_str(&format!(
            "\nfiles kept in {}: server/ (private card, result.ct), public/ (public card), client/ (keys/, features.npy, query.ct, logits.npy)\n",
            dir.display()
        ));
    }
    s
}
