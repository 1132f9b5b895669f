//! `hepeft keygen`: the client's keys for one model, parameter set and layout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use hepeft::ckks::{save, save_bound, CkksParams, KeyGenerator};
use hepeft::io::binding::Binding;
use hepeft::io::format::digest_hex;
use hepeft::io::limits::{read_text, MAX_TEXT_FILE};
use hepeft::plan::{Mode, Plan};

use crate::cli::args::KeygenArgs;
use crate::cli::common::*;
use crate::cli::Ui;

/// What keygen wrote.
#[derive(Debug, Serialize)]
pub struct KeygenReport {
    pub dir: PathBuf,
    pub params: String,
    pub params_digest: String,
    pub mode: String,
    pub structure_digest: String,
    pub key_id: String,
    pub galois_keys: usize,
    pub relinearization: bool,
    pub secret_key_bytes: u64,
    pub public_key_bytes: u64,
    pub eval_keys_bytes: u64,
    pub keygen_seconds: f64,
    pub write_seconds: f64,
}

/// A key directory as keygen wrote it.
pub struct KeyDir {
    pub dir: PathBuf,
    pub params: CkksParams,
    pub info: PlanInfo,
    pub mode: Mode,
}

impl KeyDir {
    /// Reads `params.toml` and `plan.json` of `dir` and checks they agree.
    pub fn open(dir: &Path) -> Result<KeyDir> {
        let ptoml = dir.join(PARAMS_TOML);
        if !ptoml.is_file() {
            bail!(
                "{} is not a key directory (no {PARAMS_TOML}); create one with `hepeft keygen`",
                dir.display()
            );
        }
        let text = read_text(&ptoml, MAX_TEXT_FILE, "parameter file")
            .with_context(|| format!("reading {}", ptoml.display()))?;
        let params = CkksParams::from_toml(&text)
            .with_context(|| format!("parameter file {}", ptoml.display()))?;
        let info: PlanInfo = read_json(&dir.join(PLAN_JSON), "plan metadata")?;
        if info.format != PLAN_FORMAT {
            bail!(
                "{}: unsupported plan metadata format {:?}",
                dir.join(PLAN_JSON).display(),
                info.format
            );
        }
        if info.params_digest != digest_hex(&params.digest()) {
            bail!(
                "parameter mismatch inside {}: plan.json names parameters {}, params.toml is {}",
                dir.display(),
                info.params_digest.chars().take(16).collect::<String>(),
                params.digest_short()
            );
        }
        let mode = parse_mode(&info.mode)?;
        Ok(KeyDir {
            dir: dir.to_path_buf(),
            params,
            info,
            mode,
        })
    }

    /// Checks that `plan` (compiled from `card`) is the plan the keys were made for: the
    /// structure digest, and every other field of `plan.json` against the plan (Galois
    /// elements, rotation steps, relinearization, input and output widths), so an edited
    /// `plan.json` is refused rather than believed.
    pub fn check_plan(&self, plan: &Plan, card: &Path) -> Result<()> {
        let got = digest_hex(&plan.structure_digest());
        if got != self.info.structure_digest {
            bail!(
                "model mismatch: the keys in {} were made for a plan with structure digest {} ({} mode), \
                 but {} compiles to {}: use the model card the keys were generated with, or run keygen again",
                self.dir.display(),
                self.info.structure_digest.chars().take(16).collect::<String>(),
                self.info.mode,
                card.display(),
                &got[..16]
            );
        }
        let pj = self.path(PLAN_JSON);
        let field = |name: &str, found: String, want: String| -> Result<()> {
            if found != want {
                bail!(
                    "{}: field `{name}` is {found} but the plan it names has {want} (the file was edited or \
                     mixed up): run keygen again",
                    pj.display()
                );
            }
            Ok(())
        };
        field(
            "galois_elements",
            format!("{:?}", self.info.galois_elements),
            format!("{:?}", plan.galois_elements()),
        )?;
        field(
            "rotation_steps",
            format!("{:?}", self.info.rotation_steps),
            format!("{:?}", plan.rotation_steps()),
        )?;
        field(
            "relinearization",
            self.info.relinearization.to_string(),
            plan.needs_relin().to_string(),
        )?;
        field(
            "input_dims",
            format!("{:?}", self.info.input_dims),
            format!("{:?}", plan.input_dims()),
        )?;
        field(
            "output_dim",
            self.info.output_dim.to_string(),
            plan.output_dim().to_string(),
        )?;
        Ok(())
    }

