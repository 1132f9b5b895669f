//! `hepeft params list | show | select`.

use anyhow::{Context as _, Result};
use serde::Serialize;

use hepeft::ckks::security::max_log_qp;
use hepeft::ckks::{CkksParams, PRESETS};
use hepeft::io::format::digest_hex;
use hepeft::plan::{public_structure, Mode};
use hepeft::select::{select_with_advice, ParamsFile, SelectRequest, SelectionRecord};

use crate::cli::args::{ParamsSource, SelectArgs};
use crate::cli::common::{load_model, plan_options, write_atomic};
use crate::cli::Ui;

#[derive(Serialize)]
struct ParamsInfo {
    name: Option<String>,
    description: String,
    log_n: u32,
    slots: usize,
    log_qp: f64,
    max_log_qp_128: Option<u32>,
    depth: usize,
    log_scale: f64,
    dnum: usize,
    q: Vec<u64>,
    p: Vec<u64>,
    security: String,
    digest: String,
    notes: Vec<String>,
}

fn info(name: Option<&str>, params: &CkksParams, notes: Vec<String>) -> ParamsInfo {
    ParamsInfo {
        name: name.map(str::to_string),
        description: params.describe(),
        log_n: params.log_n(),
        slots: params.slots(),
        log_qp: params.log_qp(),
        max_log_qp_128: max_log_qp(params.log_n(), hepeft::ckks::Security::Bits128),
        depth: params.max_level().get(),
        log_scale: params.default_scale().log2(),
        dnum: params.dnum(),
        q: params.q().to_vec(),
        p: params.p().to_vec(),
        security: params.security().to_string(),
        digest: digest_hex(&params.digest()),
        notes,
    }
}

/// The `#` comment lines at the top of a preset file (its documentation).
fn preset_notes(text: &str) -> Vec<String> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_string())
        .collect()
}

/// `params list`.
pub fn list(ui: &Ui) -> Result<()> {
    let mut infos = Vec::new();
    let mut text = String::new();
    for (name, toml) in PRESETS {
        let params = CkksParams::preset(name).with_context(|| format!("preset {name}"))?;
        text.push_str(&format!("{name:<22} {}\n", params.describe()));
        infos.push(info(Some(name), &params, preset_notes(toml)));
    }
    ui.report(&infos, &text, true)
}

/// `params show NAME|FILE`.
pub fn show(source: &ParamsSource, ui: &Ui) -> Result<()> {
    let params = source.load()?;
    let (file, _) = source.load_file()?;
    let (name, mut notes) = match source {
        ParamsSource::Preset(n) => {
            let toml = PRESETS.iter().find(|(p, _)| p == n).map_or("", |(_, t)| *t);
            (Some(n.as_str()), preset_notes(toml))
        }
        ParamsSource::File(_) => (None, Vec::new()),
    };
    notes.push(match &file.record {
        Some(r) => format!("selected for: {}", r.describe()),
        None => "selected for: nothing recorded (latency layout and 40-bit flooding for 1 query by default)"
            .to_string(),
    });
    let i = info(name, &params, notes);
    let mut text = format!("{}\n{}\n", source.label(), params.describe());
    for n in &i.notes {
        text.push_str(&format!("  # {n}\n"));
    }
    let bound = max_log_qp(params.log_n(), params.security())
        .map_or_else(|| "no bound (unchecked)".to_string(), |b| b.to_string());
    text.push_str(&format!(
        "N = {} ({} slots), levels {}, log2(QP) = {:.1} (bound {bound} at {})\nq = {:?}\np = {:?}\nNTT: {}\ndigest {}\n",
        params.n(),
        params.slots(),
        params.max_level(),
        params.log_qp(),
        params.security(),
        params.q(),
        params.p(),
        params.ntt_path(),
        i.digest
    ));
    ui.report(&i, &text, true)
}

/// `params select`.
pub fn select(args: &SelectArgs, ui: &Ui) -> Result<()> {
    let adapter = load_model(&args.model, None)?;
    let public = public_structure(&adapter)?;
    let mode = match (args.mode, args.batch) {
        (Some(m), _) => Mode::from(m),
        (None, Some(_)) => Mode::Batch,
        (None, None) => Mode::Latency,
    };
    if mode == Mode::Latency && args.batch.is_some() {
        anyhow::bail!("--batch only applies to --mode batch");
    }
    // Calibration features (one-input adapters): the error and logit size are measured on them.
    let calib = crate::cli::common::calibration_features(&adapter, args.calib.as_deref())?;
    let req = SelectRequest {
        precision_bits: args.precision,
        security: args.security,
        // keygen's default layout (the compiler's pre-rotation choice), so that the report's
        // key and query sizes are those keygen produces
        options: hepeft::plan::PlanOptions {
            pre_rotate: hepeft::plan::PRE_ROTATE_AUTO,
            ..plan_options(mode)
        },
        batch: args.batch.map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
        flooding: args.flooding.config().flooding,
        // the adapter's error bound and logit size, measured from the card's weights (none
        // for a public card without weights: the unit model)
        profile: hepeft::select::calibrate(&adapter, calib.as_deref())
            .context("calibrating the adapter's error bound")?,
    };
    let sel = select_with_advice(&public, &req).with_context(|| {
        format!(
            "selecting parameters for {} ({} mode, {} bits, {}-bit security, {})",
            args.model.display(),
            mode.name(),
            args.precision,
            args.security.bits().unwrap_or(0),
            if args.flooding.no_flooding {
                "no noise flooding".to_string()
            } else {
                format!("{}-bit noise flooding", args.flooding.bits())
            }
        )
    })?;
    let predicted = sel
        .report
        .flooded_precision_bits
        .unwrap_or(sel.report.predicted_precision_bits);
    let file = ParamsFile {
        params: sel.params.clone(),
        record: Some(SelectionRecord::selected(&req, predicted)),
    };
    let toml = file.to_toml()?;
    let header = format!(
        "# Selected by `hepeft params select` for {} ({} mode, {} bits, {}).\n# {}\n",
        args.model.display(),
        mode.name(),
        args.precision,
        sel.params.security(),
        sel.params.describe()
    );
    write_atomic(&args.out, format!("{header}{toml}").as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    let text = format!("{}wrote {}\n", sel.report.to_text(), args.out.display());
    ui.report(&sel.report, &text, true)
}
