//! `hepeft serve` and `hepeft query`: thin wrappers over `hepeft::serve` (server and client).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ndarray::ArrayView2;
use serde::Serialize;

use hepeft::model::load::load_features_npy;
use hepeft::serve::client::QueryClient;
use hepeft::serve::tune::TuneServiceConfig;
use hepeft::serve::{run_until_signal, AuthTokens, RateLimit, ServerConfig};
use hepeft::tune::{Trainable, TuneConfig};

use super::decrypt::{top_k, Ranked};
use crate::cli::args::{QueryArgs, ServeArgs};
use crate::cli::common::*;
use crate::cli::Ui;

/// `hepeft serve`: runs until SIGINT or SIGTERM, finishing requests in flight.
pub fn run(args: &ServeArgs, ui: &Ui) -> Result<()> {
    let (params_file, params_warning) = args.params.load_file()?;
    if let Some(w) = params_warning {
        ui.note(&w);
    }
    let params = params_file.params.clone();
    let adapter = load_model(&args.model, args.weights.as_deref())?;
    if all_weights_zero(&adapter) {
        ui.note("warning: every weight of this model is zero (is it the public card?)\n");
    }
    let auth = match &args.token_file {
        Some(f) => AuthTokens::from_file(f)?,
        None => AuthTokens::none(),
    };
    if !auth.is_required() && !args.listen.ip().is_loopback() {
        if !args.insecure_no_auth {
            anyhow::bail!(
                "refusing to listen on {} without access tokens: pass --token-file FILE (or --insecure-no-auth behind an authenticating proxy)",
                args.listen
            );
        }
        ui.note("WARNING: serving on a non-loopback address WITHOUT AUTHENTICATION (--insecure-no-auth)\n");
    }
    let rate_limit = args
        .rate_limit
        .map(|r| RateLimit::new(r, args.rate_burst))
        .transpose()?;
    // The layout and flooding the parameters were selected for, unless told otherwise.
    let public_adapter = hepeft::plan::public_structure(&adapter)?;
    let ctx = hepeft::select::record::SelectContext {
        adapter: &public_adapter,
        command: "hepeft params select --model <card>",
    };
    let record = params_file.record.as_ref();
    let mode = hepeft::select::record::resolve_mode(record, args.mode.map(Into::into), Some(&ctx))?;
    let options = hepeft::plan::PlanOptions {
        pre_rotate: args.pre_rotate.unwrap_or(hepeft::plan::PRE_ROTATE_AUTO),
        batch_pack: args.batch_pack,
        ..plan_options(mode)
    };
    let plan = hepeft::plan::Plan::compile(&public_adapter, &params, options)
        .context("compiling the model")?;
    // The flooding is sized from this adapter's calibrated public error bound, computed
    // here from the weights (never taken from the parameter record).
    let profile = if args.flooding.no_flooding {
        None
    } else {
        {
            let calib = crate::cli::common::calibration_features(&adapter, args.calib.as_deref())?;
            hepeft::select::calibrate(&adapter, calib.as_deref())
                .context("calibrating the adapter's error bound")?
        }
    };
    let resolved = hepeft::select::record::resolve_sanitize(
        record,
        &hepeft::select::record::FloodingRequest {
            profile,
            ..args.flooding.request()
        },
        &plan,
        Some(&ctx),
    )?;
    for w in &resolved.warnings {
        ui.note(w);
    }
    // the compiled options: the input layout the compiler chose when none was given
    let cfg = server_config(args, auth, rate_limit, plan.options(), resolved.config)?;
    if args.flooding.no_flooding {
        ui.note(crate::cli::args::FloodingArgs::WARNING);
    }
    ui.note(&format!("parameters: {}\n", params.describe()));
    run_until_signal(adapter, params, cfg, |addr| {
        ui.note(&format!("hepeft serve: listening on http://{addr} (Ctrl-C stops after the requests in flight)\n"));
    })
    .context("serving")?;
    ui.note("hepeft serve: stopped\n");
    Ok(())
}

