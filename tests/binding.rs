//! Issue 20: every mix-up of keys, queries and results is refused with its reason, never
//! decrypted into a silent wrong answer; outputs never replace key files; device files,
//! oversized inputs and absurd thread counts are refused. The `hepeft` binary on files,
//! small adapters on the secure N = 2^13 preset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use hepeft::model::load::{save_adapter, save_features_npy, ModelCard};
use hepeft::model::zoo;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const PRESET: &str = "CKKS_N13_QP200_128";

fn hepeft(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hepeft"));
    for a in args {
        c.arg(a);
    }
    c.output().expect("running hepeft")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "hepeft failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    stderr(&o)
}

#[track_caller]
fn refused(o: Output, needle: &str) -> String {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected a refusal (exit 1):\n{err}"
    );
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    err
}

/// One model, two clients (key sets A and B), queries of 3 and 2 samples under A, one of
/// 3 samples under B, and the results of A's queries.
struct Fixture {
    dir: PathBuf,
    card: PathBuf,
    keys_a: PathBuf,
    keys_b: PathBuf,
    query_a3: PathBuf,
    query_a2: PathBuf,
    result_a3: PathBuf,
    result_a2: PathBuf,
}

fn keygen(card: &Path, out: &Path) {
    ok(hepeft(&[
        &"keygen",
        &"--params",
        &PRESET,
        &"--model",
        &card,
        &"--out",
        &out,
    ]));
}

fn encrypt(keys: &Path, card: &Path, x: &Path, out: &Path) -> Output {
    hepeft(&[
        &"encrypt", &"--keys", &keys, &"--model", &card, &"--input", &x, &"--out", &out,
    ])
}

fn evaluate(card: &Path, keys: &Path, query: &Path, out: &Path) -> Output {
    hepeft(&[
        &"evaluate",
        &"--no-flooding",
        &"--model",
        &card,
        &"--eval-keys",
        &keys.join("eval.keys"),
        &"--params",
        &keys.join("params.toml"),
        &"--input",
        &query,
        &"--out",
        &out,
    ])
}

fn decrypt(keys: &Path, card: &Path, result: &Path, out: &Path) -> Output {
    hepeft(&[
        &"decrypt", &"--keys", &keys, &"--model", &card, &"--input", &result, &"--out", &out,
    ])
}

/// Copies `ct` and its sidecar to `to` (and `to.json`).
fn copy_pair(ct: &Path, to: &Path) {
    std::fs::copy(ct, to).unwrap();
    std::fs::copy(json(ct), json(to)).unwrap();
}

fn json(ct: &Path) -> PathBuf {
    PathBuf::from(format!("{}.json", ct.display()))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("binding-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let adapter = zoo::lora_head(&mut ChaCha20Rng::seed_from_u64(3), 32, 2, 4).unwrap();
        let card = dir.join("adapter.toml");
        save_adapter(&adapter, &card, Some("binding test")).unwrap();
        let keys_a = dir.join("keys-a");
        let keys_b = dir.join("keys-b");
        keygen(&card, &keys_a);
        keygen(&card, &keys_b);
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let x3 = dir.join("x3.npy");
        let x2 = dir.join("x2.npy");
        save_features_npy(&x3, zoo::uniform_inputs(&mut rng, &adapter, 3)[0].view()).unwrap();
        save_features_npy(&x2, zoo::uniform_inputs(&mut rng, &adapter, 2)[0].view()).unwrap();
        let query_a3 = dir.join("qa3.ct");
        let query_a2 = dir.join("qa2.ct");
        ok(encrypt(&keys_a, &card, &x3, &query_a3));
        ok(encrypt(&keys_a, &card, &x2, &query_a2));
        let result_a3 = dir.join("ra3.ct");
        let result_a2 = dir.join("ra2.ct");
        ok(evaluate(&card, &keys_a, &query_a3, &result_a3));
        ok(evaluate(&card, &keys_a, &query_a2, &result_a2));
        // The untouched pipeline still decrypts.
        ok(decrypt(&keys_a, &card, &result_a3, &dir.join("ok.npy")));
        Fixture {
            dir,
            card,
            keys_a,
            keys_b,
            query_a3,
            query_a2,
            result_a3,
            result_a2,
        }
    })
}

