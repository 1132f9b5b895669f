//! Hostile input: every reader, fed arbitrary bytes or a valid file with mutations, returns
//! an error (or a valid object) and never panics or allocates out of proportion (issue 8).
//!
//! Mutated envelopes are re-sealed (their checksum recomputed), so that the mutation
//! reaches the payload parser instead of stopping at the checksum. The same readers have
//! `cargo fuzz` targets in `fuzz/` (see docs/fuzzing.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use hepeft::ckks::serialize::{params_from_bytes, params_to_bytes};
use hepeft::ckks::*;
use hepeft::io::format::{peek_header, read_envelope, FileKind, CHECKSUM_LEN, HEADER_LEN};
use hepeft::model::load::{features_from_npy_bytes, ModelCard, PeftLora, TensorStore};
use hepeft::Error;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// Recomputes the trailing checksum of an envelope whose header or payload was mutated.
fn reseal(file: &mut [u8]) {
    if file.len() < HEADER_LEN + CHECKSUM_LEN {
        return;
    }
    let body = file.len() - CHECKSUM_LEN;
    let sum = Sha256::digest(&file[..body]);
    file[body..].copy_from_slice(&sum[..CHECKSUM_LEN]);
}

struct Valid {
    params: CkksParams,
    files: Vec<(&'static str, Vec<u8>)>,
}

fn valid() -> &'static Valid {
    static V: OnceLock<Valid> = OnceLock::new();
    V.get_or_init(|| {
        let params = insecure_test_params();
        let f = Fixture::new(params.clone(), 5);
        let kg = KeyGenerator::new(&params);
        let g = galois_element_for_rotation(&params, 1);
        let evk = kg
            .gen_evaluation_keys(&f.sk, &[g], true, &mut rng(6))
            .unwrap()
            .with_public_key(f.pk.clone())
            .unwrap();
        let ct = f.encrypt(&values(8, 1), 2);
        let sym = Encryptor::new(&params, EncryptionKey::Secret(&f.sk))
            .unwrap()
            .encrypt(
                &f.encoder
                    .encode(&values(8, 3), params.max_level(), params.default_scale())
                    .unwrap(),
                &mut rng(4),
            )
            .unwrap();
        let bundle = CiphertextBundle {
            digest: params.digest(),
            items: vec![ct.clone(), sym],
        };
        let files = vec![
            ("params", params_to_bytes(&params).unwrap()),
            ("secret", to_bytes(&params, &f.sk).unwrap()),
            ("public", to_bytes(&params, &f.pk).unwrap()),
            ("evk", to_bytes(&params, &evk).unwrap()),
            ("ct", to_bytes(&params, &ct).unwrap()),
            ("bundle", to_bytes(&params, &bundle).unwrap()),
        ];
        Valid { params, files }
    })
}

/// Parses `bytes` as the object `name`; the result must be an error or an object.
fn parse(name: &str, params: &CkksParams, bytes: &[u8]) -> Result<(), Error> {
    match name {
        "params" => params_from_bytes(bytes).map(drop),
        "secret" => from_bytes::<SecretKey>(params, bytes).map(drop),
        "public" => from_bytes::<PublicKey>(params, bytes).map(drop),
        "evk" => from_bytes::<EvaluationKeys>(params, bytes).map(drop),
        "ct" => from_bytes::<Ciphertext>(params, bytes).map(drop),
        "bundle" => from_bytes::<CiphertextBundle>(params, bytes).map(drop),
        _ => unreachable!(),
    }
}

