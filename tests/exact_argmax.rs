//! Encrypted argmax of the exact (TFHE) backend: the encrypted one-hot equals the integer
//! reference bit for bit, is the argmax of the reference logits, and costs exactly the
//! predicted number of bootstrappings.
//!
//! Release mode only in practice (`cargo test --release --test exact_argmax`).
#![cfg(feature = "exact")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use hepeft::exact::{generate_keys, to_signed, ClientKey, Evaluator, ExactParams, ServerKey};
use hepeft::model::{Activation, ActivationFn, Adapter, AdapterBuilder, Op};
use hepeft::plan::{
    argmax_one_hot, argmax_pbs, argmax_reductions, quantize, QuantPublic, QuantizeOptions,
    QuantizedPlan, ARGMAX_LOG_MODULUS,
};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

struct Keys {
    params: ExactParams,
    client: ClientKey,
    server: ServerKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let params = ExactParams::default_2m128().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let (client, compressed) = generate_keys(&params, &mut rng).unwrap();
        let server = compressed.expand(&params).unwrap();
        Keys {
            params,
            client,
            server,
        }
    })
}

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn argmax_opts() -> QuantizeOptions {
    QuantizeOptions {
        argmax: true,
        ..QuantizeOptions::default()
    }
}

/// `d -> [hidden -> relu] -> classes`; `tie` copies output row and bias `tie.0` onto
/// `tie.1` and raises their bias so they usually win (an exact tie of the logits).
fn head(
    rng: &mut impl Rng,
    d: usize,
    hidden: Option<usize>,
    classes: usize,
    tie: Option<(usize, usize)>,
) -> Adapter {
    let mut b = AdapterBuilder::new();
    let mut x = b.input("x", d).unwrap();
    let mut width = d;
    if let Some(h) = hidden {
        let bound = 1.0 / (width as f64).sqrt();
        let w = Array2::from_shape_simple_fn((h, width), || rng.random_range(-bound..=bound));
        let bias = Array1::from_shape_simple_fn(h, || rng.random_range(-0.1..=0.1));
        x = b
            .node(
                "fc0",
                Op::Linear {
                    weight: w,
                    bias: Some(bias),
                },
                &[x],
            )
            .unwrap();
        x = b
            .node(
                "act0",
                Op::Poly(Activation::fit(ActivationFn::Relu, -4.0, 4.0, 7).unwrap()),
                &[x],
            )
            .unwrap();
        width = h;
    }
    let bound = 1.0 / (width as f64).sqrt();
    let mut w = Array2::from_shape_simple_fn((classes, width), || rng.random_range(-bound..=bound));
    let mut bias = Array1::from_shape_simple_fn(classes, || rng.random_range(-0.1..=0.1));
    if let Some((a, t)) = tie {
        let row = w.row(a).to_owned();
        w.row_mut(t).assign(&row);
        bias[a] = 0.4;
        bias[t] = 0.4;
    }
    b.node(
        "out",
        Op::Linear {
            weight: w,
            bias: Some(bias),
        },
        &[x],
    )
    .unwrap();
    b.build().unwrap()
}

fn features(rng: &mut impl Rng, n: usize, d: usize) -> Array2<f64> {
    Array2::from_shape_simple_fn((n, d), || rng.random_range(-1.0..=1.0))
}

