//! Every CKKS operation against its plaintext twin, with precision reported in bits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use hepeft::ckks::*;
use std::sync::Arc;

fn check(label: &str, got: &[f64], want: &[f64], min_bits: f64) {
    let stats = PrecisionStats::compare(&got[..want.len()], want);
    println!("{label:<28} {stats}");
    assert!(
        stats.min_bits >= min_bits,
        "{label}: {stats} (wanted >= {min_bits} bits)"
    );
}

#[test]
fn encode_decode_roundtrip() {
    let f = Fixture::new(insecure_test_params(), 1);
    let v = values(f.params.slots(), 2);
    for level in [Level(0), f.params.max_level()] {
        let pt = f
            .encoder
            .encode(&v, level, f.params.default_scale())
            .unwrap();
        check(
            &format!("encode/decode level {level}"),
            &f.encoder.decode(&pt).unwrap(),
            &v,
            30.0,
        );
    }
    // complex slots
    let c: Vec<C64> = v
        .iter()
        .zip(values(f.params.slots(), 3))
        .map(|(&a, b)| C64::new(a, b))
        .collect();
    let pt = f
        .encoder
        .encode_complex(&c, Level(2), 2f64.powi(40))
        .unwrap();
    let back = f.encoder.decode_complex(&pt).unwrap();
    let im: Vec<f64> = back.iter().map(|x| x.im).collect();
    check(
        "encode/decode imaginary",
        &im,
        &c.iter().map(|x| x.im).collect::<Vec<_>>(),
        30.0,
    );
}

#[test]
fn encrypt_decrypt_public_and_symmetric() {
    let f = Fixture::new(insecure_test_params(), 4);
    let v = values(f.params.slots(), 5);
    let ct = f.encrypt(&v, 6);
    check("public-key roundtrip", &f.decrypt(&ct), &v, 25.0); // the bar at scale 2^40
    let pt = f
        .encoder
        .encode(&v, Level(1), f.params.default_scale())
        .unwrap();
    let ct = Encryptor::new(&f.params, EncryptionKey::Secret(&f.sk))
        .unwrap()
        .encrypt(&pt, &mut rng(7))
        .unwrap();
    assert!(
        ct.seed().is_some(),
        "symmetric ciphertexts carry their seed"
    );
    check("symmetric roundtrip", &f.decrypt(&ct), &v, 25.0);
}

fn keyed(f: &Fixture, steps: &[i64]) -> Evaluator {
    let mut elements: Vec<u64> = steps
        .iter()
        .map(|&s| galois_element_for_rotation(&f.params, s))
        .collect();
    elements.push(galois_element_for_conjugation(&f.params));
    let keys = KeyGenerator::new(&f.params)
        .gen_evaluation_keys(&f.sk, &elements, true, &mut rng(99))
        .unwrap();
    Evaluator::with_keys(&f.params, Arc::new(keys)).unwrap()
}

#[test]
fn additions_and_constants() {
    let f = Fixture::new(insecure_test_params(), 8);
    let ev = Evaluator::new(&f.params);
    let (a, b) = (values(f.params.slots(), 9), values(f.params.slots(), 10));
    let (ca, cb) = (f.encrypt(&a, 11), f.encrypt(&b, 12));
    let sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    check("add", &f.decrypt(&ev.add(&ca, &cb).unwrap()), &sum, 25.0);
    let diff: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    check("sub", &f.decrypt(&ev.sub(&ca, &cb).unwrap()), &diff, 25.0);
    let pb = f
        .encoder
        .encode(&b, f.params.max_level(), f.params.default_scale())
        .unwrap();
    check(
        "add_plain",
        &f.decrypt(&ev.add_plain(&ca, &pb).unwrap()),
        &sum,
        25.0,
    );
    let plus: Vec<f64> = a.iter().map(|x| x + 0.75).collect();
    check(
        "add_const",
        &f.decrypt(&ev.add_const(&ca, 0.75).unwrap()),
        &plus,
        25.0,
    );
    let mut neg = ca.clone();
    ev.neg_assign(&mut neg).unwrap();
    check(
        "neg",
        &f.decrypt(&neg),
        &a.iter().map(|x| -x).collect::<Vec<_>>(),
        24.0,
    );
    let mut tripled = ca.clone();
    ev.mul_int_assign(&mut tripled, -3).unwrap();
    check(
        "mul_int",
        &f.decrypt(&tripled),
        &a.iter().map(|x| -3.0 * x).collect::<Vec<_>>(),
        24.0,
    );
    // add across levels: the higher operand is dropped
    let low = ev.drop_to_level(&cb, Level(2)).unwrap();
    let mixed = ev.add(&ca, &low).unwrap();
    assert_eq!(mixed.level(), 2);
    check("add across levels", &f.decrypt(&mixed), &sum, 24.0);
}

