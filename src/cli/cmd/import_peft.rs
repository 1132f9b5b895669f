//! `hepeft import-peft`: a model card from a Hugging Face PEFT checkpoint and the base
//! weights (parse -> `hepeft::model::import::import_peft` -> report).

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use hepeft::model::import::{import_peft, ActivationSpec, ImportOptions};
use hepeft::model::load::PeftOptions;
use hepeft::model::ActivationFn;

use crate::cli::args::ImportPeftArgs;
use crate::cli::Ui;

/// What import-peft wrote.
#[derive(Debug, Serialize)]
pub struct ImportPeftReport {
    pub card: String,
    pub derived_weights: Option<String>,
    pub adapter_dir: String,
    pub adapter_name: String,
    pub modules: Vec<String>,
    pub warnings: Vec<String>,
}

/// `hepeft import-peft`.
pub fn run(args: &ImportPeftArgs, ui: &Ui) -> Result<ImportPeftReport> {
    let activation = match (&args.activation, &args.interval) {
        (None, None) => None,
        (Some(f), Some(i)) => {
            let v: Vec<f64> = i
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .with_context(|| format!("--interval {i}: expected LO,HI"))?;
            match v.as_slice() {
                [lo, hi] => Some(ActivationSpec {
                    func: ActivationFn::from_name(f)?,
                    interval: [*lo, *hi],
                    degree: args.degree,
                }),
                _ => bail!("--interval {i}: expected two numbers, LO,HI"),
            }
        }
        (Some(_), None) => bail!("--activation needs --interval LO,HI (the inputs' range)"),
        (None, Some(_)) => bail!("--interval goes with --activation"),
    };
    let opts = ImportOptions {
        peft: PeftOptions {
            allow_unknown: args.allow_unknown,
            adapter_name: args.adapter_name.clone(),
        },
        head: args.head.clone(),
        activation,
        name: args.name.clone(),
    };
    let r = import_peft(&args.adapter, &args.base, &args.out, &opts).with_context(|| {
        format!(
            "importing the PEFT checkpoint {} onto {}",
            args.adapter.display(),
            args.base.display()
        )
    })?;
    for w in &r.warnings {
        ui.note(&format!(
            "WARNING (--allow-unknown): {w}; the card may not compute what PEFT computes\n"
        ));
    }
    let report = ImportPeftReport {
        card: r.card.display().to_string(),
        derived_weights: r.derived.as_ref().map(|p| p.display().to_string()),
        adapter_dir: r.adapter_dir.display().to_string(),
        adapter_name: r.adapter_name.clone(),
        modules: r.summary.clone(),
        warnings: r.warnings.clone(),
    };
    let mut text = format!(
        "import-peft: wrote {} from adapter '{}' in {}\n",
        report.card, report.adapter_name, report.adapter_dir
    );
    if let Some(d) = &report.derived_weights {
        text.push_str(&format!("  derived tensors: {d}\n"));
    }
    for m in &report.modules {
        text.push_str(&format!("  {m}\n"));
    }
    ui.report(&report, &text, true)?;
    Ok(report)
}
