//! Token adapters through the `hepeft` binary (issue 15): publish -> params select ->
//! keygen (from the public card) -> encrypt (one `samples x T x d` .npy per tapped layer) ->
//! evaluate (sanitized and flooded by default) -> decrypt, against the `f64` twin in bits
//! and argmax; and the refusals (batch layout, too much flooding, serve, wrong files).
//! Small adapter (T = 4, d = 8, two taps) at 128-bit security; the flooding is 20 bits
//! here so that the parameters stay at N = 2^15 (40 bits needs N = 2^16 for this depth;
//! the library test `token_session` covers 40 bits).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use hepeft::model::load::load_features_npy;
use hepeft::model::reference::argmax;
use hepeft::model::token::{
    evaluate_tokens, uniform_tokens, Pooling, TokenAdapter, TokenAdapterBuilder, TokenOp,
};
use hepeft::model::token_card::save_token_adapter;
use hepeft::model::token_npy::save_token_states_npy;
use hepeft::model::{Activation, ActivationFn};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn hepeft(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hepeft"));
    for a in args {
        c.arg(a);
    }
    c.output().expect("running hepeft")
}

#[track_caller]
fn ok(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "hepeft failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    format!("{out}{err}")
}

#[track_caller]
fn fails(o: Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "hepeft succeeded, expected {needle:?}");
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    err
}

fn m(rng: &mut ChaCha20Rng, r: usize, c: usize) -> Array2<f64> {
    let b = 1.0 / (c as f64).sqrt();
    Array2::from_shape_simple_fn((r, c), || rng.random_range(-b..=b))
}

fn v(rng: &mut ChaCha20Rng, n: usize, b: f64) -> Array1<f64> {
    Array1::from_shape_simple_fn(n, || rng.random_range(-b..=b))
}

/// Two tapped layers h1, h2 (T = 4, d = 8): in2 = out1 + h2, each out = up(relu(down(in))) +
/// in; then mean pooling and a 3-class head. Depth 10 after fusion (N = 2^15 at 20-bit flooding).
fn adapter(rng: &mut ChaCha20Rng) -> TokenAdapter {
    let (t, d, r) = (4, 8, 4);
    let act = Activation::fit(ActivationFn::Relu, -4.0, 4.0, 3).unwrap();
    let mut b = TokenAdapterBuilder::new(t);
    let h1 = b.input("h1", d).unwrap();
    let h2 = b.input("h2", d).unwrap();
    let mut prev = None;
    for (i, h) in [h1, h2].into_iter().enumerate() {
        let inp = match prev {
            None => h,
            Some(o) => b.node(&format!("in{i}"), TokenOp::Add, &[o, h]).unwrap(),
        };
        let lin = |w: Array2<f64>, bias: Array1<f64>| TokenOp::Linear {
            weight: w,
            bias: Some(bias),
        };
        let down = b
            .node(
                &format!("down{i}"),
                lin(m(rng, r, d), v(rng, r, 0.1)),
                &[inp],
            )
            .unwrap();
        let a = b
            .node(&format!("act{i}"), TokenOp::Poly(act.clone()), &[down])
            .unwrap();
        let up = b
            .node(&format!("up{i}"), lin(m(rng, d, r), v(rng, d, 0.1)), &[a])
            .unwrap();
        prev = Some(
            b.node(&format!("out{i}"), TokenOp::Add, &[up, inp])
                .unwrap(),
        );
    }
    let p = b
        .node("pool", TokenOp::Pool(Pooling::Mean), &[prev.unwrap()])
        .unwrap();
    b.node(
        "head",
        TokenOp::Linear {
            weight: m(rng, 3, d) * 3.0,
            bias: Some(v(rng, 3, 0.1)),
        },
        &[p],
    )
    .unwrap();
    b.build().unwrap()
}