#[test]
fn secret_key_of_another_key_set_is_refused() {
    let f = fixture();
    let mixed = f.dir.join("keys-mixed");
    copy_dir(&f.keys_a, &mixed);
    std::fs::copy(f.keys_b.join("secret.key"), mixed.join("secret.key")).unwrap();
    let err = refused(
        decrypt(&mixed, &f.card, &f.result_a3, &f.dir.join("m.npy")),
        "key set mismatch",
    );
    assert!(err.contains("the secret key belongs to key set"), "{err}");
}

#[test]
fn evaluation_keys_of_another_client_are_refused() {
    let f = fixture();
    let q = f.dir.join("q-other.ct");
    copy_pair(&f.query_a3, &q);
    let err = refused(
        evaluate(&f.card, &f.keys_b, &q, &f.dir.join("r-other.ct")),
        "key set mismatch",
    );
    assert!(err.contains("another client's keys"), "{err}");
}

#[test]
fn query_presented_as_a_result_is_refused() {
    let f = fixture();
    // The query's ciphertext under the result's untouched sidecar.
    let fake = f.dir.join("fake-result.ct");
    std::fs::copy(&f.query_a3, &fake).unwrap();
    std::fs::copy(json(&f.result_a3), json(&fake)).unwrap();
    let err = refused(
        decrypt(&f.keys_a, &f.card, &fake, &f.dir.join("fake.npy")),
        "role mismatch",
    );
    assert!(err.contains("bound as a query"), "{err}");
}

#[test]
fn ciphertexts_swapped_under_untouched_sidecars_are_refused() {
    let f = fixture();
    // A query of 2 samples under the sidecar of a query of 3.
    let q = f.dir.join("q-swapped.ct");
    std::fs::copy(&f.query_a2, &q).unwrap();
    std::fs::copy(json(&f.query_a3), json(&q)).unwrap();
    let err = refused(
        evaluate(&f.card, &f.keys_a, &q, &f.dir.join("r-swapped.ct")),
        "do not belong together",
    );
    assert!(err.contains("`queries`"), "{err}");
    // The same for a result.
    let r = f.dir.join("r-swapped2.ct");
    std::fs::copy(&f.result_a2, &r).unwrap();
    std::fs::copy(json(&f.result_a3), json(&r)).unwrap();
    refused(
        decrypt(&f.keys_a, &f.card, &r, &f.dir.join("s.npy")),
        "do not belong together",
    );
    // An edited sidecar field (mode) is refused too.
    let r2 = f.dir.join("r-mode.ct");
    copy_pair(&f.result_a3, &r2);
    let text = std::fs::read_to_string(json(&r2)).unwrap();
    std::fs::write(
        json(&r2),
        text.replace(
            "\"ciphertexts_per_query\": 1",
            "\"ciphertexts_per_query\": 2",
        ),
    )
    .unwrap();
    refused(
        decrypt(&f.keys_a, &f.card, &r2, &f.dir.join("t.npy")),
        "ciphertexts_per_query",
    );
}

#[test]
fn outputs_never_replace_key_files() {
    let f = fixture();
    let keys = f.dir.join("keys-out");
    copy_dir(&f.keys_a, &keys);
    let sk = keys.join("secret.key");
    let before = std::fs::read(&sk).unwrap();
    refused(
        decrypt(&keys, &f.card, &f.result_a3, &sk),
        "refusing to overwrite an existing secret key file",
    );
    refused(
        evaluate(&f.card, &keys, &f.query_a3, &keys.join("eval.keys")),
        "refusing to overwrite an existing evaluation keys file",
    );
    assert_eq!(std::fs::read(&sk).unwrap(), before);
}