#[test]
fn products_and_rescale() {
    let f = Fixture::new(insecure_test_params(), 13);
    let ev = keyed(&f, &[]);
    let (a, b) = (values(f.params.slots(), 14), values(f.params.slots(), 15));
    let (ca, cb) = (f.encrypt(&a, 16), f.encrypt(&b, 17));
    let prod: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    let top = f.params.max_level();
    // mul_plain with the plaintext at scale q_top keeps the scale exactly after rescale
    let q_top = f.params.q()[top.get()] as f64;
    let pb = f.encoder.encode(&b, top, q_top).unwrap();
    let r = ev.rescale(&ev.mul_plain(&ca, &pb).unwrap()).unwrap();
    assert_eq!(r.level().get(), top.get() - 1);
    assert!((r.scale() - ca.scale()).abs() / ca.scale() < 1e-12);
    check("mul_plain + rescale", &f.decrypt(&r), &prod, 25.0);
    let r = ev.rescale(&ev.mul_relin(&ca, &cb).unwrap()).unwrap();
    check("mul_relin + rescale", &f.decrypt(&r), &prod, 25.0);
    let r = ev
        .rescale(&ev.mul_const(&ca, -1.7, q_top).unwrap())
        .unwrap();
    check(
        "mul_const + rescale",
        &f.decrypt(&r),
        &a.iter().map(|x| -1.7 * x).collect::<Vec<_>>(),
        25.0,
    );
    // a 3-part ciphertext decrypts too
    let r3 = ev.mul(&ca, &cb).unwrap();
    assert_eq!(r3.degree_plus_one(), 3);
    check("mul without relin", &f.decrypt(&r3), &prod, 25.0);
    // depth: square repeatedly down to level 0
    let mut x = ca.clone();
    let mut want = a.clone();
    for _ in 0..top.get() {
        x = ev.rescale(&ev.mul_relin(&x, &x).unwrap()).unwrap();
        want.iter_mut().for_each(|w| *w *= *w);
    }
    assert_eq!(x.level(), 0);
    check("x^(2^4) through every level", &f.decrypt(&x), &want, 22.0);
    assert!(matches!(
        ev.rescale(&x),
        Err(hepeft::Error::LevelExhausted { .. })
    ));
}

#[test]
fn rotations_hoisted_and_conjugation() {
    let f = Fixture::new(insecure_test_params(), 18);
    let slots = f.params.slots() as i64;
    let steps = [1i64, 2, 3, 7, 64, 511, -1, -5, slots - 1, 1000];
    let ev = keyed(&f, &steps);
    let a = values(f.params.slots(), 19);
    let ca = f.encrypt(&a, 20);
    let hoisted = ev.rotate_many(&ca, &steps).unwrap();
    for (&k, h) in steps.iter().zip(&hoisted) {
        let want: Vec<f64> = (0..slots)
            .map(|i| a[(i + k).rem_euclid(slots) as usize])
            .collect();
        let plain = f.decrypt(&ev.rotate(&ca, k).unwrap());
        check(&format!("rotate {k}"), &plain, &want, 24.0);
        let hd = f.decrypt(h);
        check(&format!("hoisted rotate {k}"), &hd, &want, 24.0);
        // hoisted and unhoisted agree to within key-switching noise
        check(&format!("hoisted == unhoisted {k}"), &hd, &plain, 40.0);
    }
    // conjugation on complex slots
    let c: Vec<C64> = a.iter().map(|&x| C64::new(x, 0.5 * x)).collect();
    let pt = f
        .encoder
        .encode_complex(&c, f.params.max_level(), f.params.default_scale())
        .unwrap();
    let ct = Encryptor::new(&f.params, EncryptionKey::Public(&f.pk))
        .unwrap()
        .encrypt(&pt, &mut rng(21))
        .unwrap();
    let conj = ev.conjugate(&ct).unwrap();
    let out = f
        .encoder
        .decode_complex(
            &Decryptor::new(&f.params, &f.sk)
                .unwrap()
                .decrypt(&conj)
                .unwrap(),
        )
        .unwrap();
    let im: Vec<f64> = out.iter().map(|x| x.im).collect();
    check(
        "conjugate (imaginary)",
        &im,
        &c.iter().map(|x| -x.im).collect::<Vec<_>>(),
        24.0,
    );
    // a rotation without its key is an error, not garbage
    assert!(matches!(
        ev.rotate(&ca, 4),
        Err(hepeft::Error::MissingKey { .. })
    ));
}

