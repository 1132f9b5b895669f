//! Private tuning (issue 16) on a tiny adapter: the loss goes down, the encrypted run follows
//! the plaintext twin step by step, a run resumed from checkpoints equals an uninterrupted
//! one, and the client's replies are scalars only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
#[path = "common/tuning.rs"]
mod tuning;
use hepeft::ckks::*;
use hepeft::model::{reference, AdapterBuilder, Op};
use hepeft::plan::{Plan, SanitizeConfig};
use hepeft::tune::*;
use ndarray::{Array2, ArrayView2};
use std::sync::Arc;
use tuning::{config, head, no_noise, plain_step, CLASSES, D};

const SAMPLES: usize = 64;

fn task() -> (Array2<f64>, Vec<usize>) {
    tuning::task(SAMPLES)
}

fn loss(server: &TuneServer, x: ArrayView2<f64>, labels: &[usize]) -> (f64, f64) {
    let (logits, _) = reference::evaluate_batch(&server.adapter().unwrap(), &[x]).unwrap();
    loss_and_accuracy(logits.view(), labels).unwrap()
}

#[test]
fn encrypted_run_follows_the_plaintext_twin_and_the_loss_goes_down() {
    let (x, labels) = task();
    let start = head(3, 0.3);
    let mut plain_server = TuneServer::new(&start, config(), &mut rng(1)).unwrap();
    let mut plain_client = TuneClient::new(labels.clone(), no_noise(), &mut rng(2)).unwrap();
    let mut enc_server = TuneServer::new(&start, config(), &mut rng(1)).unwrap();
    let mut enc_client = TuneClient::new(labels.clone(), no_noise(), &mut rng(2)).unwrap();

    // client: keys from the public structure, one encrypted batch for the whole run
    let params = insecure_test_params();
    let f = Fixture::new(params.clone(), 5);
    let plan = Plan::compile(&start, &params, batch_options()).unwrap();
    let keys = KeyGenerator::new(&params)
        .gen_evaluation_keys(
            &f.sk,
            &plan.galois_elements(),
            plan.needs_relin(),
            &mut rng(6),
        )
        .unwrap();
    let ev = Evaluator::with_keys(&params, Arc::new(keys)).unwrap();
    let query = plan
        .encrypt_query(
            &f.encoder,
            EncryptionKey::Public(&f.pk),
            &[x.view()],
            &mut rng(8),
        )
        .unwrap();
    let dec = Decryptor::new(&params, &f.sk).unwrap();

    let (l0, a0) = loss(&plain_server, x.view(), &labels);
    let mut worst_g = 0f64;
    for step in 0..12 {
        let want = plain_step(&mut plain_server, &mut plain_client, x.view());
        let results = enc_server
            .evaluate_step(
                &params,
                &ev,
                &f.pk,
                &query,
                &SanitizeConfig::without_flooding(),
                &mut rng(100 + step),
            )
            .unwrap();
        // what the server sends is parsed back from its wire form
        let results =
            StepResults::from_bytes(&params, &results.to_bytes(&params).unwrap()).unwrap();
        let logits = enc_client
            .decrypt_step(&plan, &f.encoder, &dec, &results, enc_server.config())
            .unwrap();
        let got = enc_client
            .reply(enc_server.step(), &logits, enc_server.config())
            .unwrap();
        let wire = got.to_bytes();
        assert_eq!(wire.len(), 18 + 8 * config().directions, "k scalars only");
        let got = StepReply::from_bytes(&wire).unwrap();
        assert_eq!(enc_server.apply(&got).unwrap(), Applied::Updated);
        for (g, w) in got.g.iter().zip(&want.g) {
            worst_g = worst_g.max((g - w).abs() / w.abs().max(1.0));
        }
    }
    let (l1, a1) = loss(&plain_server, x.view(), &labels);
    let (le, ae) = loss(&enc_server, x.view(), &labels);
    println!(
        "plaintext: loss {l0:.4} -> {l1:.4}, accuracy {a0:.3} -> {a1:.3}; encrypted: loss {le:.4}, accuracy {ae:.3}; worst relative g difference {worst_g:.2e} ({:.1} bits)",
        -worst_g.log2()
    );
    assert!(l1 < 0.9 * l0, "loss {l0} -> {l1}");
    assert!(
        worst_g < 1e-4,
        "encrypted g differs from the twin by {worst_g}"
    );
    assert!(
        (le - l1).abs() < 1e-4 * l1,
        "trajectories diverged: {le} vs {l1}"
    );
}

