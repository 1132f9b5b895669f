//! PEFT checkpoints written by the real `peft` package (tests/fixtures/peft, made by
//! training/peft_fixtures.py with peft 0.21.2 / torch 2.15): every applied variant is
//! imported as a card (`hepeft::model::import`), its f64 twin must give PyTorch's float64
//! logits to 1e-9 relative (KaSA: 1e-6, see below), and its encrypted run (small insecure
//! test ring; batch mode, and latency mode for DoRA / KaSA) must agree with the twin to 16
//! bits with the same argmax. Refused variants
//! are checked for their message; unknown fields and tensors are errors unless allowed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use hepeft::ckks::*;
use hepeft::model::import::{import_peft, ActivationSpec, ImportOptions};
use hepeft::model::load::{load_card, load_features_npy, PeftLora, PeftOptions, TensorStore};
use hepeft::model::reference::argmax;
use hepeft::model::{reference, ActivationFn, Adapter};
use hepeft::plan::{Mode, Plan, PlanOptions};
use hepeft::Error;
use ndarray::{Array2, Axis};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/peft")
        .join(name)
}

/// Every fixture whose checkpoint hepeft applies, with the adapter name to choose and the
/// f64 tolerance (relative to the largest logit).
const APPLIED: &[(&str, Option<&str>, f64)] = &[
    ("lora", None, 1e-9),
    ("rslora", None, 1e-9),
    ("modules_to_save", None, 1e-9),
    ("bias_lora_only", None, 1e-9),
    ("bias_all", None, 1e-9),
    ("patterns", None, 1e-9),
    ("lora_bias", None, 1e-9),
    ("dora", None, 1e-9),
    // PEFT truncates KaSA's base weight with an SVD it runs in float32 even in a float64
    // model (`_truncate_base_weight`); hepeft's SVD is f64, so they differ at f32 rounding.
    ("kasa", None, 1e-6),
    ("fan_in_fan_out", None, 1e-9),
    ("named", None, 1e-9),
    ("multi", Some("alpha"), 1e-9),
];

fn options(adapter_name: Option<&str>, allow_unknown: bool) -> ImportOptions {
    ImportOptions {
        peft: PeftOptions {
            allow_unknown,
            adapter_name: adapter_name.map(str::to_string),
        },
        head: vec!["dense".into(), "classifier".into()],
        // The fixtures' activation is x * x: exact as a degree-2 polynomial.
        activation: Some(ActivationSpec {
            func: ActivationFn::Square,
            interval: [-16.0, 16.0],
            degree: 2,
        }),
        name: None,
    }
}

/// Imports `dir` (a fixture or a modified copy) with the base weights of fixture `base_of`.
fn import(
    dir: &Path,
    base_of: &str,
    opts: &ImportOptions,
) -> hepeft::Result<(Adapter, Vec<String>)> {
    let out = tempfile::tempdir().unwrap();
    let card = out.path().join("card.toml");
    let report = import_peft(dir, &fixture(base_of).join("base.safetensors"), &card, opts)?;
    Ok((load_card(&card).unwrap(), report.warnings))
}

fn max_rel_err(got: &Array2<f64>, want: &Array2<f64>) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

fn plaintext(name: &str, adapter: &Adapter) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    let x = load_features_npy(fixture(name).join("inputs.npy")).unwrap();
    let want = load_features_npy(fixture(name).join("logits.npy")).unwrap();
    let (got, report) = reference::evaluate_batch(adapter, &[x.view()]).unwrap();
    assert!(
        report.is_clean(),
        "{name}: inputs leave the activation interval"
    );
    (x, got, want)
}

#[test]
fn every_fixture_dir_is_listed() {
    let mut dirs: Vec<String> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = APPLIED.iter().map(|(n, _, _)| n.to_string()).collect();
    listed.extend(["bdlora".to_string(), "pickle".to_string()]);
    listed.sort();
    assert_eq!(dirs, listed);
}

#[test]
fn applied_fixtures_match_pytorch_in_f64() {
    for &(name, adapter_name, tol) in APPLIED {
        let (adapter, warnings) = import(&fixture(name), name, &options(adapter_name, false))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(warnings.is_empty());
        let (_, got, want) = plaintext(name, &adapter);
        let err = max_rel_err(&got, &want);
        println!("{name:<16} f64 twin vs PyTorch: max error {err:.2e} of the largest logit");
        assert!(
            err <= tol,
            "{name}: f64 twin differs from PyTorch by {err:e}"
        );
        for (a, b) in got.axis_iter(Axis(0)).zip(want.axis_iter(Axis(0))) {
            assert_eq!(argmax(a), argmax(b), "{name}: argmax");
        }
    }
}

