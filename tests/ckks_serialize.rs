//! Keys, ciphertexts and parameters survive serialization; malformed input is an error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use hepeft::ckks::serialize::{params_from_bytes, params_to_bytes};
use hepeft::ckks::*;
use proptest::prelude::*;
use std::sync::Arc;

fn small_params() -> CkksParams {
    let mut lit = insecure_test_params().literal().clone();
    lit.log_n = 10;
    lit.q = None;
    lit.p = None;
    CkksParams::from_literal(lit).unwrap()
}

#[test]
fn keys_and_ciphertexts_roundtrip() {
    let params = small_params();
    let f = Fixture::new(params.clone(), 1);
    let kg = KeyGenerator::new(&params);
    let g = galois_element_for_rotation(&params, 1);
    let keys = kg
        .gen_evaluation_keys(&f.sk, &[g], true, &mut rng(2))
        .unwrap();

    // secret key
    let sk2: SecretKey = from_bytes(&params, &to_bytes(&params, &f.sk).unwrap()).unwrap();
    // public key (seeded: about half the size of two polynomials)
    let pk_bytes = to_bytes(&params, &f.pk).unwrap();
    let pk2: PublicKey = from_bytes(&params, &pk_bytes).unwrap();
    let poly_bytes = (params.max_level().primes() + params.p().len()) * params.n() * 8;
    assert!(
        pk_bytes.len() < poly_bytes + 200,
        "public key is stored seeded"
    );
    // evaluation keys (seeded)
    let ek_bytes = to_bytes(&params, &keys).unwrap();
    let keys2: EvaluationKeys = from_bytes(&params, &ek_bytes).unwrap();
    assert_eq!(keys2.galois_elements(), vec![g]);
    assert!(ek_bytes.len() < keys.stored_bytes() + 1000);

    let v = values(params.slots(), 3);
    let pt = f
        .encoder
        .encode(&v, params.max_level(), params.default_scale())
        .unwrap();
    // encrypt with the deserialized public key, evaluate with deserialized keys, decrypt with
    // the deserialized secret key
    let ct = Encryptor::new(&params, EncryptionKey::Public(&pk2))
        .unwrap()
        .encrypt(&pt, &mut rng(4))
        .unwrap();
    let ct2: Ciphertext = from_bytes(&params, &to_bytes(&params, &ct).unwrap()).unwrap();
    let ev = Evaluator::with_keys(&params, Arc::new(keys2)).unwrap();
    let rotated = ev
        .rotate(&ev.rescale(&ev.mul_relin(&ct2, &ct2).unwrap()).unwrap(), 1)
        .unwrap();
    let back: Ciphertext = from_bytes(&params, &to_bytes(&params, &rotated).unwrap()).unwrap();
    let out = f
        .encoder
        .decode(
            &Decryptor::new(&params, &sk2)
                .unwrap()
                .decrypt(&back)
                .unwrap(),
        )
        .unwrap();
    let slots = params.slots();
    let want: Vec<f64> = (0..slots).map(|i| v[(i + 1) % slots].powi(2)).collect();
    let stats = PrecisionStats::compare(&out, &want);
    assert!(stats.min_bits > 20.0, "{stats}");

    // a seeded symmetric ciphertext is stored at about half size
    let sym = Encryptor::new(&params, EncryptionKey::Secret(&f.sk))
        .unwrap()
        .encrypt(&pt, &mut rng(5))
        .unwrap();
    let sym_bytes = to_bytes(&params, &sym).unwrap();
    let full_bytes = to_bytes(&params, &ct).unwrap();
    assert!(
        sym_bytes.len() * 2 < full_bytes.len() + 400,
        "{} vs {}",
        sym_bytes.len(),
        full_bytes.len()
    );
    let sym2: Ciphertext = from_bytes(&params, &sym_bytes).unwrap();
    let out = f
        .encoder
        .decode(
            &Decryptor::new(&params, &f.sk)
                .unwrap()
                .decrypt(&sym2)
                .unwrap(),
        )
        .unwrap();
    assert!(PrecisionStats::compare(&out, &v).min_bits > 25.0);

    // bundle
    let bundle = CiphertextBundle {
        digest: params.digest(),
        items: vec![ct.clone(), sym.clone()],
    };
    let b2: CiphertextBundle = from_bytes(&params, &to_bytes(&params, &bundle).unwrap()).unwrap();
    assert_eq!(b2.items.len(), 2);

    // parameters
    let p2 = params_from_bytes(&params_to_bytes(&params).unwrap()).unwrap();
    assert_eq!(p2.digest(), params.digest());
}

#[test]
fn mismatched_and_foreign_files_are_errors() {
    let params = small_params();
    let f = Fixture::new(params.clone(), 6);
    let ct = f.encrypt(&values(8, 7), 8);
    let bytes = to_bytes(&params, &ct).unwrap();
    // wrong kind
    assert!(from_bytes::<SecretKey>(&params, &bytes).is_err());
    // other parameters
    let mut lit = params.literal().clone();
    lit.log_scale = 38;
    let other = CkksParams::from_literal(lit).unwrap();
    assert!(matches!(
        from_bytes::<Ciphertext>(&other, &bytes),
        Err(hepeft::Error::ParameterMismatch { .. })
    ));
    // every truncation
    for cut in [0, 10, 56, 100, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            from_bytes::<Ciphertext>(&params, &bytes[..cut]).is_err(),
            "cut {cut}"
        );
    }
    // a foreign file
    assert!(from_bytes::<Ciphertext>(&params, b"PK\x03\x04 this is a zip file").is_err());
    // an unreduced coefficient with a valid checksum is still refused
    let mut w = hepeft::io::PayloadWriter::new();
    w.u64(1).f64(ct.scale()).u8(2).u8(0);
    for p in ct.parts() {
        w.u32(p.level() as u32).u8(0);
        let mut words = p.as_words().to_vec();
        words[5] = u64::MAX;
        w.u64_slice(&words);
    }
    let mut forged = Vec::new();
    hepeft::io::write_envelope(
        &mut forged,
        hepeft::io::FileKind::Ciphertext,
        &params.digest(),
        w.as_slice(),
    )
    .unwrap();
    let err = from_bytes::<Ciphertext>(&params, &forged)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not reduced"), "{err}");
    // secret keys: files are written 0600
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.key");
    save(&path, &params, &f.sk).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let sk: SecretKey = load(&path, &params).unwrap();
    assert_eq!(sk.params_digest(), params.digest());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let params = small_params();
        let _ = from_bytes::<Ciphertext>(&params, &bytes);
        let _ = from_bytes::<EvaluationKeys>(&params, &bytes);
        let _ = from_bytes::<SecretKey>(&params, &bytes);
        let _ = from_bytes::<PublicKey>(&params, &bytes);
        let _ = params_from_bytes(&bytes);
    }
}