#[test]
fn resumed_run_equals_an_uninterrupted_one() {
    let (x, labels) = task();
    let start = head(3, 0.3);
    let dir = tempfile::tempdir().unwrap();
    let (sp, cp) = (
        dir.path().join("server.json"),
        dir.path().join("client.json"),
    );

    let mut server = TuneServer::new(&start, config(), &mut rng(1)).unwrap();
    let mut client = TuneClient::new(labels.clone(), no_noise(), &mut rng(2)).unwrap();
    let mut whole = TuneServer::new(&start, config(), &mut rng(1)).unwrap();
    let mut whole_client = TuneClient::new(labels.clone(), no_noise(), &mut rng(2)).unwrap();
    for _ in 0..6 {
        plain_step(&mut whole, &mut whole_client, x.view());
    }

    for _ in 0..3 {
        plain_step(&mut server, &mut client, x.view());
    }
    // the client computes step 3's reply and saves, then the server crashes before applying
    let logits: Vec<Array2<f64>> = server
        .perturbed_adapters()
        .unwrap()
        .iter()
        .map(|a| reference::evaluate_batch(a, &[x.view()]).unwrap().0)
        .collect();
    let reply3 = client.reply(3, &logits, server.config()).unwrap();
    client.save(&cp).unwrap();
    server.save(&sp).unwrap();
    drop((server, client));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sp).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "the server checkpoint holds the weights and the seed"
        );
    }

    let mut server = TuneServer::resume(&start, &sp).unwrap();
    let mut client = TuneClient::resume(labels.clone(), &cp, &mut rng(3)).unwrap();
    assert_eq!(server.step(), 3);
    // the client resends the saved reply unchanged; a second copy is a duplicate
    let again = client.reply(3, &logits, server.config()).unwrap();
    assert_eq!(again, reply3);
    assert_eq!(server.apply(&again).unwrap(), Applied::Updated);
    assert_eq!(server.apply(&again).unwrap(), Applied::Duplicate);
    // a reply to a step that is neither current nor last is refused
    let stale = StepReply {
        step: 1,
        g: vec![0.0; 2],
    };
    assert!(server.apply(&stale).is_err());
    for _ in 4..6 {
        plain_step(&mut server, &mut client, x.view());
    }
    let (a, b) = (server.adapter().unwrap(), whole.adapter().unwrap());
    assert_eq!(
        a, b,
        "resumed and uninterrupted runs end at the same weights"
    );

    // a checkpoint of another structure is refused
    let other = head(3, 0.3);
    let mut bld = AdapterBuilder::new();
    let xin = bld.input("x", D + 1).unwrap();
    bld.node(
        "head",
        Op::Linear {
            weight: Array2::zeros((CLASSES, D + 1)),
            bias: None,
        },
        &[xin],
    )
    .unwrap();
    let wrong = bld.build().unwrap();
    assert!(TuneServer::resume(&wrong, &sp).is_err());
    assert!(
        TuneServer::resume(&other, &cp).is_err(),
        "a client file is not a server checkpoint"
    );
}

#[test]
fn replies_are_scalars_and_hostile_bytes_are_refused() {
    let r = StepReply {
        step: 42,
        g: vec![1.5, -2.0, 0.25],
    };
    let b = r.to_bytes();
    assert_eq!(b.len(), 18 + 24);
    assert_eq!(StepReply::from_bytes(&b).unwrap(), r);
    assert!(StepReply::from_bytes(&b[..b.len() - 1]).is_err());
    assert!(StepReply::from_bytes(b"junk").is_err());
    let mut nan = b.clone();
    nan[18..26].copy_from_slice(&f64::NAN.to_le_bytes());
    assert!(StepReply::from_bytes(&nan).is_err());
    let mut huge = b.clone();
    huge[14..18].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(StepReply::from_bytes(&huge).is_err());

    // the trainable selection and its errors
    let a = head(1, 1.0);
    assert_eq!(
        ThetaLayout::new(&a, Trainable::All).unwrap().dim(),
        CLASSES * D + CLASSES
    );
    assert_eq!(
        ThetaLayout::new(&a, Trainable::BiasesAndScales)
            .unwrap()
            .dim(),
        CLASSES
    );
    let err = ThetaLayout::new(&a, Trainable::LoraFactors).unwrap_err();
    assert!(err.to_string().contains("no `lora` parameters"), "{err}");
    assert!(Trainable::parse("everything").is_err());
}

#[test]
fn differential_privacy_is_accounted() {
    let (x, labels) = task();
    let p = ReplyPrivacy {
        clip: Some(1.0),
        noise_multiplier: Some(4.0),
        delta: 1e-5,
    };
    let mut server = TuneServer::new(&head(3, 0.3), config(), &mut rng(1)).unwrap();
    let mut client = TuneClient::new(labels, p, &mut rng(2)).unwrap();
    for _ in 0..5 {
        plain_step(&mut server, &mut client, x.view());
    }
    // rho = 5 steps * k=2 / (2 * 16)
    let rho = client.ledger().rho.unwrap();
    assert!((rho - 5.0 * 2.0 / 32.0).abs() < 1e-12);
    let eps = client.ledger().epsilon(1e-5).unwrap();
    println!("5 noisy steps: rho = {rho:.4}, epsilon = {eps:.3} at delta = 1e-5");
    assert!(eps > 0.0 && eps < 10.0);
    // noise without clipping is refused
    let bad = ReplyPrivacy {
        clip: None,
        noise_multiplier: Some(1.0),
        delta: 1e-5,
    };
    assert!(TuneClient::new(vec![0], bad, &mut rng(1)).is_err());
}

/// `hepeft tune` through the binary: runs, writes a loadable card, resumes from its state
/// directory (a second call with more steps runs only the remaining ones) and refuses the
/// default flooding with the reason when the parameters cannot carry it.
#[test]
fn cli_tunes_and_resumes() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/real/digits");
    let path = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
    let run = |steps: &str, extra: &[&str]| {
        let mut args: Vec<String> = [
            "--json",
            "tune",
            "--model",
            &path(root.join("probe/card.toml")),
            "--features",
            &path(root.join("features/pixels.npy")),
            "--labels",
            &path(root.join("features/labels.npy")),
            "--trainable",
            "bias",
            "--directions",
            "2",
            "--validation-split",
            "0.5",
            "--steps",
            steps,
            "--state",
            &path(d.join("state")),
            "--out",
            &path(d.join("tuned.toml")),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        Command::new(env!("CARGO_BIN_EXE_hepeft"))
            .args(&args)
            .output()
            .unwrap()
    };
    let refused = run("2", &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("noise flooding"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let first = run("2", &["--no-flooding"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["steps"].as_array().unwrap().len(), 2);
    assert_eq!(report["steps"][0]["bytes_up"], 18 + 8 * 2);
    let second = run("3", &["--no-flooding"]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "the resumed run only does the missing step");
    assert_eq!(steps[0]["step"], 2);
    hepeft::model::load::load_card(d.join("tuned.toml")).unwrap();
}
