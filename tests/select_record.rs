//! Selection decisions travel with the parameters (issue 14, item 4 and friction items a, d,
//! e, f): the `[selected_for]` record `params select` writes, and how `keygen`, `evaluate`
//! and `serve` follow it; refusals that name a setting that works (checked by running it);
//! exact key sizes in the select report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use hepeft::ckks::CkksParams;
use hepeft::model::load::{save_adapter, save_features_npy};
use hepeft::model::zoo;
use hepeft::plan::{Mode, Plan, PlanOptions};
use hepeft::select::record::{
    resolve_mode, resolve_sanitize, FloodingRequest, RecordedFlooding, SelectContext,
};
use hepeft::select::{select_with_advice, ParamsFile, SelectRequest, SelectionRecord};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn hepeft(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hepeft"));
    for a in args {
        c.arg(a);
    }
    c.output().expect("running hepeft")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[track_caller]
fn ok(o: Output) -> (String, String) {
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "hepeft failed ({:?})\nstdout:\n{out}\nstderr:\n{err}",
        o.status.code()
    );
    (out, err)
}

#[track_caller]
fn fails(o: Output, needle: &str) -> String {
    let (out, err) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    err
}

struct Fixture {
    dir: PathBuf,
    card: PathBuf,
    features: PathBuf,
}

/// A small LoRA head (64 -> rank 4 -> 5 classes), its card and three samples.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("select_record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let adapter = zoo::lora_head(&mut ChaCha20Rng::seed_from_u64(11), 64, 4, 5).unwrap();
        let card = dir.join("adapter.toml");
        save_adapter(&adapter, &card, Some("test head")).unwrap();
        let x = zoo::uniform_inputs(&mut ChaCha20Rng::seed_from_u64(12), &adapter, 3).remove(0);
        let features = dir.join("x.npy");
        save_features_npy(&features, x.view()).unwrap();
        Fixture {
            dir,
            card,
            features,
        }
    })
}

/// `params select` with `extra` flags into `name`; returns the JSON report.
fn select_into(name: &str, extra: &[&str]) -> (PathBuf, serde_json::Value) {
    let f = fixture();
    let out = f.dir.join(name);
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"--json", &"params", &"select", &"--model", &f.card];
    for e in extra {
        args.push(e);
    }
    args.push(&"--out");
    args.push(&out);
    let (stdout, _) = ok(hepeft(&args));
    (out, serde_json::from_str(&stdout).unwrap())
}

fn keygen(params: &Path, dir: &str, extra: &[&str]) -> Output {
    let f = fixture();
    let out = f.dir.join(dir);
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"keygen",
        &"--params",
        &params,
        &"--model",
        &f.card,
        &"--out",
        &out,
        &"--force",
    ];
    for e in extra {
        args.push(e);
    }
    hepeft(&args)
}

/// keygen + encrypt into `dir`; returns the key directory and the query.
fn keys_and_query(params: &Path, dir: &str) -> (PathBuf, PathBuf) {
    let f = fixture();
    ok(keygen(params, dir, &[]));
    let keys = f.dir.join(dir);
    let query = keys.join("query.ct");
    ok(hepeft(&[
        &"encrypt",
        &"--keys",
        &keys,
        &"--model",
        &f.card,
        &"--input",
        &f.features,
        &"--out",
        &query,
    ]));
    (keys, query)
}

fn evaluate(keys: &Path, query: &Path, params: &Path, out: &str, extra: &[&str]) -> Output {
    let f = fixture();
    let out = f.dir.join(out);
    let ek = keys.join("eval.keys");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"--json", &"evaluate"];
    for e in extra {
        args.push(e);
    }
    let mut tail: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"--model",
        &f.card,
        &"--eval-keys",
        &ek,
        &"--params",
        &params,
        &"--input",
        &query,
        &"--out",
        &out,
    ];
    args.append(&mut tail);
    hepeft(&args)
}