#[test]
fn valid_files_parse() {
    let v = valid();
    for (name, bytes) in &v.files {
        parse(name, &v.params, bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn unreduced_coefficient_is_refused() {
    let v = valid();
    let (_, ct) = v.files.iter().find(|(n, _)| *n == "ct").unwrap();
    // Payload: count u64, scale f64, parts u8, seeded u8, then the first polynomial's level
    // u32 and extended u8, then its words: set the first word to q_0 itself.
    let mut bad = ct.clone();
    let at = HEADER_LEN + 8 + 8 + 1 + 1 + 4 + 1;
    bad[at..at + 8].copy_from_slice(&v.params.q()[0].to_le_bytes());
    reseal(&mut bad);
    let e = parse("ct", &v.params, &bad).unwrap_err();
    assert!(e.to_string().contains("not reduced"), "{e}");
}

#[test]
fn forged_lengths_are_refused_before_allocation() {
    let v = valid();
    for (name, bytes) in &v.files {
        // Payload length field claims 2^40 bytes.
        let mut bad = bytes.clone();
        bad[48..56].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = parse(name, &v.params, &bad).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{name}: {e}");
    }
    // A ciphertext bundle that announces 2^20 ciphertexts but holds none.
    let mut p = hepeft::io::format::PayloadWriter::new();
    p.u64(1 << 20);
    let mut file = Vec::new();
    hepeft::io::format::write_envelope(
        &mut file,
        FileKind::Ciphertext,
        &v.params.digest(),
        p.as_slice(),
    )
    .unwrap();
    assert!(parse("bundle", &v.params, &file).is_err());
}

#[test]
fn wrong_parameters_are_refused() {
    let v = valid();
    let other = deep_test_params();
    for (name, bytes) in v.files.iter().filter(|(n, _)| *n != "params") {
        let e = parse(name, &other, bytes).unwrap_err();
        assert!(matches!(e, Error::ParameterMismatch { .. }), "{name}: {e}");
    }
}

#[test]
fn secret_key_errors_carry_no_key_material() {
    let v = valid();
    let (_, sk) = v.files.iter().find(|(n, _)| *n == "secret").unwrap();
    let mut bad = sk.clone();
    let at = HEADER_LEN + 4 + 17;
    bad[at] = 7;
    reseal(&mut bad);
    let e = parse("secret", &v.params, &bad).unwrap_err().to_string();
    assert!(e.contains("outside"), "{e}");
    // The message names the problem, not the coefficients: no run of key bytes appears.
    let key_bytes = &sk[HEADER_LEN + 4..HEADER_LEN + 4 + 16];
    let hexed: String = key_bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!e.contains(&hexed));
    let sk_obj: SecretKey = from_bytes(&v.params, sk).unwrap();
    assert_eq!(format!("{sk_obj:?}"), "SecretKey(<redacted>)");
}

fn small_safetensors() -> Vec<u8> {
    let mut s = TensorStore::new();
    s.insert("w", vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .unwrap();
    s.insert("b", vec![2], vec![0.5, -0.5]).unwrap();
    s.to_bytes().unwrap()
}

fn small_npy() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    let m = ndarray::Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64);
    hepeft::model::load::save_features_npy(&p, m.view()).unwrap();
    std::fs::read(p).unwrap()
}

const CARD: &str = r#"
version = 1
name = "t"
weights = "w.safetensors"

[[inputs]]
name = "x"
dim = 3

[[nodes]]
name = "y"
op = "linear"
inputs = ["x"]
weight = "w"
bias = "b"
"#;

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    if !bytes.is_empty() {
        for &(i, b) in edits {
            let n = bytes.len();
            bytes[i % n] ^= b | 1;
        }
    }
    if let Some(c) = cut {
        bytes.truncate(c % (bytes.len() + 1));
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let v = valid();
        for name in ["params", "secret", "public", "evk", "ct", "bundle"] {
            prop_assert!(parse(name, &v.params, &bytes).is_err());
        }
        let _ = peek_header(&bytes);
        for kind in FileKind::ALL {
            let _ = read_envelope(&mut bytes.as_slice(), kind, 1 << 20);
        }
        let _ = TensorStore::from_bytes(&bytes);
        let _ = features_from_npy_bytes(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = CkksParams::from_toml(&text);
        let _ = ModelCard::from_toml_str(&text);
        let _ = ModelCard::from_json_str(&text);
        let _ = PeftLora::from_bytes(&bytes, &text);
    }

    #[test]
    fn mutated_envelopes_are_refused_or_valid(
        which in 0usize..6,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<usize>()),
        sealed in any::<bool>(),
    ) {
        let v = valid();
        let (name, bytes) = &v.files[which];
        let mut m = mutate(bytes.clone(), &edits, cut);
        if sealed {
            reseal(&mut m);
        }
        // Unsealed mutations must fail (checksum or length); sealed ones may only parse if
        // the mutation hit a field with slack (a scale, a seed) and then parse to an object.
        let r = parse(name, &v.params, &m);
        if !sealed {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn mutated_model_files_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let st = mutate(small_safetensors(), &edits, cut);
        let _ = TensorStore::from_bytes(&st);
        let npy = mutate(small_npy(), &edits, cut);
        let _ = features_from_npy_bytes(&npy);
        let card = mutate(CARD.as_bytes().to_vec(), &edits, cut);
        let text = String::from_utf8_lossy(&card);
        if let Ok(c) = ModelCard::from_toml_str(&text) {
            let _ = c.to_string(hepeft::model::load::CardFormat::Json);
        }
        let params = mutate(
            std::fs::read("params/CKKS_N13_QP212_128.toml").unwrap(),
            &edits,
            cut,
        );
        let _ = CkksParams::from_toml(&String::from_utf8_lossy(&params));
    }
}

/// Secret keys are written with mode 0600 whatever the umask; other objects are not.
#[cfg(unix)]
#[test]
fn secret_key_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let v = valid();
    let f = Fixture::new(v.params.clone(), 9);
    let dir = tempfile::tempdir().unwrap();
    let sk_path = dir.path().join("secret.key");
    let pk_path = dir.path().join("public.key");
    save(&sk_path, &v.params, &f.sk).unwrap();
    save(&pk_path, &v.params, &f.pk).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sk_path), 0o600);
    assert_ne!(mode(&pk_path), 0o600, "only secrets are restricted");
    // And it reads back.
    let back: SecretKey = load(&sk_path, &v.params).unwrap();
    assert_eq!(format!("{back:?}"), "SecretKey(<redacted>)");
}

