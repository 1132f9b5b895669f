//! Token-level adapters (CryptPEFT's OWC side networks, `kind = "token"` cards) in
//! `publish`, `params select`, `keygen`, `encrypt`, `evaluate` and `decrypt`: thin
//! wrappers over [`hepeft::session::token`]. The commands send a token card here (see
//! [`is_token_card`]); the files are the pooled ones (`plan.json` names
//! `hepeft-token-plan/1`, sidecars name mode `token`).
//!
//! `encrypt` takes one `.npy` per adapter input (tapped layer), in the card's input
//! order, each `samples x T x d` (f32 or f64; a 2-D `T x d` file is one sample).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use ndarray::Array2;
use serde::Serialize;

use hepeft::ckks::{load_bound, EvaluationKeys};
use hepeft::io::binding::Binding;
use hepeft::io::format::{digest_hex, FileKind};
use hepeft::model::token::{public_token_structure, TokenAdapter};
use hepeft::model::token_card::{load_token_card, save_token_adapter};
use hepeft::model::token_npy::load_token_states_npy;
use hepeft::plan::{FloodingConfig, Mode, SanitizeConfig};
use hepeft::select::token::{select_token, select_token_flooded};
use hepeft::select::{ParamsFile, SelectRequest, SelectionRecord};
use hepeft::session::token::client::TokenKeys;
use hepeft::session::token::{
    refuse_batch, TokenClient, TokenKeyDir, TokenModel, TokenServer, TOKEN_MODE,
};
use hepeft::session::{self, Query, QueryResult, Role};

pub use hepeft::model::token_card::is_token_card;

use crate::cli::args::{
    DecryptArgs, EncryptArgs, EvaluateArgs, KeygenArgs, ModeArg, PublishArgs, SelectArgs,
};
use crate::cli::common::*;
use crate::cli::Ui;

fn load(card: &Path) -> Result<TokenAdapter> {
    load_token_card(card).with_context(|| format!("loading token card {}", card.display()))
}

fn compile(adapter: &TokenAdapter, params: &hepeft::ckks::CkksParams) -> Result<TokenModel> {
    TokenModel::compile(adapter, params).with_context(|| {
        format!(
            "compiling the token adapter for parameters {}",
            params.digest_short()
        )
    })
}

fn no_batch(mode: Option<ModeArg>) -> Result<()> {
    if mode.map(Mode::from) == Some(Mode::Batch) {
        refuse_batch()?;
    }
    Ok(())
}

/// `hepeft publish` for a token card: `public.toml` + `public.safetensors`, every weight,
/// scale and coefficient zero.
pub fn publish(args: &PublishArgs, ui: &Ui) -> Result<()> {
    let adapter = load(&args.model)?;
    let public = public_token_structure(&adapter)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let card = args.out.join(crate::cli::cmd::publish::PUBLIC_CARD);
    let weights = save_token_adapter(&public, &card, args.name.as_deref())
        .context("writing the public token card")?;
    // read it back, as the client will
    let reread = load(&card)?;
    #[derive(Serialize)]
    struct Report {
        card: std::path::PathBuf,
        weights: std::path::PathBuf,
        summary: String,
    }
    let report = Report {
        card: card.clone(),
        weights: weights.clone(),
        summary: reread.summary(),
    };
    let text = format!(
        "publish: wrote {} and {} (token adapter, structure only: every weight, scale and activation coefficient is zero)\n{}",
        card.display(),
        weights.display(),
        report.summary
    );
    ui.report(&report, &text, true)
}