fn first_max(v: &[i64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Runs `samples` encrypted argmaxes; returns (plan, how many samples had a tie for the max).
fn check(adapter: &Adapter, samples: usize, seed: u64) -> (QuantizedPlan, usize) {
    let k = keys();
    let mut r = rng(seed);
    let d = adapter.input_dims()[0];
    let calib = features(&mut r, 64, d);
    let plan = quantize(adapter, calib.view(), &argmax_opts(), &k.params).unwrap();
    assert!(plan.argmax);
    assert_eq!(plan.output_log_modulus(), ARGMAX_LOG_MODULUS);
    assert!(plan
        .report
        .max_log2_p_fail_pbs
        .is_some_and(|pf| pf <= -128.0));
    let p = plan.logits_log_modulus();
    let c = plan.output_dim();
    assert_eq!(plan.predicted_pbs() - hidden_pbs(&plan), argmax_pbs(c, p));
    let test = features(&mut r, samples, d);
    let mut ties = 0;
    for row in test.rows() {
        let xq = plan.quantize_input(row).unwrap();
        let logits = plan.reference_logits(&xq).unwrap();
        let want = plan.reference(&xq).unwrap();
        assert_eq!(want, argmax_one_hot(&logits, p));
        // no wrap-around on these inputs: the one-hot is that of the first maximal logit
        let half = 1i64 << (p - 1);
        assert!(logits
            .iter()
            .all(|&a| logits.iter().all(|&b| (a - b).abs() < half)));
        let m = first_max(&logits);
        let expect: Vec<i64> = (0..c).map(|i| i64::from(i == m)).collect();
        assert_eq!(
            want, expect,
            "reference one-hot != argmax of logits {logits:?}"
        );
        if logits.iter().filter(|&&v| v == logits[m]).count() > 1 {
            ties += 1;
        }
        let cts = plan.encrypt_input(&k.client, &xq, &mut r).unwrap();
        let run = plan.evaluate(&k.server, &cts).unwrap();
        let got = plan.decrypt_output(&k.client, &run.outputs).unwrap();
        assert_eq!(
            got, want,
            "encrypted one-hot != integer reference, logits {logits:?}"
        );
        assert_eq!(run.pbs, plan.predicted_pbs());
    }
    eprintln!(
        "argmax bit-exact on {samples} samples: {c} classes, logits mod 2^{p}, {} reduction \
         stages, {} PBS/sample ({} for the argmax), worst PBS 2^{:.1}, sample 2^{:.1}, ties {ties}",
        argmax_reductions(p).len(),
        plan.predicted_pbs(),
        argmax_pbs(c, p),
        plan.report.max_log2_p_fail_pbs.unwrap_or(f64::NEG_INFINITY),
        plan.report.log2_p_fail_sample
    );
    (plan, ties)
}

fn hidden_pbs(plan: &QuantizedPlan) -> u64 {
    let mut no_arg = plan.clone();
    no_arg.argmax = false;
    no_arg.predicted_pbs()
}

#[test]
fn reference_semantics() {
    // ties go to the lower index
    assert_eq!(argmax_one_hot(&[3, 5, 5, 1], 8), vec![0, 1, 0, 0]);
    assert_eq!(argmax_one_hot(&[7, 7, 7], 8), vec![1, 0, 0]);
    assert_eq!(argmax_one_hot(&[-4, -9], 8), vec![1, 0]);
    assert_eq!(argmax_one_hot(&[0], 8), vec![1]);
    // modular: 100 - (-100) = 200 wraps to -56 mod 2^8, so 1 "beats" 0; with a third
    // class the tournament is cyclic and nobody wins
    assert_eq!(argmax_one_hot(&[100, -100], 8), vec![0, 1]);
    assert_eq!(argmax_one_hot(&[100, -100, 20], 8), vec![0, 0, 0]);
    // never two winners
    let mut r = rng(5);
    for _ in 0..2000 {
        let p = r.random_range(2..=12u32);
        let h = 1i64 << (p - 1);
        let c = r.random_range(1..=10usize);
        let l: Vec<i64> = (0..c).map(|_| r.random_range(-h..h)).collect();
        let one = argmax_one_hot(&l, p);
        assert!(one.iter().sum::<i64>() <= 1);
        if l.iter().all(|&a| l.iter().all(|&b| (a - b).abs() < h)) {
            assert_eq!(one[first_max(&l)], 1, "{l:?} mod 2^{p}");
        }
    }
}

#[test]
fn drop_low_bits_is_exact_for_every_width() {
    let k = keys();
    let ev = Evaluator::new(&k.server);
    let mut r = rng(6);
    for p in [6u32, 9, 12, 17] {
        for bits in 1..=4u32 {
            let h = 1i64 << (p - 1);
            let vals: Vec<i64> = (0..3).map(|_| r.random_range(-h..h)).collect();
            let cts = k.client.encrypt(&vals, p, &mut r).unwrap();
            for (c, &a) in cts.iter().zip(&vals) {
                let out = ev.drop_low_bits(c, p, bits).unwrap();
                let got = k.client.decrypt(&[out], p - bits).unwrap()[0];
                let want = to_signed((a >> bits) as u64, p - bits);
                assert_eq!(got, want, "a = {a}, p = {p}, k = {bits}");
            }
        }
    }
    assert_eq!(ev.pbs_count(), 4 * 4 * 3 * 2);
    let c = k.client.encrypt(&[1], 8, &mut r).unwrap();
    assert!(ev.drop_low_bits(&c[0], 8, 0).is_err());
    assert!(ev.drop_low_bits(&c[0], 8, 5).is_err());
    assert!(ev.drop_low_bits(&c[0], 3, 3).is_err());
}

#[test]
fn cost_formula() {
    assert_eq!(argmax_reductions(5), Vec::<u32>::new());
    assert_eq!(argmax_reductions(3), Vec::<u32>::new());
    assert_eq!(argmax_reductions(9), vec![4]);
    assert_eq!(argmax_reductions(12), vec![4, 3]);
    assert_eq!(argmax_reductions(14), vec![4, 4, 1]);
    // 10 classes, 45 pairs: 13-bit logits take two stages, 5 PBS per pair, + 10
    assert_eq!(argmax_pbs(10, 13), 45 * 5 + 10);
    assert_eq!(argmax_pbs(1, 13), 1);
}

#[test]
fn encrypted_argmax_linear_heads() {
    let mut r = rng(20);
    for (i, &(d, c)) in [(12usize, 3usize), (16, 5)].iter().enumerate() {
        let a = head(&mut r, d, None, c, None);
        check(&a, 3, 200 + i as u64);
    }
}

#[test]
fn encrypted_argmax_relu_head() {
    let mut r = rng(21);
    let a = head(&mut r, 12, Some(3), 4, None);
    check(&a, 2, 300);
}

#[test]
fn encrypted_argmax_tie_goes_to_lower_index() {
    let mut r = rng(22);
    // classes 1 and 2 have identical rows and biases: identical integer logits
    let a = head(&mut r, 8, None, 4, Some((1, 2)));
    let (plan, ties) = check(&a, 4, 400);
    assert!(ties > 0, "no tie was exercised");
    let _ = plan;
}

#[test]
fn encrypted_argmax_ten_classes() {
    let mut r = rng(23);
    let a = head(&mut r, 16, None, 10, None);
    let (plan, _) = check(&a, 1, 500);
    eprintln!(
        "10 classes: {} PBS per sample, all in the argmax",
        plan.predicted_pbs()
    );
}

#[test]
fn public_description_records_argmax_and_limits() {
    let k = keys();
    let mut r = rng(24);
    let a = head(&mut r, 8, None, 4, None);
    let calib = features(&mut r, 16, 8);
    let plan = quantize(&a, calib.view(), &argmax_opts(), &k.params).unwrap();
    let public = plan.public(&k.params, &argmax_opts());
    assert!(public.options.argmax);
    assert_eq!(public.output_log_modulus, ARGMAX_LOG_MODULUS);
    assert_eq!(public.output_scales, vec![1.0; 4]);
    assert_eq!(public.predicted_pbs, plan.predicted_pbs());
    // files written before the option existed parse as argmax = false
    let mut v = serde_json::to_value(&public).unwrap();
    v["options"].as_object_mut().unwrap().remove("argmax");
    let old: QuantPublic = serde_json::from_value(v).unwrap();
    assert!(!old.options.argmax);
    // without the option nothing changes
    let plain = quantize(&a, calib.view(), &QuantizeOptions::default(), &k.params).unwrap();
    assert!(!plain.argmax);
    assert_eq!(plain.predicted_pbs(), 0);
    assert_eq!(plain.output_log_modulus(), plain.logits_log_modulus());
    // more classes than one bootstrapping can count
    let big = head(&mut r, 8, None, 17, None);
    assert!(quantize(&big, calib.view(), &argmax_opts(), &k.params).is_err());
}

/// `params select --backend exact --argmax` -> keygen -> encrypt -> evaluate -> decrypt:
/// the decrypted file is the one-hot of the integer reference.
#[cfg(feature = "cli")]
#[test]
fn argmax_on_files() {
    use hepeft::model::load::{load_features_npy, save_adapter, save_features_npy};
    use std::process::Command;

    fn hepeft(args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_hepeft"))
            .args(args)
            .output()
            .unwrap()
    }
    fn ok(args: &[&str]) -> String {
        let out = hepeft(args);
        assert!(
            out.status.success(),
            "hepeft {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |name: &str| d.join(name).to_str().unwrap().to_string();
    let mut r = rng(25);
    let adapter = head(&mut r, 12, Some(3), 4, None);
    save_adapter(&adapter, d.join("card.toml"), Some("tiny-argmax")).unwrap();
    let calib = features(&mut r, 32, 12);
    let feats = features(&mut r, 2, 12);
    save_features_npy(d.join("calib.npy"), calib.view()).unwrap();
    save_features_npy(d.join("x.npy"), feats.view()).unwrap();
    let (card, cal, quant, key_dir) = (s("card.toml"), s("calib.npy"), s("quant.json"), s("keys"));
    let report = ok(&[
        "params",
        "select",
        "--backend",
        "exact",
        "--model",
        &card,
        "--calib",
        &cal,
        "--argmax",
        "--out",
        &quant,
    ]);
    let public: QuantPublic =
        serde_json::from_str(&std::fs::read_to_string(&quant).unwrap()).unwrap();
    assert!(public.options.argmax);
    assert!(report.contains(&format!(
        "predicted PBS per sample: {}",
        public.predicted_pbs
    )));
    ok(&[
        "keygen",
        "--backend",
        "exact",
        "--model",
        &quant,
        "--out",
        &key_dir,
    ]);
    let (q, res, out) = (s("q.ct"), s("r.ct"), s("onehot.npy"));
    ok(&[
        "encrypt",
        "--backend",
        "exact",
        "--keys",
        &key_dir,
        "--model",
        &quant,
        "--input",
        &s("x.npy"),
        "--out",
        &q,
    ]);
    let eval_keys = d.join("keys").join("eval.keys");
    ok(&[
        "evaluate",
        "--backend",
        "exact",
        "--model",
        &card,
        "--calib",
        &cal,
        "--quant",
        &quant,
        "--eval-keys",
        eval_keys.to_str().unwrap(),
        "--input",
        &q,
        "--out",
        &res,
    ]);
    ok(&[
        "decrypt",
        "--backend",
        "exact",
        "--keys",
        &key_dir,
        "--model",
        &quant,
        "--input",
        &res,
        "--out",
        &out,
    ]);
    let got = load_features_npy(&out).unwrap();
    let k = keys();
    let plan = quantize(&adapter, calib.view(), &argmax_opts(), &k.params).unwrap();
    assert_eq!(public.predicted_pbs, plan.predicted_pbs());
    let want = plan.forward_batch(feats.view()).unwrap();
    assert_eq!(got, want);
    for row in got.rows() {
        assert_eq!(row.sum(), 1.0);
    }
    // --argmax is refused on the CKKS backend
    let bad = hepeft(&[
        "params",
        "select",
        "--model",
        &card,
        "--argmax",
        "--out",
        &s("p.toml"),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--argmax"));
}

/// The planner accepts the argmax on the benchmark-sized heads (384 -> 8 / 64 -> 10) and
/// predicts its cost (no encryption: quantization only).
#[test]
fn argmax_plans_for_benchmark_heads() {
    let k = keys();
    let mut r = rng(26);
    for hidden in [8usize, 64] {
        let a = head(&mut r, 384, Some(hidden), 10, None);
        let calib = features(&mut r, 64, 384);
        let plain = quantize(&a, calib.view(), &QuantizeOptions::default(), &k.params).unwrap();
        let plan = quantize(&a, calib.view(), &argmax_opts(), &k.params).unwrap();
        let p = plan.logits_log_modulus();
        assert_eq!(
            plan.predicted_pbs(),
            plain.predicted_pbs() + argmax_pbs(10, p)
        );
        assert!(plan
            .report
            .max_log2_p_fail_pbs
            .is_some_and(|pf| pf <= -128.0));
        // the argmax's stricter reads cost output-weight bits: how often the predicted
        // class still agrees with the argmax of the plain plan's logits
        let test = features(&mut r, 300, 384);
        let hot = plan.forward_batch(test.view()).unwrap();
        let logits = plain.forward_batch(test.view()).unwrap();
        let agree = hot
            .rows()
            .into_iter()
            .zip(logits.rows())
            .filter(|(h, l)| {
                let m = l
                    .iter()
                    .enumerate()
                    .fold(0, |b, (i, &v)| if v > l[b] { i } else { b });
                h[m] == 1.0
            })
            .count();
        eprintln!(
            "384 -> {hidden} -> 10 with argmax: logits mod 2^{p} (without: 2^{}), output weights \
             {} bits (without: {}), PBS {} = {} + {}, worst PBS 2^{:.1}, sample 2^{:.1}, \
             agreement with the plain plan's argmax {agree}/300",
            plain.logits_log_modulus(),
            plan.report.output_weight_bits,
            plain.report.output_weight_bits,
            plan.predicted_pbs(),
            plain.predicted_pbs(),
            argmax_pbs(10, p),
            plan.report.max_log2_p_fail_pbs.unwrap_or(f64::NEG_INFINITY),
            plan.report.log2_p_fail_sample
        );
    }
}