#[test]
fn applied_fixtures_match_encrypted() {
    let params = deep_test_params();
    let options_batch = PlanOptions {
        mode: Mode::Batch,
        ..Default::default()
    };
    for (i, &(name, adapter_name, _)) in APPLIED.iter().enumerate() {
        let (adapter, _) = import(&fixture(name), name, &options(adapter_name, false)).unwrap();
        let (x, want, torch) = plaintext(name, &adapter);
        let plan = Plan::compile(&adapter, &params, options_batch).unwrap();
        let seed = 1000 + 10 * i as u64;
        let f = Fixture::new(params.clone(), seed);
        let keys = KeyGenerator::new(&params)
            .gen_evaluation_keys(
                &f.sk,
                &plan.galois_elements(),
                plan.needs_relin(),
                &mut rng(seed + 1),
            )
            .unwrap();
        let ev = Evaluator::with_keys(&params, Arc::new(keys)).unwrap();
        let q = plan
            .encrypt_query(
                &f.encoder,
                EncryptionKey::Public(&f.pk),
                &[x.view()],
                &mut rng(seed + 2),
            )
            .unwrap();
        let out = plan.prepare().unwrap().evaluate(&ev, &q).unwrap();
        let dec = Decryptor::new(&params, &f.sk).unwrap();
        let got = plan
            .decrypt_result(&f.encoder, &dec, &out, x.nrows())
            .unwrap();
        let stats = PrecisionStats::relative_to_largest(
            &got.iter().copied().collect::<Vec<_>>(),
            &want.iter().copied().collect::<Vec<_>>(),
        );
        println!(
            "{name:<16} encrypted vs f64 twin: {:.1} bits (max |err| {:.2e}), depth {}",
            stats.min_bits,
            stats.max_abs_error,
            plan.depth()
        );
        assert!(
            stats.min_bits >= 16.0,
            "{name}: only {:.1} bits",
            stats.min_bits
        );
        for ((a, b), c) in got
            .axis_iter(Axis(0))
            .zip(want.axis_iter(Axis(0)))
            .zip(torch.axis_iter(Axis(0)))
        {
            assert_eq!(argmax(a), argmax(b), "{name}: argmax vs twin");
            assert_eq!(argmax(a), argmax(c), "{name}: argmax vs PyTorch");
        }
    }
}

fn model_error(r: hepeft::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(Error::Model { reason }) => reason,
        other => panic!("expected a model error, got {other:?}"),
    }
}

#[test]
fn refused_variants_say_why() {
    let bd = model_error(import(&fixture("bdlora"), "bdlora", &options(None, false)));
    assert!(bd.contains("use_bdlora") && bd.contains("BD-LoRA"), "{bd}");
    let pickle = model_error(import(&fixture("pickle"), "pickle", &options(None, false)));
    assert!(
        pickle.contains("pickle") && pickle.contains("safetensors"),
        "{pickle}"
    );
    // Several adapters and no name: the names are listed.
    let multi = model_error(import(&fixture("multi"), "multi", &options(None, false)));
    assert!(
        multi.contains("alpha, beta") && multi.contains("--adapter-name"),
        "{multi}"
    );
    let absent = model_error(import(
        &fixture("multi"),
        "multi",
        &options(Some("gamma"), false),
    ));
    assert!(absent.contains("alpha, beta"), "{absent}");
    assert!(import(&fixture("multi"), "multi", &options(Some("beta"), false)).is_ok());
    // A head that leaves out a module the checkpoint changes.
    let mut o = options(None, false);
    o.head = vec!["dense".into()];
    o.activation = None;
    let outside = model_error(import(&fixture("modules_to_save"), "modules_to_save", &o));
    assert!(
        outside.contains("'classifier' (modules_to_save)"),
        "{outside}"
    );
    // DoRA / KaSA are not stand-alone LoRA updates (a card's `lora` op).
    for v in ["dora", "kasa"] {
        let p = PeftLora::load_dir(fixture(v)).unwrap();
        let e = model_error(p.get("dense").unwrap().to_op());
        assert!(e.contains("import-peft"), "{e}");
    }
}