#[test]
fn edited_plan_json_is_refused() {
    let f = fixture();
    let keys = f.dir.join("keys-edited");
    copy_dir(&f.keys_a, &keys);
    let pj = keys.join("plan.json");
    let text = std::fs::read_to_string(&pj).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["output_dim"] = serde_json::json!(7);
    std::fs::write(&pj, serde_json::to_string(&v).unwrap()).unwrap();
    refused(
        encrypt(&keys, &f.card, &f.dir.join("x3.npy"), &f.dir.join("e.ct")),
        "field `output_dim`",
    );
}

#[test]
fn loose_secret_key_permissions_are_warned_about() {
    let f = fixture();
    let keys = f.dir.join("keys-loose");
    copy_dir(&f.keys_a, &keys);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            keys.join("secret.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let err = ok(decrypt(&keys, &f.card, &f.result_a3, &f.dir.join("l.npy")));
        assert!(err.contains("mode 0644"), "{err}");
    }
}

#[test]
fn device_files_and_oversized_inputs_are_refused() {
    let f = fixture();
    // A device as weights: refused before reading.
    #[cfg(unix)]
    {
        let o = hepeft(&[
            &"evaluate",
            &"--no-flooding",
            &"--model",
            &f.card,
            &"--weights",
            &"/dev/zero",
            &"--eval-keys",
            &f.keys_a.join("eval.keys"),
            &"--params",
            &f.keys_a.join("params.toml"),
            &"--input",
            &f.query_a3,
            &"--out",
            &f.dir.join("dev.ct"),
        ]);
        refused(o, "character device");
        // A features file symlinked to /dev/urandom.
        let link = f.dir.join("random.npy");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/urandom", &link).unwrap();
        refused(
            encrypt(&f.keys_a, &f.card, &link, &f.dir.join("u.ct")),
            "character device",
        );
    }
    // A 3 GB (sparse) secret key with a valid header: refused on its size against the
    // header, unread.
    let keys = f.dir.join("keys-huge");
    copy_dir(&f.keys_a, &keys);
    let sk = std::fs::OpenOptions::new()
        .write(true)
        .open(keys.join("secret.key"))
        .unwrap();
    sk.set_len(3 << 30).unwrap();
    drop(sk);
    refused(
        decrypt(&keys, &f.card, &f.result_a3, &f.dir.join("h.npy")),
        "trailing bytes: the file is 3221225472 bytes",
    );
    // A secret key whose header declares 3 GB: refused by the kind's cap (N + 56 bytes).
    let keys = f.dir.join("keys-forged");
    copy_dir(&f.keys_a, &keys);
    let mut bytes = std::fs::read(keys.join("secret.key")).unwrap();
    bytes[48..56].copy_from_slice(&(3u64 << 30).to_le_bytes());
    std::fs::write(keys.join("secret.key"), &bytes).unwrap();
    let sk = std::fs::OpenOptions::new()
        .write(true)
        .open(keys.join("secret.key"))
        .unwrap();
    sk.set_len((3 << 30) + 64).unwrap();
    drop(sk);
    refused(
        decrypt(&keys, &f.card, &f.result_a3, &f.dir.join("g.npy")),
        "is too large",
    );
    // A 2 MiB params.toml.
    let keys = f.dir.join("keys-bigtoml");
    copy_dir(&f.keys_a, &keys);
    let mut text = std::fs::read_to_string(keys.join("params.toml")).unwrap();
    text.push_str(&"#".repeat(2 << 20));
    std::fs::write(keys.join("params.toml"), text).unwrap();
    refused(
        encrypt(&keys, &f.card, &f.dir.join("x3.npy"), &f.dir.join("b.ct")),
        "too large",
    );
}

#[test]
fn absurd_thread_counts_are_refused() {
    let o = hepeft(&[&"--threads", &"100000", &"params", &"list"]);
    refused(o, "--threads is too large");
}

#[test]
fn an_interval_of_three_numbers_is_refused() {
    let card = r#"
version = 1
name = "three"

[[inputs]]
name = "x"
dim = 2

[[nodes]]
name = "act"
op = "poly"
inputs = ["x"]
interval = [-1.0, 1.0, 5.0]
coeffs = [0.0, 1.0]
"#;
    let err = ModelCard::from_toml_str(card).unwrap_err().to_string();
    assert!(err.contains("two numbers"), "{err}");
}
