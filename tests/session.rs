//! The session layer end to end without a transport: `Client` and `Server` exchanging
//! bytes (keys, query, result), compared with the plaintext twin; a key directory written
//! and reopened as encrypt-only and decrypt-only clients; and the refusals of mixed-up
//! keys, queries and results.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use hepeft::model::{reference, zoo, Adapter};
use hepeft::plan::{Mode, Plan, PlanOptions, SanitizeConfig};
use hepeft::session::{
    public_plan, Client, KeyDir, Query, QueryResult, Role, Server, EVAL_KEYS, PLAN_JSON,
};
use hepeft::Error;
use ndarray::{Array2, ArrayView2};
use std::sync::Arc;

/// LoRA head d = 32, r = 4, 6 classes.
fn lora() -> Adapter {
    zoo::lora_head(&mut common::rng(1), 32, 4, 6).unwrap()
}

fn server(adapter: &Adapter, mode: Mode) -> Server {
    let opts = PlanOptions {
        mode,
        ..Default::default()
    };
    let plan = Plan::compile(adapter, &common::insecure_test_params(), opts).unwrap();
    Server::new(plan, SanitizeConfig::without_flooding()).unwrap()
}

fn client(adapter: &Adapter, mode: Mode, seed: u64) -> Client {
    let plan = public_plan(adapter, &common::insecure_test_params(), mode).unwrap();
    Client::keygen(plan, &mut common::rng(seed)).unwrap()
}

/// Features and the twin's logits.
fn inputs(adapter: &Adapter, samples: usize) -> (Vec<Array2<f64>>, Array2<f64>) {
    let x = zoo::uniform_inputs(&mut common::rng(5), adapter, samples);
    let views: Vec<ArrayView2<f64>> = x.iter().map(|a| a.view()).collect();
    let (want, report) = reference::evaluate_batch(adapter, &views).unwrap();
    assert!(report.is_clean());
    (x, want)
}

/// Bits of precision of `got` relative to the largest logit of `want`.
fn precision_bits(got: &Array2<f64>, want: &Array2<f64>) -> f64 {
    assert_eq!(got.dim(), want.dim());
    let max_logit = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let max_err = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    -(max_err / max_logit).log2()
}

