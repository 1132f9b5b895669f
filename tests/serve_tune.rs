//! Private tuning over HTTP (issue 16): a client tunes the served adapter on its labelled
//! batch through `/v1/tune/...`; the run follows the plaintext twin step by step, resumes
//! after a server restart from its checkpoint, and the service refuses what it must.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
#[path = "common/tuning.rs"]
mod tuning;
use hepeft::ckks::{Decryptor, EncryptionKey};
use hepeft::model::reference;
use hepeft::plan::{Mode, PlanOptions, SanitizeConfig};
use hepeft::serve::client::{remote_status, ClientKeys, QueryClient};
use hepeft::serve::tune::TuneServiceConfig;
use hepeft::serve::{self, ServerConfig};
use hepeft::tune::*;
use ndarray::Array2;
use std::path::Path;
use std::time::Duration;
use tuning::{head, no_noise, plain_step, CLASSES, D};

const SAMPLES: usize = 48;

fn task() -> (Array2<f64>, Vec<usize>) {
    tuning::task(SAMPLES)
}

fn tune_config() -> TuneConfig {
    tuning::config()
}

fn server_config(mode: Mode, dir: Option<&Path>) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        request_timeout: Duration::from_secs(60),
        mode: PlanOptions {
            mode,
            ..Default::default()
        },
        // The small test ring cannot carry 40-bit flooding with useful precision;
        // tests/privacy_flooding.rs checks flooding. Here: the protocol and the trajectory.
        sanitize: SanitizeConfig::without_flooding(),
        tune: Some(TuneServiceConfig {
            config: tune_config(),
            checkpoint_dir: dir.map(Path::to_path_buf),
            max_runs: 2,
            max_steps: 5,
        }),
        ..ServerConfig::default()
    }
}

/// One encrypted step through the service; returns the client's reply.
fn remote_step(
    client: &QueryClient,
    id: &str,
    keys: &ClientKeys,
    tuner: &mut TuneClient,
) -> StepReply {
    let status = client.tune_status(id).unwrap();
    let results = client.tune_step(id, &status).unwrap();
    let remote = client.connect().unwrap();
    let dec = Decryptor::new(remote.params(), &keys.secret).unwrap();
    let logits = tuner
        .decrypt_step(
            client.tune_plan().unwrap(),
            remote.encoder(),
            &dec,
            &results,
            &status.config,
        )
        .unwrap();
    let reply = tuner.reply(status.step, &logits, &status.config).unwrap();
    let after = client.tune_reply(id, &reply).unwrap();
    assert_eq!(after.step, status.step + 1);
    assert!(!after.duplicate);
    reply
}