/// Regression for the `model_files` fuzz finding (docs/fuzzing.md): an npy preamble that
/// declares a 4 GiB header in a 25-byte file made `ndarray-npy` allocate 4 GiB before
/// noticing the file was short. It is now refused from the preamble.
#[test]
fn npy_header_length_is_checked_before_allocation() {
    let input: [u8; 25] = [
        147, 78, 85, 77, 80, 89, 3, 0, 0, 0, 0, 253, 0, 0, 0, 0, 61, 91, 46, 13, 91, 46, 113, 113,
        113,
    ];
    let e = features_from_npy_bytes(&input).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    // Version 1 (u16 length) and an unknown version.
    let mut v1 = b"\x93NUMPY\x01\x00\xff\xff{".to_vec();
    assert!(features_from_npy_bytes(&v1).is_err());
    v1[6] = 9;
    let e = features_from_npy_bytes(&v1).unwrap_err().to_string();
    assert!(e.contains("version"), "{e}");
    // A valid file still reads.
    assert_eq!(features_from_npy_bytes(&small_npy()).unwrap().dim(), (3, 4));
}

/// Issue 20: weights, biases and polynomial coefficients the scale and modulus cannot
/// carry are refused by `Plan::prepare`, naming the layer and the value, instead of
/// wrapping silently; a non-finite weight is refused with its position.
#[test]
fn out_of_range_weights_and_coefficients_are_refused() {
    use hepeft::model::activation::Activation;
    use hepeft::model::{AdapterBuilder, Op};
    use hepeft::plan::{Plan, PlanOptions};
    use ndarray::Array2;
    let params = CkksParams::preset("CKKS_N13_QP200_128").unwrap();
    let linear = |w: Array2<f64>| {
        let mut b = AdapterBuilder::new();
        let x = b.input("x", w.ncols()).unwrap();
        b.node(
            "head",
            Op::Linear {
                weight: w,
                bias: None,
            },
            &[x],
        )
        .unwrap();
        b.build().unwrap()
    };
    let prepare = |a: &hepeft::model::Adapter| {
        Plan::compile(a, &params, PlanOptions::default())
            .unwrap()
            .prepare()
            .map(|_| ())
    };
    // Ordinary weights pass.
    prepare(&linear(Array2::from_elem((4, 64), 0.1))).unwrap();
    // One weight of 1e6; all weights 100 through a second layer; a byte flip's -1.7e19.
    let mut w = Array2::from_elem((4, 64), 0.1);
    w[[2, 5]] = 1e6;
    let e = prepare(&linear(w)).unwrap_err().to_string();
    assert!(
        e.contains("layer 'head'") && e.contains("weight[2][5] = 1e6"),
        "{e}"
    );
    let mut w = Array2::from_elem((4, 64), 0.1);
    w[[0, 0]] = -1.7e19;
    let e = prepare(&linear(w)).unwrap_err().to_string();
    assert!(e.contains("-1.7e19"), "{e}");
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 384).unwrap();
    let h = b
        .node(
            "down",
            Op::Linear {
                weight: Array2::from_elem((16, 384), 100.0),
                bias: None,
            },
            &[x],
        )
        .unwrap();
    b.node(
        "up",
        Op::Linear {
            weight: Array2::from_elem((4, 16), 100.0),
            bias: None,
        },
        &[h],
    )
    .unwrap();
    let e = prepare(&b.build().unwrap()).unwrap_err().to_string();
    assert!(e.contains("values too large to encrypt"), "{e}");
    // A non-finite weight (the model layer refuses it already, or prepare does).
    let mut w = Array2::from_elem((2, 8), 0.1);
    w[[1, 3]] = f64::NAN;
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 8).unwrap();
    let built = b
        .node(
            "head",
            Op::Linear {
                weight: w,
                bias: None,
            },
            &[x],
        )
        .and_then(|_| b.build());
    if let Ok(a) = built {
        let e = prepare(&a).unwrap_err().to_string();
        assert!(e.contains("weight[1][3] is NaN"), "{e}");
    }
    // coeffs = [0.25, 0.5, 1e10] on [-4, 4].
    let act = Activation::from_power_coeffs(&[0.25, 0.5, 1e10], -4.0, 4.0).unwrap();
    let mut b = AdapterBuilder::new();
    let x = b.input("x", 8).unwrap();
    b.node("act", Op::Poly(act), &[x]).unwrap();
    let deep = deep_test_params();
    let e = Plan::compile(&b.build().unwrap(), &deep, PlanOptions::default())
        .unwrap()
        .prepare()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    // (a degree-2 activation compiles to one square stage since the fusion pass; the refusal
    // names the layer either way)
    assert!(
        e.contains("layer 'act'") && (e.contains("Chebyshev") || e.contains("square")),
        "{e}"
    );
}