/// Keys, query and result cross as bytes; the decrypted logits match the twin.
fn roundtrip(mode: Mode, samples: usize) -> (usize, f64) {
    let adapter = lora();
    let server = server(&adapter, mode);
    let client = client(&adapter, mode, 11);
    let keys = Arc::new(
        server
            .read_keys(&client.eval_keys_bytes().unwrap())
            .unwrap(),
    );
    let (x, want) = inputs(&adapter, samples);
    let views: Vec<ArrayView2<f64>> = x.iter().map(|a| a.view()).collect();
    let query = client
        .encrypt_samples(&views, &mut common::rng(12))
        .unwrap();
    let wire = query.to_bytes(client.params()).unwrap();
    let query = Query::from_bytes(server.params(), &wire, Role::Query).unwrap();
    let stages = std::sync::atomic::AtomicUsize::new(0);
    let (result, report) = server
        .evaluate_queries(keys, &query, &mut common::rng(13), &|_, _, _| {
            stages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!(report.unwrap().output_level, 0);
    assert!(stages.into_inner() >= query.queries().len());
    let wire = result.to_bytes(server.params()).unwrap();
    let result = QueryResult::from_bytes(client.params(), &wire, Role::Result).unwrap();
    let got = client.decrypt(&result).unwrap();
    (query.queries().len(), precision_bits(&got, &want))
}

#[test]
fn latency_roundtrip_through_bytes_matches_the_twin() {
    let (queries, bits) = roundtrip(Mode::Latency, 3);
    assert_eq!(queries, 3, "one query per sample");
    assert!(bits > 12.0, "{bits:.1} bits");
}

#[test]
fn batch_roundtrip_through_bytes_matches_the_twin() {
    let (queries, bits) = roundtrip(Mode::Batch, 5);
    assert_eq!(queries, 1, "five samples fit one batch query");
    assert!(bits > 12.0, "{bits:.1} bits");
}

#[test]
fn key_directory_serves_encrypt_only_and_decrypt_only_clients() {
    let adapter = lora();
    let dir = std::env::temp_dir().join(format!("hepeft-session-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let full = client(&adapter, Mode::Latency, 21);
    let written = full.save(&dir, false).unwrap();
    assert_eq!(written.info.key_id, full.key_set().hex());
    // A second keygen into the same directory is refused without `force`.
    let again = full.save(&dir, false).unwrap_err();
    assert!(matches!(again, Error::Refused { .. }), "{again}");

    let keydir = KeyDir::open(&dir).unwrap();
    assert_eq!(keydir.info, written.info);
    let plan = || public_plan(&adapter, &keydir.params, keydir.mode).unwrap();
    let card = std::path::Path::new("lora card");
    let enc = Client::for_encryption(&keydir, plan(), card).unwrap();
    let dec = Client::for_decryption(&keydir, plan(), card).unwrap();
    assert!(
        enc.eval_keys_bytes().is_err(),
        "no evaluation keys in an encrypt-only client"
    );

    let server = server(&adapter, Mode::Latency);
    let eval = std::fs::read(dir.join(EVAL_KEYS)).unwrap();
    let keys = Arc::new(server.read_keys(&eval).unwrap());
    let (x, want) = inputs(&adapter, 2);
    let views: Vec<ArrayView2<f64>> = x.iter().map(|a| a.view()).collect();
    let query = enc.encrypt_samples(&views, &mut common::rng(22)).unwrap();
    let (result, _) = server
        .evaluate_queries(keys, &query, &mut common::rng(23), &|_, _, _| {})
        .unwrap();
    assert!(matches!(
        enc.decrypt(&result),
        Err(Error::MissingKey { .. })
    ));
    let bits = precision_bits(&dec.decrypt(&result).unwrap(), &want);
    assert!(bits > 12.0, "{bits:.1} bits");

    // An edited plan.json is refused against the plan.
    let pj = dir.join(PLAN_JSON);
    let text = std::fs::read_to_string(&pj).unwrap();
    assert!(text.contains("\"output_dim\": 6"), "{text}");
    std::fs::write(&pj, text.replace("\"output_dim\": 6", "\"output_dim\": 7")).unwrap();
    let edited = KeyDir::open(&dir).unwrap();
    let e = Client::for_encryption(&edited, plan(), card).unwrap_err();
    assert!(e.to_string().contains("output_dim"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mixed_up_keys_queries_and_results_are_refused() {
    let adapter = lora();
    let server = server(&adapter, Mode::Latency);
    let alice = client(&adapter, Mode::Latency, 31);
    let bob = client(&adapter, Mode::Latency, 32);
    let alice_keys = Arc::new(server.read_keys(&alice.eval_keys_bytes().unwrap()).unwrap());
    let (x, _) = inputs(&adapter, 1);
    let views: Vec<ArrayView2<f64>> = x.iter().map(|a| a.view()).collect();

    // Bob's query under Alice's keys.
    let bobs = bob.encrypt_samples(&views, &mut common::rng(33)).unwrap();
    let e = server
        .evaluate_queries(
            alice_keys.clone(),
            &bobs,
            &mut common::rng(34),
            &|_, _, _| {},
        )
        .unwrap_err();
    assert!(e.to_string().contains("another client's keys"), "{e}");

    // Alice's result decrypted by Bob.
    let alices = alice.encrypt_samples(&views, &mut common::rng(35)).unwrap();
    let (result, _) = server
        .evaluate_queries(alice_keys, &alices, &mut common::rng(36), &|_, _, _| {})
        .unwrap();
    let e = bob.decrypt(&result).unwrap_err();
    assert!(e.to_string().contains("key set mismatch"), "{e}");

    // A query read as a result, and a result evaluated again.
    let wire = alices.to_bytes(alice.params()).unwrap();
    let e = QueryResult::from_bytes(alice.params(), &wire, Role::Result).unwrap_err();
    assert!(e.to_string().contains("bound as a query"), "{e}");
    let wire = result.to_bytes(alice.params()).unwrap();
    let e = Query::from_bytes(alice.params(), &wire, Role::Query).unwrap_err();
    assert!(e.to_string().contains("cannot be evaluated again"), "{e}");

    // Keys for another plan (batch layout) do not cover the latency plan.
    let batch = client(&adapter, Mode::Batch, 37);
    let e = server
        .read_keys(&batch.eval_keys_bytes().unwrap())
        .unwrap_err();
    assert!(
        matches!(e, Error::MissingKey { .. } | Error::Mismatch { .. }),
        "{e}"
    );
}
