//! `hepeft decrypt`: encrypted result -> logits (client side, secret key).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use ndarray::{Array2, Axis};
use serde::Serialize;

use hepeft::io::format::FileKind;
use hepeft::session::{Client, CtMeta, KeyDir, QueryResult, Role};

use crate::cli::args::DecryptArgs;
use crate::cli::common::*;
use crate::cli::Ui;

#[derive(Debug, Serialize)]
pub struct Ranked {
    pub class: usize,
    pub logit: f64,
}

/// What decrypt produced.
#[derive(Debug, Serialize)]
pub struct DecryptReport {
    pub out: PathBuf,
    pub samples: usize,
    pub classes: usize,
    pub decrypt_seconds: f64,
    pub top_k: Vec<Vec<Ranked>>,
}

/// The `k` largest entries of each row, largest first.
pub fn top_k(logits: &Array2<f64>, k: usize) -> Vec<Vec<Ranked>> {
    logits
        .axis_iter(Axis(0))
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            idx.into_iter()
                .take(k)
                .map(|class| Ranked {
                    class,
                    logit: row[class],
                })
                .collect()
        })
        .collect()
}

/// `hepeft decrypt`.
pub fn run(args: &DecryptArgs, ui: &Ui) -> Result<DecryptReport> {
    let keys = KeyDir::open(&args.keys)?;
    let params = &keys.params;
    let adapter = load_model(&args.model, None)?;
    let plan = public_plan_with(&adapter, params, keys.info.plan_options()?)?;
    keys.check_plan(&plan, &args.model)?;
    let meta = CtMeta::read(&args.input, "result", params)?;
    keys.check_meta(&meta, &args.input)?;
    check_envelope(
        &args.input,
        FileKind::Ciphertext,
        params,
        "result ciphertext",
    )?;
    let sk_path = keys.path(SECRET_KEY);
    check_envelope(&sk_path, FileKind::SecretKey, params, "secret key")?;
    check_output(&args.out)?;
    if let Some(mode) = hepeft::io::limits::loose_secret_permissions(&sk_path) {
        ui.note(&format!(
            "warning: {} has mode {mode:04o}: group or others can read the secret key; run `chmod 600 {}`\n",
            sk_path.display(),
            sk_path.display()
        ));
    }

    let t = Instant::now();
    let result = QueryResult::load(&args.input, params, Role::Result)
        .with_context(|| format!("reading {}", args.input.display()))?;
    // The secret key must belong to this key directory's public key and plan, the result
    // to this secret key and plan; the sidecar must agree with the envelope.
    let client = Client::for_decryption(&keys, plan, &args.model)
        .with_context(|| format!("checking {}", sk_path.display()))?;
    let binding = client
        .check_result(&result)
        .with_context(|| format!("checking {}", args.input.display()))?;
    meta.check_binding(&args.input, &binding, keys.mode)?;
    let logits = client.decrypt(&result).context("decrypting the result")?;
    let decrypt_time = t.elapsed();
    save_npy_atomic(&args.out, logits.view())?;

    let classes = client.plan().output_dim();
    let report = DecryptReport {
        out: args.out.clone(),
        samples: meta.samples,
        classes,
        decrypt_seconds: decrypt_time.as_secs_f64(),
        top_k: top_k(&logits, args.top_k.min(classes)),
    };
    ui.note(&format!(
        "decrypt: {} sample(s) x {} classes in {}, wrote {}\n",
        report.samples,
        report.classes,
        secs(decrypt_time),
        args.out.display()
    ));
    let mut text = String::new();
    for (s, ranked) in report.top_k.iter().enumerate() {
        let cells: Vec<String> = ranked
            .iter()
            .map(|r| format!("{} ({:.4})", r.class, r.logit))
            .collect();
        text.push_str(&format!("sample {s}: {}\n", cells.join(", ")));
    }
    ui.report(&report, &text, true)?;
    Ok(report)
}