/// The service settings from the command line (limits, timeouts, access, tuning) and the
/// resolved layout and sanitization.
fn server_config(
    args: &ServeArgs,
    auth: AuthTokens,
    rate_limit: Option<RateLimit>,
    options: hepeft::plan::PlanOptions,
    sanitize: hepeft::plan::SanitizeConfig,
) -> Result<ServerConfig> {
    let defaults = ServerConfig::default();
    Ok(ServerConfig {
        listen: args.listen,
        max_body_bytes: args.max_body_mib << 20,
        max_concurrent_evaluations: args
            .max_concurrent
            .map_or(defaults.max_concurrent_evaluations, usize::from),
        queue_depth: args.queue,
        request_timeout: Duration::from_secs(args.timeout_secs),
        key_store_dir: args.key_store.clone(),
        key_store_max_disk_bytes: args.key_store_max_disk_mib.map(|m| m << 20),
        key_store_max_bytes: args.key_store_max_mib.saturating_mul(1 << 20),
        header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
        max_connections: args.max_connections.max(1),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        auth,
        rate_limit,
        mode: options,
        model_name: args
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned()),
        sanitize,
        tune: args
            .tune
            .tune
            .then(|| -> Result<TuneServiceConfig> {
                Ok(TuneServiceConfig {
                    config: TuneConfig {
                        directions: args.tune.tune_directions,
                        perturbation: args.tune.tune_perturbation,
                        learning_rate: args.tune.tune_learning_rate,
                        trainable: Trainable::parse(&args.tune.tune_trainable)?,
                    },
                    checkpoint_dir: args.tune.tune_dir.clone(),
                    max_steps: args.tune.tune_max_steps,
                    ..TuneServiceConfig::default()
                })
            })
            .transpose()?,
    })
}

/// What a query produced.
#[derive(Debug, Serialize)]
pub struct QueryReport {
    pub server: String,
    pub out: PathBuf,
    pub samples: usize,
    pub classes: usize,
    pub seconds: f64,
    pub top_k: Vec<Vec<Ranked>>,
}

/// `hepeft query`.
pub fn query(args: &QueryArgs, ui: &Ui) -> Result<()> {
    let features = args
        .inputs
        .iter()
        .map(|p| load_features_npy(p).with_context(|| format!("reading features {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let views: Vec<ArrayView2<f64>> = features.iter().map(|m| m.view()).collect();
    let mut client = QueryClient::new(&args.server)?;
    if let Some(token) = read_token(args.token_file.as_deref())? {
        client = client.with_token(&token);
    }
    let start = Instant::now();
    let logits = client
        .query_with_key_dir(&args.keys, &views)
        .with_context(|| format!("querying {}", args.server))?;
    let seconds = start.elapsed().as_secs_f64();
    save_npy_atomic(&args.out, logits.view())?;
    let ranked = top_k(&logits, args.top_k);
    let mut text = format!(
        "{} sample(s) -> {} in {} (encrypt, send, evaluate, decrypt)\n",
        logits.nrows(),
        args.out.display(),
        secs(start.elapsed())
    );
    for (i, row) in ranked.iter().enumerate() {
        let classes: Vec<String> = row
            .iter()
            .map(|r| format!("{} ({:.4})", r.class, r.logit))
            .collect();
        text.push_str(&format!("  sample {i}: {}\n", classes.join(", ")));
    }
    let report = QueryReport {
        server: args.server.clone(),
        out: args.out.clone(),
        samples: logits.nrows(),
        classes: logits.ncols(),
        seconds,
        top_k: ranked,
    };
    ui.report(&report, &text, true)
}

/// The query's access token: the first non-comment line of `file`, else `HEPEFT_TOKEN`.
pub(crate) fn read_token(
    file: Option<&std::path::Path>,
) -> Result<Option<zeroize::Zeroizing<String>>> {
    if let Some(f) = file {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        );
        let token = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| zeroize::Zeroizing::new(l.to_string()));
        return match token {
            Some(t) => Ok(Some(t)),
            None => anyhow::bail!("token file {} holds no token", f.display()),
        };
    }
    Ok(std::env::var("HEPEFT_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(zeroize::Zeroizing::new))
}