#[test]
fn tuning_over_http_follows_the_twin_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (x, labels) = task();
    let start = head(3, 0.3);
    let params = insecure_test_params();
    let server = serve::spawn(
        start.clone(),
        params.clone(),
        server_config(Mode::Batch, Some(dir.path())),
    )
    .unwrap();
    let client = QueryClient::new(&server.url()).unwrap();
    let plan = client.tune_plan().unwrap().clone();
    let keys = ClientKeys::generate(&plan, &mut rng(5)).unwrap();
    let id = client.register_keys(&keys.eval).unwrap();
    let remote = client.connect().unwrap();
    let query = plan
        .encrypt_query(
            remote.encoder(),
            EncryptionKey::Public(keys.public.as_ref().unwrap()),
            &[x.view()],
            &mut rng(8),
        )
        .unwrap();
    let status = client.tune_start(&id, &query, SAMPLES).unwrap();
    assert_eq!(status.step, 0);
    assert_eq!(status.config, tune_config());
    assert_eq!(status.parameters, CLASSES * D + CLASSES);

    // The twin: the server's own checkpoint at step 0 (its secret seed), in plaintext.
    let checkpoint = dir.path().join(format!("{id}.tune.json"));
    let mut twin = TuneServer::resume(&start, &checkpoint).unwrap();
    let mut twin_client = TuneClient::new(labels.clone(), no_noise(), &mut rng(2)).unwrap();
    let mut tuner = TuneClient::new(labels.clone(), no_noise(), &mut rng(2)).unwrap();

    let mut worst = 0f64;
    for _ in 0..2 {
        let want = plain_step(&mut twin, &mut twin_client, x.view());
        let got = remote_step(&client, &id, &keys, &mut tuner);
        for (g, w) in got.g.iter().zip(&want.g) {
            worst = worst.max((g - w).abs() / w.abs().max(1.0));
        }
    }
    // A resent reply is answered as a duplicate and not applied twice.
    let last = tuner.reply(1, &[], &tune_config()).unwrap();
    let again = client.tune_reply(&id, &last).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.step, 2);
    // A reply for a step the server is not at is refused.
    let bogus = StepReply {
        step: 7,
        g: vec![0.0; 2],
    };
    let err = client.tune_reply(&id, &bogus).unwrap_err();
    assert_eq!(remote_status(&err), Some(400), "{err}");

    // The server restarts: the client uploads its batch again and the run goes on from
    // the checkpoint, at step 2.
    server.shutdown().unwrap();
    let server = serve::spawn(
        start.clone(),
        params.clone(),
        server_config(Mode::Batch, Some(dir.path())),
    )
    .unwrap();
    let client = QueryClient::new(&server.url()).unwrap();
    assert_eq!(client.register_keys(&keys.eval).unwrap(), id);
    let status = client.tune_start(&id, &query, SAMPLES).unwrap();
    assert_eq!(status.step, 2, "resumed from the checkpoint");
    for _ in 0..3 {
        let want = plain_step(&mut twin, &mut twin_client, x.view());
        let got = remote_step(&client, &id, &keys, &mut tuner);
        for (g, w) in got.g.iter().zip(&want.g) {
            worst = worst.max((g - w).abs() / w.abs().max(1.0));
        }
    }
    // The step budget (5) is spent.
    let status = client.tune_status(&id).unwrap();
    let err = client.tune_step(&id, &status).unwrap_err();
    assert_eq!(remote_status(&err), Some(400), "{err}");

    // The owner's tuned weights (the checkpoint) equal the twin's within CKKS noise.
    let tuned = TuneServer::resume(&start, &checkpoint).unwrap();
    assert_eq!(tuned.step(), 5);
    let (a, b) = (tuned.adapter().unwrap(), twin.adapter().unwrap());
    let (la, _) = reference::evaluate_batch(&a, &[x.view()]).unwrap();
    let (lb, _) = reference::evaluate_batch(&b, &[x.view()]).unwrap();
    let drift = la
        .iter()
        .zip(lb.iter())
        .fold(0f64, |m, (p, q)| m.max((p - q).abs()));
    println!(
        "HTTP tuning vs plaintext twin: worst relative g difference {worst:.2e} ({:.1} bits), logit drift after 5 steps {drift:.2e}",
        -worst.log2()
    );
    assert!(worst < 1e-4, "encrypted g differs from the twin by {worst}");
    assert!(drift < 1e-4, "tuned adapters diverged by {drift}");

    client.tune_stop(&id).unwrap();
    let err = client.tune_status(&id).unwrap_err();
    assert_eq!(remote_status(&err), Some(404), "{err}");
    server.shutdown().unwrap();
}

#[test]
fn tuning_is_refused_where_it_cannot_run() {
    let params = insecure_test_params();
    let start = head(3, 0.3);
    // Tuning needs the batch layout.
    let err = serve::spawn(
        start.clone(),
        params.clone(),
        server_config(Mode::Latency, None),
    )
    .err()
    .expect("a latency server offering tuning is refused");
    assert!(err.to_string().contains("--mode batch"), "{err}");

    // A server without tuning answers 404 on the tuning endpoints.
    let cfg = ServerConfig {
        tune: None,
        ..server_config(Mode::Batch, None)
    };
    let server = serve::spawn(start.clone(), params.clone(), cfg).unwrap();
    let client = QueryClient::new(&server.url()).unwrap();
    let id = "ab".repeat(32);
    let err = client.tune_status(&id).unwrap_err();
    assert_eq!(remote_status(&err), Some(404), "{err}");
    assert!(err.to_string().contains("--tune"), "{err}");
    server.shutdown().unwrap();

    // With tuning on: a run needs registered keys, and its query must be bound to them.
    let server = serve::spawn(start, params, server_config(Mode::Batch, None)).unwrap();
    let client = QueryClient::new(&server.url()).unwrap();
    let plan = client.tune_plan().unwrap().clone();
    let keys = ClientKeys::generate(&plan, &mut rng(5)).unwrap();
    let (x, _) = task();
    let remote = client.connect().unwrap();
    let query = plan
        .encrypt_query(
            remote.encoder(),
            EncryptionKey::Secret(&keys.secret),
            &[x.view()],
            &mut rng(8),
        )
        .unwrap();
    let err = client.tune_start(&id, &query, SAMPLES).unwrap_err();
    assert_eq!(remote_status(&err), Some(404), "{err}");
    let mine = client.register_keys(&keys.eval).unwrap();
    // No run yet: no step, no reply.
    let err = client
        .tune_reply(
            &mine,
            &StepReply {
                step: 0,
                g: vec![0.0; 2],
            },
        )
        .unwrap_err();
    assert_eq!(remote_status(&err), Some(404), "{err}");
    assert_eq!(client.tune_start(&mine, &query, SAMPLES).unwrap().step, 0);
    server.shutdown().unwrap();
}