#[test]
fn mismatches_are_errors() {
    let f = Fixture::new(insecure_test_params(), 22);
    let ev = Evaluator::new(&f.params);
    let a = values(8, 23);
    let ca = f.encrypt(&a, 24);
    // scale mismatch
    let mut other = ca.clone();
    other.set_scale(ca.scale() * 1.5);
    assert!(matches!(
        ev.add(&ca, &other),
        Err(hepeft::Error::ScaleMismatch { .. })
    ));
    // keys from other parameters
    let mut lit = insecure_test_params().literal().clone();
    lit.q = None;
    lit.p = None;
    lit.log_scale = 38;
    let other_params = CkksParams::from_literal(lit).unwrap();
    assert!(Decryptor::new(&other_params, &f.sk).is_err());
    let g = Fixture::new(other_params.clone(), 25);
    assert!(matches!(
        ev.add(&ca, &g.encrypt(&a, 26)),
        Err(hepeft::Error::ParameterMismatch { .. })
    ));
    assert!(Decryptor::new(&f.params, &g.sk).is_err());
    // NaN input
    assert!(f.encoder.encode(&[f64::NAN], Level(0), 1e10).is_err());
    assert!(f
        .encoder
        .encode(&vec![0.0; f.params.slots() + 1], Level(0), 1e10)
        .is_err());
    // secret key Debug is redacted
    assert_eq!(format!("{:?}", f.sk), "SecretKey(<redacted>)");
}

#[test]
fn insecure_parameters_are_refused() {
    let mut lit = insecure_test_params().literal().clone();
    lit.q = None;
    lit.p = None;
    lit.security = Security::Bits128;
    match CkksParams::from_literal(lit) {
        Err(hepeft::Error::InsecureParameters {
            max_log_qp: 109, ..
        }) => {}
        other => panic!("expected refusal, got {other:?}"),
    }
}

#[test]
fn fused_plain_multiply_accumulate_matches_products_and_sums() {
    let f = Fixture::new(insecure_test_params(), 113);
    let ev = keyed(&f, &[]);
    let n = f.params.slots();
    let (a, b, c, d) = (
        values(n, 114),
        values(n, 115),
        values(n, 116),
        values(n, 117),
    );
    let (ca, cc) = (f.encrypt(&a, 118), f.encrypt(&c, 119));
    let top = f.params.max_level();
    let q_top = f.params.q()[top.get()] as f64;
    let (pb, pd) = (
        f.encoder.encode(&b, top, q_top).unwrap(),
        f.encoder.encode(&d, top, q_top).unwrap(),
    );
    let mut acc = ev.mul_plain(&ca, &pb).unwrap();
    ev.mul_plain_accumulate(&mut acc, &cc, &pd).unwrap();
    let want: Vec<f64> = (0..n).map(|i| a[i] * b[i] + c[i] * d[i]).collect();
    check(
        "a*b + c*d (fused)",
        &f.decrypt(&ev.rescale(&acc).unwrap()),
        &want,
        24.0,
    );
    // a wrong accumulator scale is refused
    let mut wrong = ca.clone();
    assert!(ev.mul_plain_accumulate(&mut wrong, &cc, &pd).is_err());
    // an accumulator at another level is refused
    let mut low = ev.rescale(&ev.mul_plain(&ca, &pb).unwrap()).unwrap();
    assert!(ev.mul_plain_accumulate(&mut low, &cc, &pd).is_err());
}

#[test]
fn rerandomize_and_flood_keep_the_message() {
    let f = Fixture::new(insecure_test_params(), 11);
    let ev = Evaluator::new(&f.params);
    let v = values(f.params.slots(), 12);
    let ct = f.encrypt(&v, 13);
    let mut r = rng(14);
    let mut re = ct.clone();
    ev.rerandomize_assign(&mut re, &f.pk, &mut r).unwrap();
    assert_ne!(re.parts()[1].as_words(), ct.parts()[1].as_words());
    check("re-randomized", &f.decrypt(&re), &v, 20.0);
    // sigma = 2^10 on scale 2^40: slot noise about 2^(10 + 5.5 - 40), far below the bound.
    ev.flood_assign(&mut re, 10.0, &mut r).unwrap();
    assert_eq!(re.parts()[1].as_words(), {
        let mut again = ct.clone();
        ev.rerandomize_assign(&mut again, &f.pk, &mut rng(14))
            .unwrap();
        again.parts()[1].as_words().to_vec()
    });
    check("flooded (sigma 2^10)", &f.decrypt(&re), &v, 18.0);
    // Noise that would wrap around Q_l is refused, and so is a non-finite sigma.
    assert!(ev.flood_assign(&mut re, 70.0, &mut r).is_err());
    assert!(ev.flood_assign(&mut re, f64::NAN, &mut r).is_err());
    assert!(!ev.flooding_fits(Level(0), 59.0));
}