/// `hepeft params select` for a token card (one sample per query; flooding reserved).
pub fn select(args: &SelectArgs, ui: &Ui) -> Result<()> {
    no_batch(args.mode)?;
    if args.batch.is_some() {
        refuse_batch()?;
    }
    let adapter = hepeft::plan::token::fuse_tokens(&load(&args.model)?)?;
    let flooding = args.flooding.config().flooding;
    let sel = match &flooding {
        Some(f) => select_token_flooded(&adapter, args.precision, args.security, f),
        None => select_token(&adapter, args.precision, args.security),
    }
    .with_context(|| {
        format!(
            "selecting parameters for token card {} ({} bits, {}-bit security, {})",
            args.model.display(),
            args.precision,
            args.security.bits().unwrap_or(0),
            match &flooding {
                Some(f) => format!("{}-bit noise flooding", f.statistical_security),
                None => "no noise flooding".into(),
            }
        )
    })?;
    let req = SelectRequest {
        precision_bits: args.precision,
        security: args.security,
        options: plan_options(Mode::Latency),
        batch: None,
        flooding,
        profile: None,
    };
    let predicted = sel
        .report
        .flooding
        .map_or(sel.report.predicted_precision_bits, |(_, b)| b);
    let file = ParamsFile {
        params: sel.params.clone(),
        record: Some(SelectionRecord::selected(&req, predicted)),
    };
    let header = format!(
        "# Selected by `hepeft params select` for token card {} ({} bits, {}).\n# {}\n",
        args.model.display(),
        args.precision,
        sel.params.security(),
        sel.params.describe()
    );
    write_atomic(&args.out, format!("{header}{}", file.to_toml()?).as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    let text = format!(
        "token adapter, one sample per query\n{}wrote {}\n",
        sel.report.to_text(),
        args.out.display()
    );
    ui.report(&sel.report, &text, true)
}

/// `hepeft keygen` for a token card.
pub fn keygen(args: &KeygenArgs, ui: &Ui) -> Result<()> {
    no_batch(args.mode)?;
    let file = required_params_file(args.params.as_ref(), ui)?;
    if file.record.as_ref().map(|r| r.mode) == Some(Mode::Batch) {
        refuse_batch()?;
    }
    let model = compile(&load(&args.model)?, &file.params)?;
    session::keydir::check_writable(&args.out, args.force)?;
    let t = Instant::now();
    let keys =
        TokenKeys::generate(&model, &mut session::os_rng()?).context("generating the keys")?;
    let keygen_time = t.elapsed();
    let record = file
        .record
        .clone()
        .unwrap_or_else(|| SelectionRecord::keygen(Mode::Latency));
    let dir = TokenKeyDir::create(&args.out, &model, &keys, args.force, Some(&record))?;
    let info = &dir.info;
    let text = format!(
        "keygen: {} (token adapter, T = {}, {} input(s)), {} Galois key(s){}, in {}\n  wrote {}: {SECRET_KEY} (mode 0600), {PUBLIC_KEY}, {EVAL_KEYS} ({}), {PARAMS_TOML}, {PLAN_JSON}\n  send {EVAL_KEYS} and {PARAMS_TOML} to the server; never {SECRET_KEY}\n",
        file.params.describe(),
        info.tokens,
        info.input_dims.len(),
        info.galois_elements.len(),
        if info.relinearization { " + relinearization key" } else { "" },
        secs(keygen_time),
        args.out.display(),
        human_bytes(file_size(&dir.path(EVAL_KEYS))),
    );
    ui.report(info, &text, false)
}

/// The sidecar of token ciphertexts.
fn meta(ct: &hepeft::session::Ciphertexts, model: &TokenModel) -> CtMeta {
    CtMeta {
        format: META_FORMAT.into(),
        content: ct.binding.role.name().into(),
        mode: TOKEN_MODE.into(),
        samples: ct.samples(),
        queries: ct.queries(),
        ciphertexts_per_query: ct.per_query(),
        structure_digest: digest_hex(&ct.binding.structure),
        params_digest: digest_hex(&model.params.digest()),
        key_id: ct.binding.key_set.hex(),
        pre_rotate: 1,
        batch_pack: 1,
    }
}

/// Every field of a sidecar against the envelope's binding.
fn check_meta(m: &CtMeta, b: &Binding, ct: &Path) -> Result<()> {
    let fields = [
        ("key_id", m.key_id.clone(), b.key_set.hex()),
        (
            "structure_digest",
            m.structure_digest.clone(),
            digest_hex(&b.structure),
        ),
        (
            "ciphertexts_per_query",
            m.ciphertexts_per_query.to_string(),
            b.per_query.to_string(),
        ),
        (
            "queries",
            format!("{:?}", m.queries),
            format!("{:?}", b.queries),
        ),
        ("content", m.content.clone(), b.role.name().to_string()),
        ("mode", m.mode.clone(), TOKEN_MODE.to_string()),
    ];
    for (field, side, env) in fields {
        if side != env {
            bail!(
                "{}: field `{field}` is {side}, but the ciphertext in {} is bound to {env}: the two files do not belong together",
                meta_path(ct).display(),
                ct.display()
            );
        }
    }
    Ok(())
}

/// Reads one `samples x T x d` `.npy` per input and regroups them per sample.
fn read_token_inputs(
    paths: &[std::path::PathBuf],
    model: &TokenModel,
) -> Result<Vec<Vec<Array2<f64>>>> {
    let specs = model.adapter.inputs();
    let t = model.adapter.tokens();
    if paths.len() != specs.len() {
        let names: Vec<String> = specs
            .iter()
            .map(|s| format!("{}[{t}x{}]", s.name, s.dim))
            .collect();
        bail!(
            "the token adapter has {} input(s) ({}) but {} --input file(s) were given: pass one .npy of shape \
             samples x {t} x d per input (tapped layer), in that order",
            specs.len(),
            names.join(", "),
            paths.len()
        );
    }
    let mut per_input = Vec::with_capacity(paths.len());
    for (path, spec) in paths.iter().zip(specs) {
        let xs = load_token_states_npy(path)
            .with_context(|| format!("reading token states {}", path.display()))?;
        if let Some(x) = xs.first() {
            if x.dim() != (t, spec.dim) {
                bail!(
                    "{} holds {}x{} token matrices, but the adapter's input '{}' takes {t}x{} (samples x T x d)",
                    path.display(),
                    x.nrows(),
                    x.ncols(),
                    spec.name,
                    spec.dim
                );
            }
        }
        per_input.push(xs);
    }
    let samples = per_input.first().map_or(0, |v| v.len());
    if samples == 0 {
        bail!("no samples in {}", paths[0].display());
    }
    if let Some((p, v)) = paths
        .iter()
        .zip(&per_input)
        .find(|(_, v)| v.len() != samples)
    {
        bail!(
            "{} has {} samples, {} has {samples}",
            p.display(),
            v.len(),
            paths[0].display()
        );
    }
    Ok((0..samples)
        .map(|s| per_input.iter().map(|v| v[s].clone()).collect())
        .collect())
}

/// `hepeft encrypt` for a token card.
pub fn encrypt(args: &EncryptArgs, ui: &Ui) -> Result<()> {
    let keys = TokenKeyDir::open(&args.keys)?;
    let model = compile(&load(&args.model)?, &keys.params)?;
    check_output(&args.out)?;
    check_output(&meta_path(&args.out))?;
    let client = TokenClient::for_encryption(&keys, model, &args.model)?;
    let samples = read_token_inputs(&args.input, client.model())?;
    let t = Instant::now();
    let query = client
        .encrypt_samples(&samples, &mut session::os_rng()?)
        .context("encrypting the token states")?;
    let time = t.elapsed();
    query
        .save(&args.out, &keys.params)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let m = meta(&query, client.model());
    m.write(&args.out)?;
    let text = format!(
        "encrypt: {} sample(s) of token states, {} ciphertexts ({}) in {}\n  wrote {} and {}\n",
        m.samples,
        query.items.len(),
        human_bytes(file_size(&args.out)),
        secs(time),
        args.out.display(),
        meta_path(&args.out).display()
    );
    ui.report(&m, &text, false)
}

/// `hepeft evaluate` for a token card: evaluate and sanitize every sample.
pub fn evaluate(args: &EvaluateArgs, ui: &Ui) -> Result<()> {
    if args.weights.is_some() {
        bail!("--weights does not apply to token cards: a token card names its own weights file");
    }
    let file = required_params_file(args.params.as_ref(), ui)?;
    let params = file.params.clone();
    session::check_params_secure(&params)?;
    super::evaluate::check_eval_keys_file(args, &params)?;
    let m = CtMeta::read(&args.input, "query", &params)?;
    if m.mode != TOKEN_MODE {
        bail!(
            "{} is a {} query, but {} is a token card: use the model card the query was encrypted for",
            args.input.display(),
            m.mode,
            args.model.display()
        );
    }
    let model = compile(&load(&args.model)?, &params)?;
    if m.structure_digest != digest_hex(&model.structure) {
        bail!(
            "model mismatch: the query was encrypted for a token plan with structure digest {}, but {} compiles to {} \
             (parameters {}): the client used another token card",
            m.structure_digest.chars().take(16).collect::<String>(),
            args.model.display(),
            short(&model.structure),
            params.digest_short()
        );
    }
    check_output(&args.out)?;
    check_output(&meta_path(&args.out))?;
    let fl = &args.flooding;
    let sanitize = if fl.no_flooding {
        ui.note(crate::cli::args::FloodingArgs::WARNING);
        SanitizeConfig::without_flooding()
    } else {
        let recorded = file.record.as_ref().and_then(|r| r.flooding_config());
        let base = recorded.unwrap_or_default();
        SanitizeConfig {
            flooding: Some(FloodingConfig::new(
                fl.flooding_bits.unwrap_or(base.statistical_security),
                fl.flooding_queries.unwrap_or(base.queries),
            )),
        }
    };
    let server = TokenServer::new(model, sanitize)?;
    let (keys, binding): (EvaluationKeys, _) = load_bound(&args.eval_keys, &params)
        .with_context(|| format!("reading evaluation keys {}", args.eval_keys.display()))?;
    server
        .check_keys(&keys, binding.as_ref())
        .with_context(|| format!("checking evaluation keys {}", args.eval_keys.display()))?;
    let query = Query::load(&args.input, &params, Role::Query)
        .with_context(|| format!("reading query {}", args.input.display()))?;
    check_meta(&m, &query.binding, &args.input)?;
    let t = Instant::now();
    let (result, report) = server
        .evaluate_queries(Arc::new(keys), &query, &mut session::os_rng()?, &|s, n| {
            ui.note(&format!("evaluate: sample {s}/{n}\n"))
        })
        .context("evaluating the token adapter")?;
    let time = t.elapsed();
    result
        .save(&args.out, &params)
        .with_context(|| format!("writing {}", args.out.display()))?;
    meta(&result, server.model()).write(&args.out)?;
    let flood = match report.as_ref().and_then(|r| r.flooding.as_ref()) {
        Some(f) => format!(
            "flooding at {} bits for {} quer(ies): noise 2^{:.1} per slot, about {:.1} bits of precision left",
            f.statistical_security, f.queries, f.slot_std_log2, f.precision_bits_after
        ),
        None => "NO noise flooding".into(),
    };
    let text = format!(
        "evaluate: {} token sample(s) in {}\n  sanitized: output slots masked (one level), level {}, re-randomized; {flood}\n  wrote {} ({} ciphertexts, {}) and {}\n",
        m.samples,
        secs(time),
        params.output_floor_level(),
        args.out.display(),
        result.items.len(),
        human_bytes(file_size(&args.out)),
        meta_path(&args.out).display()
    );
    ui.report(&report, &text, false)
}

/// `hepeft decrypt` for a token card.
pub fn decrypt(args: &DecryptArgs, ui: &Ui) -> Result<()> {
    let keys = TokenKeyDir::open(&args.keys)?;
    let params = &keys.params;
    let model = compile(&load(&args.model)?, params)?;
    let m = CtMeta::read(&args.input, "result", params)?;
    check_envelope(
        &args.input,
        FileKind::Ciphertext,
        params,
        "result ciphertext",
    )?;
    check_output(&args.out)?;
    let client = TokenClient::for_decryption(&keys, model, &args.model)
        .with_context(|| format!("checking {}", keys.path(SECRET_KEY).display()))?;
    let result = QueryResult::load(&args.input, params, Role::Result)
        .with_context(|| format!("reading {}", args.input.display()))?;
    check_meta(&m, &result.binding, &args.input)?;
    let t = Instant::now();
    let logits = client.decrypt(&result).context("decrypting the result")?;
    let time = t.elapsed();
    save_npy_atomic(&args.out, logits.view())?;
    let classes = logits.ncols();
    let top = crate::cli::cmd::decrypt::top_k(&logits, args.top_k.min(classes));
    ui.note(&format!(
        "decrypt: {} token sample(s) x {classes} outputs in {}, wrote {}\n",
        logits.nrows(),
        secs(time),
        args.out.display()
    ));
    let mut text = String::new();
    for (s, ranked) in top.iter().enumerate() {
        let cells: Vec<String> = ranked
            .iter()
            .map(|r| format!("{} ({:.4})", r.class, r.logit))
            .collect();
        text.push_str(&format!("sample {s}: {}\n", cells.join(", ")));
    }
    ui.report(&top, &text, true)
}

/// `hepeft serve` with a token card: refused (not wired into the HTTP service yet).
#[cfg(feature = "serve")]
pub fn refuse_serve(model: &Path) -> Result<()> {
    bail!(
        "{} is a token card: `hepeft serve` does not serve token adapters yet (the HTTP service runs pooled plans \
         only); run them with publish / keygen / encrypt / evaluate / decrypt, or in Rust with \
         hepeft::session::token::TokenServer",
        model.display()
    )
}