    /// The key-set id `plan.json` names.
    pub fn key_set(&self) -> Result<hepeft::io::KeySetId> {
        hepeft::io::KeySetId::from_hex(&self.info.key_id)
            .with_context(|| format!("{}: field `key_id`", self.path(PLAN_JSON).display()))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// OS randomness for key material and encryption.
pub fn os_rng() -> Result<ChaCha20Rng> {
    ChaCha20Rng::try_from_os_rng()
        .map_err(|e| anyhow::anyhow!("the operating system's random generator failed: {e}"))
}

/// `hepeft keygen`.
pub fn run(args: &KeygenArgs, ui: &Ui) -> Result<KeygenReport> {
    let (file, warning) = args
        .params
        .as_ref()
        .context("--params is required with --backend ckks")?
        .load_file()?;
    if let Some(w) = warning {
        ui.note(&w);
    }
    let params = file.params.clone();
    let adapter = load_model(&args.model, None)?;
    // The layout the parameters were selected for, unless told otherwise (a different one
    // is refused, naming the flag that works).
    let public_adapter = hepeft::plan::public_structure(&adapter)?;
    let command = format!("hepeft params select --model {}", args.model.display());
    let mode = hepeft::select::record::resolve_mode(
        file.record.as_ref(),
        args.mode.map(Mode::from),
        Some(&hepeft::select::record::SelectContext {
            adapter: &public_adapter,
            command: &command,
        }),
    )?;
    let plan = public_plan(&adapter, &params, mode)?;
    let dir = &args.out;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let sk_path = dir.join(SECRET_KEY);
    if sk_path.exists() && !args.force {
        bail!(
            "{} already exists: refusing to overwrite a secret key (results encrypted under it could no longer be \
             decrypted); pass --force or choose another --out",
            sk_path.display()
        );
    }
    let galois = plan.galois_elements();
    let t = Instant::now();
    let mut rng = os_rng()?;
    let kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key(&mut rng);
    let pk = kg
        .gen_public_key(&sk, &mut rng)
        .context("generating the public key")?;
    let evk = kg
        .gen_evaluation_keys(&sk, &galois, plan.needs_relin(), &mut rng)
        .context("generating the evaluation keys")?
        // The server re-randomizes results with a fresh encryption of zero under this key.
        .with_public_key(pk.clone())?;
    let keygen_time = t.elapsed();

    let t = Instant::now();
    let header = format!("# Written by `hepeft keygen`: {}\n", params.describe());
    // The record travels with the parameters to the server; parameters without one get the
    // layout of these keys recorded.
    let record = file
        .record
        .clone()
        .unwrap_or_else(|| hepeft::select::SelectionRecord::keygen(mode));
    let written = hepeft::select::ParamsFile {
        params: params.clone(),
        record: Some(record),
    };
    write_atomic(
        &dir.join(PARAMS_TOML),
        format!("{header}{}", written.to_toml()?).as_bytes(),
    )?;
    let pk_path = dir.join(PUBLIC_KEY);
    save(&pk_path, &params, &pk).with_context(|| format!("writing {}", pk_path.display()))?;
    // Bind the secret and evaluation keys to this public key and plan (issue 20).
    let key_set = hepeft::session::key_set_id(&params, &pk)?;
    let binding = Binding::keys(key_set, plan.structure_digest());
    let ek_path = dir.join(EVAL_KEYS);
    save_bound(&ek_path, &params, &evk, &binding)
        .with_context(|| format!("writing {}", ek_path.display()))?;
    save_bound(&sk_path, &params, &sk, &binding)
        .with_context(|| format!("writing {}", sk_path.display()))?;
    let key_id = file_id(&pk_path)?;
    if key_id != key_set.hex() {
        bail!("internal error: the public key file's id {key_id} differs from its key-set id {key_set}");
    }
    let info = PlanInfo {
        format: PLAN_FORMAT.into(),
        mode: mode_name(mode).into(),
        structure_digest: digest_hex(&plan.structure_digest()),
        params_digest: digest_hex(&params.digest()),
        key_id: key_id.clone(),
        galois_elements: galois.clone(),
        rotation_steps: plan.rotation_steps(),
        relinearization: plan.needs_relin(),
        input_dims: plan.input_dims().to_vec(),
        output_dim: plan.output_dim(),
    };
    write_json(&dir.join(PLAN_JSON), &info)?;
    let write_time = t.elapsed();

    let report = KeygenReport {
        dir: dir.clone(),
        params: args.params.as_ref().map(|p| p.label()).unwrap_or_default(),
        params_digest: params.digest_short(),
        mode: info.mode.clone(),
        structure_digest: info.structure_digest[..16].to_string(),
        key_id,
        galois_keys: galois.len(),
        relinearization: plan.needs_relin(),
        secret_key_bytes: file_size(&sk_path),
        public_key_bytes: file_size(&pk_path),
        eval_keys_bytes: file_size(&ek_path),
        keygen_seconds: keygen_time.as_secs_f64(),
        write_seconds: write_time.as_secs_f64(),
    };
    let text = format!(
        "keygen: {} ({} mode), {} Galois key(s){}, in {}\n  wrote {}: {SECRET_KEY} ({}, mode 0600), {PUBLIC_KEY} ({}), {EVAL_KEYS} ({}), {PARAMS_TOML}, {PLAN_JSON}\n  send {EVAL_KEYS} and {PARAMS_TOML} to the server; never {SECRET_KEY}\n",
        params.describe(),
        report.mode,
        report.galois_keys,
        if report.relinearization { " + relinearization key" } else { "" },
        secs(keygen_time),
        dir.display(),
        human_bytes(report.secret_key_bytes),
        human_bytes(report.public_key_bytes),
        human_bytes(report.eval_keys_bytes),
    );
    ui.report(&report, &text, false)?;
    Ok(report)
}