/// A copy of fixture `name` in a temporary directory.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture(name).join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("adapter_config.json");
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn unknown_fields_and_tensors_are_errors_unless_allowed() {
    // Unknown config field.
    let dir = copy_fixture("lora");
    edit_config(dir.path(), |c| {
        c.insert("lora_frobnicate".into(), serde_json::json!(2));
    });
    let e = model_error(import(dir.path(), "lora", &options(None, false)));
    assert!(
        e.contains("'lora_frobnicate'") && e.contains("--allow-unknown"),
        "{e}"
    );
    let (adapter, warnings) = import(dir.path(), "lora", &options(None, true)).unwrap();
    assert_eq!(
        warnings,
        ["ignored unknown adapter_config.json field 'lora_frobnicate'"]
    );
    let (_, got, want) = plaintext("lora", &adapter);
    assert!(max_rel_err(&got, &want) <= 1e-9);

    // Unknown tensor.
    let dir = copy_fixture("lora");
    let p = dir.path().join("adapter_model.safetensors");
    let mut store = TensorStore::from_path(&p).unwrap();
    store
        .insert(
            "base_model.model.dense.lora_S.weight",
            vec![2],
            vec![1.0, 2.0],
        )
        .unwrap();
    store.write(&p).unwrap();
    let e = model_error(import(dir.path(), "lora", &options(None, false)));
    assert!(e.contains("'base_model.model.dense.lora_S.weight'"), "{e}");
    let (_, warnings) = import(dir.path(), "lora", &options(None, true)).unwrap();
    assert_eq!(
        warnings,
        ["ignored unknown tensor 'base_model.model.dense.lora_S.weight'"]
    );

    // A refused field that is set is refused even with the opt-out.
    let dir = copy_fixture("lora");
    edit_config(dir.path(), |c| {
        c.insert("layer_replication".into(), serde_json::json!([[0, 1]]));
    });
    let e = model_error(import(dir.path(), "lora", &options(None, true)));
    assert!(e.contains("'layer_replication'"), "{e}");
}

#[test]
fn config_and_tensors_must_agree() {
    // A rank_pattern regex key that gives the wrong rank: the message names the key.
    let dir = copy_fixture("patterns");
    edit_config(dir.path(), |c| {
        c.insert("rank_pattern".into(), serde_json::json!({"classif.*": 3}));
    });
    let e = model_error(import(dir.path(), "patterns", &options(None, false)));
    assert!(
        e.contains("rank_pattern key 'classif.*'") && e.contains("rank 2"),
        "{e}"
    );
    // A regular expression the loader cannot match as Python does.
    let dir = copy_fixture("patterns");
    edit_config(dir.path(), |c| {
        c.insert(
            "alpha_pattern".into(),
            serde_json::json!({"(?<=x)dense": 3}),
        );
    });
    let e = model_error(import(dir.path(), "patterns", &options(None, false)));
    assert!(e.contains("alpha_pattern key '(?<=x)dense'"), "{e}");
    // DoRA magnitudes without use_dora.
    let dir = copy_fixture("dora");
    edit_config(dir.path(), |c| {
        c.insert("use_dora".into(), serde_json::json!(false));
    });
    let e = model_error(import(dir.path(), "dora", &options(None, false)));
    assert!(
        e.contains("lora_magnitude_vector") && e.contains("use_dora"),
        "{e}"
    );
    // bias = "none" with saved base-layer biases.
    let dir = copy_fixture("bias_lora_only");
    edit_config(dir.path(), |c| {
        c.insert("bias".into(), serde_json::json!("none"));
    });
    let e = model_error(import(dir.path(), "bias_lora_only", &options(None, false)));
    assert!(
        e.contains("base_layer.bias") && e.contains("\"none\""),
        "{e}"
    );
    // LoRA tensors on a module target_modules does not name.
    let dir = copy_fixture("lora");
    edit_config(dir.path(), |c| {
        c.insert("target_modules".into(), serde_json::json!(["dense"]));
    });
    let e = model_error(import(dir.path(), "lora", &options(None, false)));
    assert!(
        e.contains("'classifier'") && e.contains("target_modules"),
        "{e}"
    );
    // A pickle-only directory is refused before anything is parsed.
    let e = model_error(PeftLora::load_dir(fixture("pickle")));
    assert!(e.contains("adapter_model.bin"), "{e}");
}

