//! `hepeft decrypt`: encrypted result -> logits (client side, secret key).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use ndarray::{Array2, Axis};
use serde::Serialize;

use hepeft::ckks::{load_bound, CiphertextBundle, Decryptor, Encoder, SecretKey};
use hepeft::io::format::FileKind;

use super::keygen::KeyDir;
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
    #[serde(skip)]
    pub logits: Array2<f64>,
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
    let plan = public_plan(&adapter, params, keys.mode)?;
    keys.check_plan(&plan, &args.model)?;

    let meta = read_meta(&args.input, "result", params)?;
    if meta.structure_digest != keys.info.structure_digest {
        bail!(
            "model mismatch: {} was computed for a plan with structure digest {}, the keys in {} are for {}",
            args.input.display(),
            meta.structure_digest.chars().take(16).collect::<String>(),
            keys.dir.display(),
            keys.info.structure_digest.chars().take(16).collect::<String>()
        );
    }
    if meta.key_id != keys.info.key_id {
        bail!(
            "key mismatch: {} was encrypted under public key {}, the keys in {} are {}: it cannot be decrypted with them",
            args.input.display(),
            meta.key_id,
            keys.dir.display(),
            keys.info.key_id
        );
    }
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
    let (bundle, result_binding): (CiphertextBundle, _) = load_bound(&args.input, params)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let per = plan.output_ciphertexts();
    let (sk, sk_binding): (SecretKey, _) =
        load_bound(&sk_path, params).with_context(|| format!("reading {}", sk_path.display()))?;
    // The secret key must belong to this key directory's public key and plan, the result
    // to this secret key and plan; the sidecar must agree with the envelope.
    let sk_binding = hepeft::session::check_secret_matches_public(
        sk_binding.as_ref(),
        keys.key_set()?,
        Some(&plan),
    )
    .with_context(|| format!("checking {}", sk_path.display()))?;
    let result_binding = hepeft::session::check_result_matches_secret(
        result_binding.as_ref(),
        &sk_binding,
        &plan,
        &bundle.items,
    )
    .with_context(|| format!("checking {}", args.input.display()))?;
    check_meta_binding(&args.input, &meta, &result_binding, keys.mode)?;
    let encoder = Encoder::new(params)?;
    let dec = Decryptor::new(params, &sk)?;
    let mut logits = Array2::zeros((meta.samples, plan.output_dim()));
    let mut row = 0;
    for (q, cts) in meta.queries.iter().zip(bundle.items.chunks(per.max(1))) {
        let part = plan
            .decrypt_result(&encoder, &dec, cts, *q)
            .context("decrypting the result")?;
        for r in part.axis_iter(Axis(0)) {
            if row < logits.nrows() {
                logits.row_mut(row).assign(&r);
            }
            row += 1;
        }
    }
    let decrypt_time = t.elapsed();
    save_npy_atomic(&args.out, logits.view())?;

    let k = args.top_k.min(plan.output_dim());
    let report = DecryptReport {
        out: args.out.clone(),
        samples: meta.samples,
        classes: plan.output_dim(),
        decrypt_seconds: decrypt_time.as_secs_f64(),
        top_k: top_k(&logits, k),
        logits,
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