#[test]
fn token_card_end_to_end_matches_the_twin() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli_token-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let ad = adapter(&mut rng);
    let card = dir.join("owc.toml");
    save_token_adapter(&ad, &card, Some("two-tap token adapter")).unwrap();

    // server publishes the structure; the client selects, generates keys and encrypts from it
    let public = dir.join("public");
    let out = ok(hepeft(&[&"publish", &"--model", &card, &"--out", &public]));
    assert!(out.contains("token adapter"), "{out}");
    let pcard = public.join("public.toml");
    let params = dir.join("params.toml");
    let out = ok(hepeft(&[
        &"params",
        &"select",
        &"--model",
        &pcard,
        &"--precision",
        &"10",
        &"--flooding-bits",
        &"20",
        &"--out",
        &params,
    ]));
    println!("{out}");
    assert!(out.contains("noise flooding at 20 bits"), "{out}");
    fails(
        hepeft(&[
            &"params",
            &"select",
            &"--model",
            &pcard,
            &"--mode",
            &"batch",
            &"--out",
            &dir.join("b.toml"),
        ]),
        "no batch layout",
    );
    let keys = dir.join("keys");
    fails(
        hepeft(&[
            &"keygen",
            &"--params",
            &params,
            &"--model",
            &pcard,
            &"--mode",
            &"batch",
            &"--out",
            &keys,
        ]),
        "no batch layout",
    );
    ok(hepeft(&[
        &"keygen",
        &"--params",
        &params,
        &"--model",
        &pcard,
        &"--out",
        &keys,
    ]));

    let samples = uniform_tokens(&mut rng, &ad, 3);
    let taps: Vec<_> = (0..2)
        .map(|i| {
            let p = dir.join(format!("h{}.npy", i + 1));
            let xs: Vec<Array2<f64>> = samples.iter().map(|s| s[i].clone()).collect();
            save_token_states_npy(&p, &xs).unwrap();
            p
        })
        .collect();
    let query = dir.join("query.ct");
    fails(
        hepeft(&[
            &"encrypt", &"--keys", &keys, &"--model", &pcard, &"--input", &taps[0], &"--out",
            &query,
        ]),
        "2 input(s)",
    );
    ok(hepeft(&[
        &"encrypt", &"--keys", &keys, &"--model", &pcard, &"--input", &taps[0], &"--input",
        &taps[1], &"--out", &query,
    ]));

    // the server: 40-bit flooding does not fit these parameters and is refused before any work
    let eval_keys = keys.join("eval.keys");
    let result = dir.join("result.ct");
    fails(
        hepeft(&[
            &"evaluate",
            &"--model",
            &card,
            &"--params",
            &params,
            &"--eval-keys",
            &eval_keys,
            &"--input",
            &query,
            &"--out",
            &result,
            &"--flooding-bits",
            &"40",
        ]),
        "--flooding-bits",
    );
    fails(
        hepeft(&[
            &"evaluate",
            &"--model",
            &card,
            &"--params",
            &params,
            &"--eval-keys",
            &keys.join("secret.key"),
            &"--input",
            &query,
            &"--out",
            &result,
        ]),
        "secret key",
    );
    let out = ok(hepeft(&[
        &"evaluate",
        &"--model",
        &card,
        &"--params",
        &params,
        &"--eval-keys",
        &eval_keys,
        &"--input",
        &query,
        &"--out",
        &result,
    ]));
    println!("{out}");
    assert!(out.contains("flooding at 20 bits"), "{out}");
    let logits = dir.join("logits.npy");
    fails(
        hepeft(&[
            &"decrypt", &"--keys", &keys, &"--model", &pcard, &"--input", &query, &"--out", &logits,
        ]),
        "result",
    );
    ok(hepeft(&[
        &"decrypt", &"--keys", &keys, &"--model", &pcard, &"--input", &result, &"--out", &logits,
    ]));
    let got = load_features_npy(&logits).unwrap();
    assert_eq!(got.dim(), (3, 3));
    let mut worst = f64::INFINITY;
    for (s, x) in samples.iter().enumerate() {
        let want = evaluate_tokens(&ad, x).unwrap();
        assert!(want.outside.is_empty(), "{:?}", want.outside);
        let w = want.output.row(0);
        let largest = w.iter().fold(0f64, |a, b| a.max(b.abs()));
        let err = got
            .row(s)
            .iter()
            .zip(w.iter())
            .fold(0f64, |a, (g, t)| a.max((g - t).abs()));
        let bits = (largest / err).log2();
        println!("sample {s}: {bits:.1} bits relative to the largest logit ({largest:.3}); got {:?} twin {:?}", got.row(s).to_vec(), w.to_vec());
        worst = worst.min(bits);
        assert_eq!(argmax(got.row(s)), argmax(w), "sample {s}");
    }
    println!("worst {worst:.1} bits (20-bit flooding, 10 bits asked at a unit logit)");
    assert!(worst > 6.0, "{worst}");

    // the pooled-adapter front doors refuse token files clearly
    let pooled = dir.join("pooled.toml");
    let head = hepeft::model::zoo::lora_head(&mut ChaCha20Rng::seed_from_u64(3), 8, 2, 3).unwrap();
    hepeft::model::load::save_adapter(&head, &pooled, None).unwrap();
    fails(
        hepeft(&[
            &"encrypt",
            &"--keys",
            &keys,
            &"--model",
            &pooled,
            &"--input",
            &taps[0],
            &"--out",
            &dir.join("p.ct"),
        ]),
        "keys for a token adapter",
    );
    #[cfg(feature = "serve")]
    fails(
        hepeft(&[&"serve", &"--model", &card, &"--params", &params]),
        "does not serve token adapters",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