#[test]
fn cli_import_peft_writes_a_loadable_card() {
    let out = tempfile::tempdir().unwrap();
    let card = out.path().join("card.toml");
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "--json".into(),
            "import-peft".into(),
            "--adapter".into(),
            fixture("multi").display().to_string(),
            "--base".into(),
            fixture("multi")
                .join("base.safetensors")
                .display()
                .to_string(),
            "--head".into(),
            "dense,classifier".into(),
            "--activation".into(),
            "square".into(),
            "--interval".into(),
            "-16,16".into(),
            "--degree".into(),
            "2".into(),
            "--out".into(),
            card.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        std::process::Command::new(env!("CARGO_BIN_EXE_hepeft"))
            .args(&args)
            .output()
            .unwrap()
    };
    // Two adapters and no name: refused, naming them.
    let o = run(&[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("alpha, beta"), "{err}");
    // Named: the card reproduces PyTorch's logits.
    let o = run(&["--adapter-name", "alpha"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["adapter_name"], "alpha");
    assert_eq!(report["modules"].as_array().unwrap().len(), 2);
    let (_, got, want) = plaintext("multi", &load_card(&card).unwrap());
    assert!(max_rel_err(&got, &want) <= 1e-9);
}

/// A hand-written card with a `[peft]` section and `lora` nodes must use the tensors the
/// checkpoint replaces (here the `modules_to_save` classifier), from a list of weights files.
#[test]
fn hand_written_card_must_use_replaced_tensors() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "base.safetensors",
    ] {
        std::fs::copy(fixture("modules_to_save").join(f), dir.path().join(f)).unwrap();
    }
    let card = |classifier: &str, version: u32| {
        format!(
            r#"version = {version}
weights = ["base.safetensors", "adapter_model.safetensors"]
peft = {{ weights = "adapter_model.safetensors", config = "adapter_config.json" }}
[[inputs]]
name = "x"
dim = 16
[[nodes]]
name = "dense"
op = "linear"
inputs = ["x"]
weight = "dense.weight"
bias = "dense.bias"
[[nodes]]
name = "delta"
op = "lora"
inputs = ["x"]
peft_module = "dense"
[[nodes]]
name = "h"
op = "add"
inputs = ["dense", "delta"]
[[nodes]]
name = "sq"
op = "poly"
inputs = ["h"]
func = "square"
interval = [-16.0, 16.0]
degree = 2
[[nodes]]
name = "logits"
op = "linear"
inputs = ["sq"]
weight = "{classifier}.weight"
bias = "{classifier}.bias"
"#
        )
    };
    let path = dir.path().join("card.toml");
    // The base classifier: refused, naming the tensors to use instead.
    std::fs::write(&path, card("classifier", 2)).unwrap();
    let e = model_error(load_card(&path));
    assert!(
        e.contains("'base_model.model.classifier.weight' (replaces classifier.weight)"),
        "{e}"
    );
    // A list of weights files needs version 2.
    std::fs::write(&path, card("base_model.model.classifier", 1)).unwrap();
    let e = model_error(load_card(&path));
    assert!(e.contains("version = 2"), "{e}");
    // The saved classifier: PyTorch's logits.
    std::fs::write(&path, card("base_model.model.classifier", 2)).unwrap();
    let (_, got, want) = plaintext("modules_to_save", &load_card(&path).unwrap());
    assert!(max_rel_err(&got, &want) <= 1e-9);
    // The same tensor name in two weights files is an error.
    std::fs::copy(
        dir.path().join("base.safetensors"),
        dir.path().join("copy.safetensors"),
    )
    .unwrap();
    std::fs::write(
        &path,
        card("base_model.model.classifier", 2).replace(
            r#"weights = ["base.safetensors","#,
            r#"weights = ["base.safetensors", "copy.safetensors","#,
        ),
    )
    .unwrap();
    let e = model_error(load_card(&path));
    assert!(
        e.contains("copy.safetensors") && e.contains("unique"),
        "{e}"
    );
}

/// Latency mode (one sample per query, rotations) on the variants that change the base
/// weight: the same agreement as batch mode.
#[test]
fn dora_and_kasa_match_encrypted_in_latency_mode() {
    let params = deep_test_params();
    let opts = PlanOptions {
        mode: Mode::Latency,
        ..Default::default()
    };
    for (i, name) in ["dora", "kasa"].into_iter().enumerate() {
        let (adapter, _) = import(&fixture(name), name, &options(None, false)).unwrap();
        let (x, want, _) = plaintext(name, &adapter);
        let plan = Plan::compile(&adapter, &params, opts).unwrap();
        let seed = 5000 + 10 * i as u64;
        let f = Fixture::new(params.clone(), seed);
        let keys = KeyGenerator::new(&params)
            .gen_evaluation_keys(
                &f.sk,
                &plan.galois_elements(),
                plan.needs_relin(),
                &mut rng(seed + 1),
            )
            .unwrap();
        let ev = Evaluator::with_keys(&params, Arc::new(keys)).unwrap();
        let prepared = plan.prepare().unwrap();
        let dec = Decryptor::new(&params, &f.sk).unwrap();
        let row = x.select(Axis(0), &[0]);
        let q = plan
            .encrypt_query(
                &f.encoder,
                EncryptionKey::Public(&f.pk),
                &[row.view()],
                &mut rng(seed + 2),
            )
            .unwrap();
        let out = prepared.evaluate(&ev, &q).unwrap();
        let got = plan.decrypt_result(&f.encoder, &dec, &out, 1).unwrap();
        let want0 = want.select(Axis(0), &[0]);
        let stats = PrecisionStats::relative_to_largest(
            &got.iter().copied().collect::<Vec<_>>(),
            &want0.iter().copied().collect::<Vec<_>>(),
        );
        println!("{name:<16} latency mode: {:.1} bits", stats.min_bits);
        assert!(
            stats.min_bits >= 16.0,
            "{name}: only {:.1} bits",
            stats.min_bits
        );
        assert_eq!(argmax(got.row(0)), argmax(want0.row(0)), "{name}: argmax");
    }
}
