//! Presets, security checks and full-size roundtrips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use hepeft::ckks::*;

#[test]
fn presets_load_and_are_frozen() {
    // Pinned digests: a change to prime generation or to the digest must be deliberate.
    let pinned = [
        ("CKKS_N13_QP200_128", "6bd5ab86266a931b"),
        ("CKKS_N13_QP212_128", "ea957cabfd12d027"),
        ("CKKS_N14_QP430_128", "f8f685081c3ba742"),
        ("CKKS_N15_QP870_128", "04d79284159b5e34"),
        ("CKKS_N16_QP1720_128", "45628b8a8072012b"),
    ];
    assert_eq!(PRESETS.len(), pinned.len());
    for (name, digest) in pinned {
        let p = CkksParams::preset(name).unwrap();
        assert_eq!(p.digest_short(), digest, "{name}");
        assert_eq!(p.security(), Security::Bits128);
        let bound = hepeft::ckks::security::max_log_qp(p.log_n(), Security::Bits128).unwrap();
        assert!(
            p.log_qp() <= bound as f64,
            "{name}: {} > {bound}",
            p.log_qp()
        );
        // the sizes alone regenerate the same primes
        let mut lit = p.literal().clone();
        lit.q = None;
        lit.p = None;
        assert_eq!(
            CkksParams::from_literal(lit).unwrap().digest(),
            p.digest(),
            "{name}"
        );
        // TOML roundtrip
        assert_eq!(
            CkksParams::from_toml(&p.to_toml().unwrap())
                .unwrap()
                .digest(),
            p.digest()
        );
    }
    assert!(CkksParams::preset("nope").is_err());
}

#[test]
fn tampered_frozen_primes_are_refused() {
    let p = CkksParams::preset("CKKS_N13_QP200_128").unwrap();
    let mut lit = p.literal().clone();
    if let Some(q) = lit.q.as_mut() {
        q[1] += 2; // no longer prime / NTT-friendly
    }
    assert!(CkksParams::from_literal(lit).is_err());
    let mut lit = p.literal().clone();
    lit.q = None; // only one list given
    assert!(CkksParams::from_literal(lit).is_err());
    // a sparse secret needs the explicit opt-out
    let mut lit = p.literal().clone();
    lit.secret = SecretDistribution::SparseTernary { hamming_weight: 64 };
    assert!(CkksParams::from_literal(lit).is_err());
    // dnum too small for the special modulus
    let mut lit = p.literal().clone();
    lit.dnum = Some(1);
    assert!(CkksParams::from_literal(lit).is_err());
}

#[test]
fn security_levels_are_checked() {
    let base = CkksParams::preset("CKKS_N14_QP430_128")
        .unwrap()
        .literal()
        .clone();
    for (sec, ok) in [
        (Security::Bits128, true),
        (Security::Bits192, false),
        (Security::Bits256, false),
        (Security::Unchecked, true),
    ] {
        let mut lit = base.clone();
        lit.security = sec;
        assert_eq!(CkksParams::from_literal(lit).is_ok(), ok, "{sec:?}");
    }
}

fn roundtrip_at(name: &str) {
    let params = CkksParams::preset(name).unwrap();
    let f = Fixture::new(params.clone(), 5);
    let v = values(params.slots(), 6);
    let ct = f.encrypt(&v, 7);
    let stats = PrecisionStats::compare(&f.decrypt(&ct), &v);
    println!("{name}: fresh public-key roundtrip {stats}");
    // 25 bits at scale 2^40 (the bar of issue #3); one bit less per bit of scale below that
    let bar = params.default_scale().log2() - 15.0;
    assert!(stats.min_bits >= bar, "{name}: {stats}");
    // one multiplication and one rotation at the real size
    let keys = KeyGenerator::new(&params)
        .gen_evaluation_keys(
            &f.sk,
            &[galois_element_for_rotation(&params, 3)],
            true,
            &mut rng(8),
        )
        .unwrap();
    let ev = Evaluator::with_keys(&params, std::sync::Arc::new(keys)).unwrap();
    let sq = ev.rescale(&ev.mul_relin(&ct, &ct).unwrap()).unwrap();
    let want: Vec<f64> = v.iter().map(|x| x * x).collect();
    let stats = PrecisionStats::compare(&f.decrypt(&sq), &want);
    println!("{name}: square {stats}");
    assert!(stats.min_bits >= 20.0, "{name}: {stats}");
    let r = ev.rotate(&ct, 3).unwrap();
    let slots = params.slots();
    let want: Vec<f64> = (0..slots).map(|i| v[(i + 3) % slots]).collect();
    let stats = PrecisionStats::compare(&f.decrypt(&r), &want);
    println!("{name}: rotate {stats}");
    assert!(stats.min_bits >= 20.0, "{name}: {stats}");
}

#[test]
fn secure_n13_roundtrip() {
    roundtrip_at("CKKS_N13_QP200_128");
    roundtrip_at("CKKS_N13_QP212_128");
}

#[test]
#[ignore = "full size: run with --ignored"]
fn full_size_roundtrips() {
    for name in [
        "CKKS_N14_QP430_128",
        "CKKS_N15_QP870_128",
        "CKKS_N16_QP1720_128",
    ] {
        roundtrip_at(name);
    }
}