/// Every backticked `hepeft params select ...` command in `msg`, run on the fixture's card:
/// each must succeed (no advice in a circle). Returns how many were run.
fn run_suggested_selects(msg: &str) -> usize {
    let f = fixture();
    let mut n = 0;
    for (i, part) in msg.split('`').enumerate() {
        if i % 2 == 0 || !part.starts_with("hepeft params select") {
            continue;
        }
        let card = f.card.display().to_string();
        let cmd = part
            .replace("<public card>", &card)
            .replace("<card>", &card);
        let mut words: Vec<String> = cmd.split_whitespace().skip(1).map(String::from).collect();
        if !words.iter().any(|w| w == "--model") || words.iter().any(|w| w == "--out") {
            panic!("unexpected suggestion {part:?}");
        }
        words.push("--out".into());
        words.push(
            f.dir
                .join(format!("suggested-{n}.toml"))
                .display()
                .to_string(),
        );
        let args: Vec<&dyn AsRef<std::ffi::OsStr>> = words
            .iter()
            .map(|w| w as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        ok(hepeft(&args));
        n += 1;
    }
    n
}

#[test]
fn record_round_trips_and_stays_out_of_the_digest() {
    let (path, report) = select_into("rt.toml", &["--flooding-bits", "20"]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[selected_for]"), "{text}");
    let file = ParamsFile::from_toml(&text).unwrap();
    let r = file.record.clone().unwrap();
    assert_eq!(r.mode, Mode::Latency);
    assert_eq!(r.precision_bits, Some(16));
    assert_eq!(r.security_bits, Some(128));
    assert_eq!(
        r.flooding,
        RecordedFlooding::On {
            bits: 20,
            queries: 1
        }
    );
    assert_eq!(report["flooding_bits"], 20);
    // every reader of parameter files still reads it, with the same digest as the bare set
    let bare = CkksParams::from_toml(&text).unwrap();
    assert_eq!(bare.digest(), file.params.digest());
    let bare_text = file.params.to_toml().unwrap();
    assert_eq!(
        CkksParams::from_toml(&bare_text).unwrap().digest(),
        bare.digest()
    );
    // written back identically
    assert_eq!(
        ParamsFile::from_toml(&file.to_toml().unwrap())
            .unwrap()
            .record,
        Some(r)
    );
    // `params show` prints it
    let (out, _) = ok(hepeft(&[&"params", &"show", &path]));
    assert!(
        out.contains("selected for: latency layout, 16 bits after 20-bit noise flooding"),
        "{out}"
    );
    // malformed records are refused with the reason
    let bad = text.replace("flooding_queries = 1", "");
    let err = ParamsFile::from_toml(&bad).unwrap_err().to_string();
    assert!(err.contains("flooding_queries"), "{err}");
    let bad = text.replace("record = 1", "record = 9");
    let err = ParamsFile::from_toml(&bad).unwrap_err().to_string();
    assert!(err.contains("record version 9"), "{err}");
}

/// (e): keygen on parameters selected for the batch layout makes batch keys, and refuses
/// latency keys naming the flag.
#[test]
fn keygen_follows_the_recorded_layout() {
    let (path, _) = select_into("batch.toml", &["--mode", "batch", "--flooding-bits", "10"]);
    let (_, err) = ok(keygen(&path, "kbatch", &[]));
    assert!(!err.contains("warning"), "{err}");
    let plan: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().dir.join("kbatch/plan.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(plan["mode"], "batch");
    // the key directory's params.toml (the server's copy) carries the record
    let kp = std::fs::read_to_string(fixture().dir.join("kbatch/params.toml")).unwrap();
    assert_eq!(
        ParamsFile::from_toml(&kp).unwrap().record.unwrap().mode,
        Mode::Batch
    );
    let err = fails(
        keygen(&path, "klat", &["--mode", "latency"]),
        "selected for the batch layout",
    );
    assert!(err.contains("pass --mode batch"), "{err}");
    run_suggested_selects(&err);
    // serve refuses the same mismatch before listening
    let err = fails(
        hepeft(&[
            &"serve",
            &"--model",
            &fixture().card,
            &"--params",
            &path,
            &"--mode",
            &"latency",
            &"--listen",
            &"127.0.0.1:0",
        ]),
        "pass --mode batch",
    );
    run_suggested_selects(&err);
}

/// (d) and issue 14 item 5: the server's own flooding level (its flag, else the default 40
/// bits) is a minimum. On a set selected for 20-bit flooding, evaluate without flags refuses
/// (40 bits would leave fewer bits than the set was selected for), naming --flooding-bits 20
/// and only `params select` calls that succeed; with --flooding-bits 20 it floods at 20; a
/// lower flag never floods below the recorded level.
#[test]
fn evaluate_uses_the_recorded_flooding_level() {
    let (path, report) = select_into("f20.toml", &["--flooding-bits", "20"]);
    let (keys, query) = keys_and_query(&path, "k20");
    let server_params = keys.join("params.toml");
    let err = fails(
        evaluate(&keys, &query, &server_params, "r0.ct", &[]),
        "below this server's minimum of 40 bits",
    );
    assert!(err.contains("--flooding-bits 20"), "{err}");
    assert!(!fixture().dir.join("r0.ct").exists());

    let o = evaluate(
        &keys,
        &query,
        &server_params,
        "r20.ct",
        &["--flooding-bits", "20"],
    );
    let (out, err) = ok(o);
    assert!(err.contains("weaker than the default"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fl = &v["sanitize"]["flooding"];
    assert_eq!(fl["statistical_security"], 20, "{out}");
    let after = fl["precision_bits_after"].as_f64().unwrap();
    let predicted = report["flooded_precision_bits"].as_f64().unwrap();
    assert!(
        after >= 16.0 - 0.5,
        "{after} bits after 20-bit flooding (select predicted {predicted})"
    );

    let err = fails(
        evaluate(
            &keys,
            &query,
            &server_params,
            "r40.ct",
            &["--flooding-bits", "40"],
        ),
        "below this server's minimum of 40 bits",
    );
    assert!(err.contains("--flooding-bits 20"), "{err}");
    assert!(!fixture().dir.join("r40.ct").exists());
    let ran = run_suggested_selects(&err);
    eprintln!("{err}\n({ran} suggested select command(s) ran)");
    // a flag below the recorded level: the record raises it, never the other way
    let (out, _) = ok(evaluate(
        &keys,
        &query,
        &server_params,
        "r10.ct",
        &["--flooding-bits", "10"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["sanitize"]["flooding"]["statistical_security"], 20,
        "{out}"
    );
}

/// (a): evaluate's refusal on a preset (no record, default 40-bit flooding) suggests only
/// settings that work: no `params select --flooding-bits 40` unless that selection succeeds.
#[test]
fn evaluate_refusal_advice_is_not_circular() {
    let f = fixture();
    let (keys, query) = keys_and_query(Path::new("CKKS_N13_QP200_128"), "kpreset");
    let o = evaluate(
        &keys,
        &query,
        Path::new("CKKS_N13_QP200_128"),
        "rpreset.ct",
        &[],
    );
    if o.status.success() {
        // the default schedule carries 40-bit flooding on this preset: nothing to advise
        return;
    }
    let err = fails(o, "noise flooding at 40 bits");
    let ran = run_suggested_selects(&err);
    eprintln!("{err}\n({ran} suggested select command(s) ran)");
    // the largest level it names works
    if let Some(rest) = err.split("pass --flooding-bits ").nth(1) {
        let bits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        ok(evaluate(
            &keys,
            &query,
            Path::new("CKKS_N13_QP200_128"),
            "rpreset2.ct",
            &["--flooding-bits", &bits],
        ));
    }
    let _ = f;
}

/// (a): a refused selection lists the changes of one setting that work, and each works.
#[test]
fn select_refusal_names_settings_that_work() {
    let f = fixture();
    let o = hepeft(&[
        &"params",
        &"select",
        &"--model",
        &f.card,
        &"--precision",
        &"40",
        &"--out",
        &f.dir.join("no.toml"),
    ]);
    let err = fails(o, "what works instead:");
    let tail = err.split("what works instead:").nth(1).unwrap();
    let mut tried = 0;
    for way in tail.split("; or ") {
        let flags: Vec<&str> = way
            .split(" (")
            .next()
            .unwrap()
            .split_whitespace()
            .take_while(|w| !w.starts_with("without"))
            .collect();
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"params", &"select", &"--model", &f.card];
        let has_precision = flags.contains(&"--precision");
        if !has_precision {
            args.push(&"--precision");
            args.push(&"40");
        }
        for fl in &flags {
            args.push(fl);
        }
        let out = f.dir.join(format!("way-{tried}.toml"));
        args.push(&"--out");
        args.push(&out);
        ok(hepeft(&args));
        tried += 1;
    }
    assert!(tried >= 1, "{err}");
    // the library call gives the same advice
    let adapter = zoo::lora_head(&mut ChaCha20Rng::seed_from_u64(11), 64, 4, 5).unwrap();
    let e = select_with_advice(
        &adapter,
        &SelectRequest {
            precision_bits: 40,
            flooding: Some(Default::default()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--precision"), "{e}");
}

/// Old parameter files (no record) load with today's defaults and a warning; a record of
/// "no flooding" never switches flooding off without --no-flooding.
#[test]
fn old_files_and_no_flooding_records() {
    let (path, _) = select_into("nf.toml", &["--no-flooding"]);
    let text = std::fs::read_to_string(&path).unwrap();
    let file = ParamsFile::from_toml(&text).unwrap();
    assert_eq!(
        file.record.as_ref().unwrap().flooding,
        RecordedFlooding::Off
    );
    // strip the record: an old file
    let old = fixture().dir.join("old.toml");
    std::fs::write(&old, text.split("[selected_for]").next().unwrap()).unwrap();
    let (_, err) = ok(keygen(&old, "kold", &[]));
    assert!(err.contains("has no [selected_for] record"), "{err}");
    assert!(err.contains("assuming the latency layout"), "{err}");

    // library: a no-flooding record and no flags floods at the default level or refuses
    let adapter = zoo::lora_head(&mut ChaCha20Rng::seed_from_u64(11), 64, 4, 5).unwrap();
    let plan = Plan::compile(&adapter, &file.params, PlanOptions::default()).unwrap();
    let ctx = SelectContext {
        adapter: &adapter,
        command: "hepeft params select --model <card>",
    };
    match resolve_sanitize(
        file.record.as_ref(),
        &FloodingRequest::default(),
        &plan,
        Some(&ctx),
    ) {
        Ok(r) => assert!(r.config.flooding.is_some()),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("WITHOUT noise flooding"), "{e}");
            assert!(e.contains("--no-flooding"), "{e}");
        }
    }
    let off = resolve_sanitize(
        file.record.as_ref(),
        &FloodingRequest {
            off: true,
            ..Default::default()
        },
        &plan,
        None,
    )
    .unwrap();
    assert!(off.config.flooding.is_none());
    // layouts: recorded one by default, none recorded -> latency, mismatch refused
    let rec = SelectionRecord::keygen(Mode::Batch);
    assert_eq!(resolve_mode(Some(&rec), None, None).unwrap(), Mode::Batch);
    assert_eq!(resolve_mode(None, None, None).unwrap(), Mode::Latency);
    let e = resolve_mode(Some(&rec), Some(Mode::Latency), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pass --mode batch"), "{e}");
}

/// (f): the select report's key sizes are the sizes of the files keygen writes, to the byte.
#[test]
fn select_report_gives_exact_key_sizes() {
    let (path, report) = select_into("sizes.toml", &["--flooding-bits", "20"]);
    ok(keygen(&path, "ksizes", &[]));
    let dir = fixture().dir.join("ksizes");
    let size = |n: &str| std::fs::metadata(dir.join(n)).unwrap().len();
    assert_eq!(report["evaluation_key_bytes"], size("eval.keys"));
    assert_eq!(report["public_key_bytes"], size("public.key"));
    assert_eq!(report["secret_key_bytes"], size("secret.key"));
    assert!(report["public_key_bytes"].as_u64().unwrap() > 0);
    // batch layout too (other Galois keys)
    let (path, report) = select_into(
        "sizes-b.toml",
        &["--mode", "batch", "--flooding-bits", "10"],
    );
    ok(keygen(&path, "ksizes-b", &[]));
    let dir = fixture().dir.join("ksizes-b");
    let size = |n: &str| std::fs::metadata(dir.join(n)).unwrap().len();
    assert_eq!(report["evaluation_key_bytes"], size("eval.keys"));
    // and the text report never rounds a key file down to 0.0 MiB
    let f = fixture();
    let (out, _) = ok(hepeft(&[
        &"params",
        &"select",
        &"--flooding-bits",
        &"20",
        &"--model",
        &f.card,
        &"--out",
        &f.dir.join("sizes-t.toml"),
    ]));
    assert!(out.contains("public.key"), "{out}");
    assert!(!out.contains(" 0.0 MiB"), "{out}");
}
