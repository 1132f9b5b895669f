//! `hepeft serve` and `hepeft query` as processes on loopback: a client with keys from
//! `keygen` queries a served adapter and gets the plaintext twin's logits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use hepeft::ckks::PrecisionStats;
use hepeft::model::load::{load_features_npy, save_adapter, save_features_npy};
use hepeft::model::{reference, zoo};
use ndarray::ArrayView2;
use rand::SeedableRng;

const PRESET: &str = "CKKS_N13_QP200_128";

fn hepeft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hepeft"))
}

/// Kills the server when the test ends, however it ends.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_and_query_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    let adapter = zoo::lora_head(&mut rng, 64, 4, 5).unwrap();
    let card = dir.path().join("private.toml");
    save_adapter(&adapter, &card, Some("test head")).unwrap();
    let x = zoo::uniform_inputs(&mut rng, &adapter, 3).remove(0);
    let features = dir.path().join("x.npy");
    save_features_npy(&features, x.view()).unwrap();

    // server: publish, then serve on a free loopback port
    let public = dir.path().join("public");
    assert!(hepeft()
        .args(["publish", "--model"])
        .arg(&card)
        .arg("--out")
        .arg(&public)
        .output()
        .unwrap()
        .status
        .success());
    let tokens = dir.path().join("tokens.txt");
    std::fs::write(
        &tokens,
        "# one token per line\nquery-token-0123456789abcdef\n",
    )
    .unwrap();
    let mut server = Child(
        hepeft()
            .args([
                "serve",
                "--no-flooding",
                "--params",
                PRESET,
                "--listen",
                "127.0.0.1:0",
                "--rate-limit",
                "50",
                "--token-file",
            ])
            .arg(&tokens)
            .arg("--model")
            .arg(&card)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = server.0.stderr.take().unwrap();
    let mut url = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            url = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let url = url.expect("the server announces its address");

    // client: keys from the public card, then one query
    let keys = dir.path().join("keys");
    let out = hepeft()
        .args(["keygen", "--params", PRESET, "--model"])
        .arg(public.join("public.toml"))
        .arg("--out")
        .arg(&keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logits = dir.path().join("logits.npy");
    // without the token: refused with the server's 401
    let out = hepeft()
        .args(["query", "--server", &url, "--keys"])
        .arg(&keys)
        .arg("--input")
        .arg(&features)
        .arg("--out")
        .arg(&logits)
        .env_remove("HEPEFT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hepeft()
        .args(["query", "--server", &url, "--top-k", "2", "--token-file"])
        .arg(&tokens)
        .arg("--keys")
        .arg(&keys)
        .arg("--input")
        .arg(&features)
        .arg("--out")
        .arg(&logits)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sample 2:"));

    let got = load_features_npy(&logits).unwrap();
    let (want, _) = reference::evaluate_batch(&adapter, &[x.view()] as &[ArrayView2<f64>]).unwrap();
    let stats = PrecisionStats::relative_to_largest(
        &got.iter().copied().collect::<Vec<_>>(),
        &want.iter().copied().collect::<Vec<_>>(),
    );
    assert!(stats.min_bits >= 16.0, "{stats}");

    // a server that is not there is a clear failure, not a hang
    let out = hepeft()
        .args(["query", "--server", "http://127.0.0.1:9", "--keys"])
        .arg(&keys)
        .arg("--input")
        .arg(&features)
        .arg("--out")
        .arg(&logits)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn serve_refuses_a_public_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(12);
    let adapter = zoo::lora_head(&mut rng, 16, 2, 3).unwrap();
    let card = dir.path().join("private.toml");
    save_adapter(&adapter, &card, None).unwrap();
    let out = hepeft()
        .args([
            "serve",
            "--params",
            PRESET,
            "--listen",
            "0.0.0.0:0",
            "--model",
        ])
        .arg(&card)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without access tokens"), "{err}");
    // a short token is refused, and the message does not echo it
    let tokens = dir.path().join("tokens.txt");
    std::fs::write(&tokens, "tooshort\n").unwrap();
    let out = hepeft()
        .args([
            "serve",
            "--params",
            PRESET,
            "--listen",
            "127.0.0.1:0",
            "--token-file",
        ])
        .arg(&tokens)
        .arg("--model")
        .arg(&card)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at least 22") && !err.contains("tooshort"),
        "{err}"
    );
}

#[test]
fn tune_client_against_serve_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/real/digits");
    let mut server = Child(
        hepeft()
            .args([
                "serve",
                "--no-flooding",
                "--mode",
                "batch",
                "--params",
                PRESET,
                "--listen",
                "127.0.0.1:0",
                "--tune",
                "--tune-trainable",
                "bias",
                "--tune-directions",
                "2",
                "--tune-dir",
            ])
            .arg(d.join("owner"))
            .arg("--model")
            .arg(root.join("probe/card.toml"))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = server.0.stderr.take().unwrap();
    let url = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("listening on ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next().map(str::to_string))
        })
        .expect("the server announces its address");
    let tune = |steps: &str| {
        let out = hepeft()
            .args([
                "--json", "tune", "--server", &url, "--steps", steps, "--keys",
            ])
            .arg(d.join("keys"))
            .arg("--state")
            .arg(d.join("state"))
            .arg("--features")
            .arg(root.join("features/pixels.npy"))
            .arg("--labels")
            .arg(root.join("features/labels.npy"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = tune("2");
    assert_eq!(first["status"]["step"], 2);
    assert_eq!(first["steps"].as_array().unwrap().len(), 2);
    // the replies are k = 2 scalars: 18 + 16 bytes up per step
    assert_eq!(first["steps"][0]["bytes_up"], 34);
    // a second run with the same keys and state continues the same run
    let second = tune("3");
    assert_eq!(second["status"]["step"], 3);
    assert_eq!(second["steps"].as_array().unwrap().len(), 1);
    // the owner holds the tuned weights in its checkpoint directory
    let owner: Vec<_> = std::fs::read_dir(d.join("owner")).unwrap().collect();
    assert_eq!(owner.len(), 1);
}
