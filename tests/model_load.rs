//! Files: model cards + safetensors, Hugging Face PEFT LoRA, npy features, and the errors
//! for malformed input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;

use hepeft::model::load::{
    features_from_npy_bytes, load_card, load_features_npy, save_adapter, save_features_npy,
    ModelCard, PeftLora, TensorStore, MAX_CARD_BYTES,
};
use hepeft::model::{evaluate, evaluate_batch, zoo, ActivationFn, Adapter, Op};
use hepeft::Error;
use ndarray::{arr1, arr2, Array1, Array2, Array3};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};

/// Owned tensor bytes for `safetensors::serialize`.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32s(shape: &[usize], v: &[f64]) -> Raw {
    Raw {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes: v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect(),
    }
}
fn f64s(shape: &[usize], v: &[f64]) -> Raw {
    Raw {
        dtype: Dtype::F64,
        shape: shape.to_vec(),
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}
/// BF16 by truncation (the test values are exactly representable).
fn bf16s(shape: &[usize], v: &[f64]) -> Raw {
    let bytes = v
        .iter()
        .flat_map(|x| (((*x as f32).to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    Raw {
        dtype: Dtype::BF16,
        shape: shape.to_vec(),
        bytes,
    }
}
/// F16 for small integers and halves, encoded by hand.
fn f16s(shape: &[usize], v: &[f64]) -> Raw {
    let enc = |x: f64| -> u16 {
        if x == 0.0 {
            return 0;
        }
        let sign = if x < 0.0 { 0x8000 } else { 0 };
        let a = x.abs();
        let e = a.log2().floor() as i32;
        let mant = ((a / 2f64.powi(e) - 1.0) * 1024.0).round() as u16;
        sign | (((e + 15) as u16) << 10) | mant
    };
    Raw {
        dtype: Dtype::F16,
        shape: shape.to_vec(),
        bytes: v.iter().flat_map(|x| enc(*x).to_le_bytes()).collect(),
    }
}

fn serialize(tensors: &[(&str, Raw)]) -> Vec<u8> {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, r)| {
            (
                *n,
                TensorView::new(r.dtype, r.shape.clone(), &r.bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn save_and_load_roundtrip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let adapters = [
        zoo::bottleneck(&mut rng, 12, 4, ActivationFn::Gelu, 7, (-4.0, 4.0), 3).unwrap(),
        zoo::two_tap(&mut rng, 5, 7, 2, 4).unwrap(),
        zoo::lora_head(&mut rng, 9, 3, 2).unwrap(),
    ];
    for (i, adapter) in adapters.iter().enumerate() {
        for ext in ["toml", "json"] {
            let card = dir.path().join(format!("a{i}.{ext}"));
            let weights = save_adapter(adapter, &card, Some("test")).unwrap();
            assert!(weights.exists());
            let back = load_card(&card).unwrap();
            if ext == "toml" {
                assert_eq!(&back, adapter, "{ext} roundtrip of adapter {i}");
            } else {
                // serde_json's default float parser may be 1 ulp off for inline numbers
                // (scales, Chebyshev coefficients); tensors are exact.
                assert_adapters_close(&back, adapter);
            }
        }
    }
}

fn assert_adapters_close(a: &Adapter, b: &Adapter) {
    let close = |x: f64, y: f64| (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs());
    assert_eq!(a.inputs(), b.inputs());
    assert_eq!(a.nodes().len(), b.nodes().len());
    for (m, n) in a.nodes().iter().zip(b.nodes()) {
        assert_eq!(
            (&m.name, &m.inputs, m.out_dim),
            (&n.name, &n.inputs, n.out_dim)
        );
        match (&m.op, &n.op) {
            (Op::Poly(p), Op::Poly(q)) => {
                assert_eq!(
                    (p.func, p.lo, p.hi, p.cheb.len()),
                    (q.func, q.lo, q.hi, q.cheb.len())
                );
                assert!(
                    p.cheb.iter().zip(&q.cheb).all(|(x, y)| close(*x, *y)),
                    "{:?} vs {:?}",
                    p.cheb,
                    q.cheb
                );
            }
            (
                Op::LowRank { a, b, scale, bias },
                Op::LowRank {
                    a: a2,
                    b: b2,
                    scale: s2,
                    bias: bias2,
                },
            ) => {
                assert_eq!((a, b, bias), (a2, b2, bias2));
                assert!(close(*scale, *s2));
            }
            (Op::Scale(x), Op::Scale(y)) => assert!(close(*x, *y)),
            (x, y) => assert_eq!(x, y),
        }
    }
}

const CARD: &str = r#"
version = 1
name = "hand-made"
weights = "w.safetensors"

[[inputs]]
name = "cls"
dim = 2

[[inputs]]
name = "mean"
dim = 1

[[nodes]]
name = "norm"
op = "affine"
inputs = ["cls"]
mul = "ln.weight"
add = "ln.bias"

[[nodes]]
name = "down"
op = "linear"
inputs = ["norm"]
weight = "down.weight"
bias = "down.bias"

[[nodes]]
name = "act"
op = "poly"
inputs = ["down"]
interval = [-4.0, 4.0]
coeffs = [0.25, 0.5, 0.125]

[[nodes]]
name = "lora"
op = "low_rank"
inputs = ["cls"]
a = "lora.a"
b = "lora.b"
alpha = 4
bias = "lora.bias"

[[nodes]]
name = "sum"
op = "add"
inputs = ["act", "lora"]

[[nodes]]
name = "both"
op = "concat"
inputs = ["sum", "mean"]

[[nodes]]
name = "out"
op = "scale"
inputs = ["both"]
factor = -1
"#;

fn hand_weights() -> Vec<u8> {
    serialize(&[
        ("ln.weight", f32s(&[2], &[2.0, 0.5])),
        ("ln.bias", f32s(&[2], &[0.0, 1.0])),
        ("down.weight", f64s(&[2, 2], &[1.0, 1.0, 0.0, -1.0])),
        ("down.bias", bf16s(&[2], &[0.5, -0.5])),
        ("lora.a", f16s(&[1, 2], &[1.0, 0.5])),
        ("lora.b", f32s(&[2, 1], &[1.0, -2.0])),
        ("lora.bias", f32s(&[2], &[0.25, 0.25])),
        (
            "unused.int",
            Raw {
                dtype: Dtype::I32,
                shape: vec![1],
                bytes: 7i32.to_le_bytes().to_vec(),
            },
        ),
    ])
}

fn hand_expected(cls: [f64; 2], mean: f64) -> Vec<f64> {
    let norm = [2.0 * cls[0], 0.5 * cls[1] + 1.0];
    let down = [norm[0] + norm[1] + 0.5, -norm[1] - 0.5];
    let act = down.map(|h| 0.25 + 0.5 * h + 0.125 * h * h);
    let ax = cls[0] + 0.5 * cls[1];
    let scale = 4.0; // alpha / r with r = 1
    let lora = [scale * ax + 0.25, -2.0 * scale * ax + 0.25];
    vec![-(act[0] + lora[0]), -(act[1] + lora[1]), -mean]
}

#[test]
fn hand_written_card_matches_hand_computation() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("w.safetensors"), &hand_weights());
    let toml_path = dir.path().join("card.toml");
    write(&toml_path, CARD.as_bytes());
    // The same card in JSON.
    let card = ModelCard::from_toml_str(CARD).unwrap();
    let json_path = dir.path().join("card.json");
    write(
        &json_path,
        card.to_string(hepeft::model::load::CardFormat::Json)
            .unwrap()
            .as_bytes(),
    );
    for path in [&toml_path, &json_path] {
        let adapter = load_card(path).unwrap();
        assert_eq!(adapter.output_dim(), 3);
        let cls = arr1(&[0.5, -1.0]);
        let mean = arr1(&[0.75]);
        let (y, report) = evaluate(&adapter, &[cls.view(), mean.view()]).unwrap();
        assert!(report.is_clean());
        let want = hand_expected([0.5, -1.0], 0.75);
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{y} vs {want:?}");
        }
    }
}

#[test]
fn card_errors_are_reported() {
    let store = TensorStore::from_bytes(&hand_weights()).unwrap();
    assert!(store.names().contains(&"unused.int"));
    assert!(
        matches!(store.matrix("unused.int"), Err(Error::Model { reason }) if reason.contains("I32"))
    );
    assert!(
        matches!(store.vector("down.weight"), Err(Error::Model { .. })),
        "2-D as vector"
    );
    let edit = |from: &str, to: &str| ModelCard::from_toml_str(&CARD.replacen(from, to, 1));
    let build =
        |card: hepeft::Result<ModelCard>| card.and_then(|c| c.to_adapter(Some(&store), None));
    assert!(build(edit("version = 1", "version = 3")).is_err());
    assert!(build(edit("version = 1", "version = 2")).is_ok());
    assert!(
        matches!(edit("factor = -1", "factr = -1"), Err(Error::Format { .. })),
        "unknown field"
    );
    assert!(matches!(
        edit("op = \"affine\"", "op = \"layernorm\""),
        Err(Error::Format { .. })
    ));
    assert!(
        matches!(build(edit("bias = \"down.bias\"", "factor = 2")), Err(Error::Model { reason }) if reason.contains("factor"))
    );
    assert!(
        matches!(build(edit("\"down.weight\"", "\"nope\"")), Err(Error::Model { reason }) if reason.contains("nope"))
    );
    assert!(
        matches!(
            build(edit(
                "inputs = [\"act\", \"lora\"]",
                "inputs = [\"act\", \"out\"]"
            )),
            Err(Error::Model { .. })
        ),
        "forward ref"
    );
    assert!(matches!(
        build(edit("alpha = 4", "alpha = 4\nscale = 1.0")),
        Err(Error::Model { .. })
    ));
    assert!(
        matches!(
            build(edit("coeffs = [0.25, 0.5, 0.125]", "func = \"gelu\"")),
            Err(Error::Model { .. })
        ),
        "func without degree"
    );
    assert!(build(edit(
        "coeffs = [0.25, 0.5, 0.125]",
        "func = \"gelu\"\ndegree = 5"
    ))
    .is_ok());
    assert!(matches!(
        build(edit("\"ln.weight\"", "\"down.weight\"")),
        Err(Error::Model { .. })
    ));
    assert!(matches!(
        edit("[-4.0, 4.0]", "[4.0, -4.0]").and_then(|c| c.to_adapter(Some(&store), None)),
        Err(Error::InvalidValue { .. })
    ));
    assert!(
        ModelCard::from_toml_str(CARD)
            .unwrap()
            .to_adapter(None, None)
            .is_err(),
        "no weights"
    );

    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("card.yaml");
    write(&yaml, CARD.as_bytes());
    assert!(matches!(load_card(&yaml), Err(Error::Format { .. })));
    let big = dir.path().join("big.toml");
    write(&big, &vec![b'#'; MAX_CARD_BYTES as usize + 1]);
    assert!(
        matches!(load_card(&big), Err(Error::Format { reason, .. }) if reason.contains("limit"))
    );
    let missing_weights = dir.path().join("card.toml");
    write(&missing_weights, CARD.as_bytes());
    assert!(matches!(load_card(&missing_weights), Err(Error::Io { .. })));
    assert!(matches!(
        load_card(dir.path().join("absent.toml")),
        Err(Error::Io { .. })
    ));

    // A NaN weight is refused with the tensor's name.
    let nan = serialize(&[("w", f32s(&[1, 1], &[f64::NAN]))]);
    let store = TensorStore::from_bytes(&nan).unwrap();
    assert!(
        matches!(store.matrix("w"), Err(Error::InvalidValue { context, .. }) if context.contains("'w'"))
    );
}

#[test]
fn malformed_safetensors_are_errors() {
    let good = hand_weights();
    for cut in [0, 4, 8, 20, good.len() / 2, good.len() - 1] {
        assert!(
            matches!(
                TensorStore::from_bytes(&good[..cut]),
                Err(Error::Format { .. })
            ),
            "cut at {cut}"
        );
    }
    // A header length far beyond the buffer.
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert!(TensorStore::from_bytes(&huge).is_err());
    // Something else entirely.
    assert!(TensorStore::from_bytes(CARD.as_bytes()).is_err());
    assert!(TensorStore::from_bytes(b"\x93NUMPY\x01\x00").is_err());
}

fn peft_config(extra: &str) -> String {
    format!(
        r#"{{"peft_type": "LORA", "r": 2, "lora_alpha": 8, "target_modules": ["query", "dense"],
            "lora_dropout": 0.1, "bias": "none", "task_type": "SEQ_CLS"{extra}}}"#
    )
}

fn peft_weights() -> Vec<u8> {
    serialize(&peft_weights_tensors())
}

fn peft_weights_tensors() -> Vec<(&'static str, Raw)> {
    vec![
        // With prefix and adapter name, F32.
        (
            "base_model.model.encoder.query.lora_A.default.weight",
            f32s(&[2, 3], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        ),
        (
            "base_model.model.encoder.query.lora_B.default.weight",
            f32s(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
        ),
        // Without prefix or adapter name, F16 / BF16, rank 4 through rank_pattern.
        (
            "pooler.dense.lora_A.weight",
            f16s(
                &[4, 3],
                &[1.0, 0.5, -0.5, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, -1.0],
            ),
        ),
        (
            "pooler.dense.lora_B.weight",
            bf16s(&[2, 4], &[1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0, -0.25]),
        ),
    ]
}

#[test]
fn peft_lora_loads_with_normalised_names() {
    let cfg =
        peft_config(r#", "rank_pattern": {"pooler.dense": 4}, "alpha_pattern": {"dense": 2}"#);
    let peft = PeftLora::from_bytes(&peft_weights(), &cfg).unwrap();
    assert_eq!(
        peft.modules.keys().collect::<Vec<_>>(),
        ["encoder.query", "pooler.dense"]
    );
    assert!(peft.other_tensors.is_empty() && peft.warnings().is_empty());
    // A modules_to_save copy is refused unless the config lists the module, then kept as a
    // replacement of the base module.
    let mut with_saved = peft_weights_tensors();
    with_saved.push((
        "base_model.model.classifier.modules_to_save.default.weight",
        f32s(&[2, 3], &[0.0; 6]),
    ));
    let with_saved = serialize(&with_saved);
    assert!(
        matches!(PeftLora::from_bytes(&with_saved, &cfg), Err(Error::Model { reason }) if reason.contains("modules_to_save"))
    );
    let saved = PeftLora::from_bytes(
        &with_saved,
        &peft_config(r#", "rank_pattern": {"pooler.dense": 4}, "modules_to_save": ["classifier"]"#),
    )
    .unwrap();
    assert_eq!(
        saved.replacements(),
        [(
            "base_model.model.classifier.modules_to_save.default.weight".to_string(),
            "classifier.weight".to_string()
        )]
    );
    let q = peft.get("base_model.model.encoder.query").unwrap();
    assert_eq!((q.rank(), q.in_dim(), q.out_dim(), q.scale), (2, 3, 3, 4.0));
    assert_eq!(q.b, arr2(&[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]));
    let p = peft.get("pooler.dense").unwrap();
    assert_eq!((p.rank(), p.scale), (4, 0.5)); // alpha 2 / r 4
    assert_eq!(p.a.row(0), arr1(&[1.0, 0.5, -0.5]));
    assert_eq!(p.b.row(1), arr1(&[0.0, 1.0, 0.0, -0.25]));
    assert!(
        matches!(peft.get("classifier"), Err(Error::Model { reason }) if reason.contains("encoder.query"))
    );

    // rsLoRA: alpha / sqrt(r).
    let rs = PeftLora::from_bytes(
        &peft_weights(),
        &peft_config(r#", "use_rslora": true, "rank_pattern": {"pooler.dense": 4}"#),
    )
    .unwrap();
    assert!((rs.get("encoder.query").unwrap().scale - 8.0 / 2f64.sqrt()).abs() < 1e-15);
    assert!((rs.get("pooler.dense").unwrap().scale - 4.0).abs() < 1e-15);

    // Without the rank_pattern, the rank-4 module contradicts r = 2.
    assert!(
        matches!(PeftLora::from_bytes(&peft_weights(), &peft_config("")), Err(Error::Model { reason }) if reason.contains("rank"))
    );
}

#[test]
fn card_uses_peft_module() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("adapter_model.safetensors"),
        &peft_weights(),
    );
    write(
        &dir.path().join("adapter_config.json"),
        peft_config(r#", "rank_pattern": {"pooler.dense": 4}"#).as_bytes(),
    );
    let head = serialize(&[(
        "head.weight",
        f64s(&[3, 3], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
    )]);
    write(&dir.path().join("head.safetensors"), &head);
    let card = r#"{
        "version": 1,
        "weights": "head.safetensors",
        "peft": {"weights": "adapter_model.safetensors", "config": "adapter_config.json"},
        "inputs": [{"name": "x", "dim": 3}],
        "nodes": [
            {"name": "base", "op": "linear", "inputs": ["x"], "weight": "head.weight"},
            {"name": "delta", "op": "lora", "inputs": ["x"], "peft_module": "encoder.query"},
            {"name": "y", "op": "add", "inputs": ["base", "delta"]}
        ]
    }"#;
    let path = dir.path().join("card.json");
    write(&path, card.as_bytes());
    let adapter = load_card(&path).unwrap();
    assert!(matches!(adapter.nodes()[1].op, Op::LowRank { scale, .. } if scale == 4.0));
    let x = arr1(&[1.0, 2.0, 3.0]);
    let (y, _) = evaluate(&adapter, &[x.view()]).unwrap();
    // A x = [1, 2]; B A x = [1, 2, 3]; y = x + 4 * [1, 2, 3].
    assert_eq!(y, arr1(&[5.0, 10.0, 15.0]));
    // The same card without its [peft] section cannot build the lora node.
    let no_peft = ModelCard::from_json_str(card).map(|mut c| {
        c.peft = None;
        c
    });
    let store = TensorStore::from_bytes(&head).unwrap();
    assert!(matches!(
        no_peft.unwrap().to_adapter(Some(&store), None),
        Err(Error::Model { .. })
    ));
    // PeftLora::load_dir finds the standard file names.
    assert_eq!(PeftLora::load_dir(dir.path()).unwrap().modules.len(), 2);
}

#[test]
fn peft_errors() {
    let cfg = peft_config(r#", "rank_pattern": {"pooler.dense": 4}"#);
    let only_a = serialize(&[("m.lora_A.weight", f32s(&[1, 2], &[1.0, 1.0]))]);
    assert!(
        matches!(PeftLora::from_bytes(&only_a, &cfg), Err(Error::Model { reason }) if reason.contains("lora_B"))
    );
    let dup = serialize(&[
        ("base_model.model.m.lora_A.weight", f32s(&[2, 2], &[1.0; 4])),
        ("m.lora_A.weight", f32s(&[2, 2], &[1.0; 4])),
        ("m.lora_B.weight", f32s(&[2, 2], &[1.0; 4])),
    ]);
    assert!(
        matches!(PeftLora::from_bytes(&dup, &cfg), Err(Error::Model { reason }) if reason.contains("both"))
    );
    let two_adapters = serialize(&[
        ("m.lora_A.default.weight", f32s(&[2, 2], &[1.0; 4])),
        ("m.lora_B.default.weight", f32s(&[2, 2], &[1.0; 4])),
        ("n.lora_A.other.weight", f32s(&[2, 2], &[1.0; 4])),
        ("n.lora_B.other.weight", f32s(&[2, 2], &[1.0; 4])),
    ]);
    assert!(
        matches!(PeftLora::from_bytes(&two_adapters, &cfg), Err(Error::Model { reason }) if reason.contains("several"))
    );
    let conv = serialize(&[
        ("c.lora_A.weight", f32s(&[2, 1, 1, 1], &[1.0; 2])),
        ("c.lora_B.weight", f32s(&[1, 2], &[1.0; 2])),
    ]);
    assert!(matches!(
        PeftLora::from_bytes(&conv, &cfg),
        Err(Error::Model { .. })
    ));
    let none = serialize(&[("w", f32s(&[1], &[1.0]))]);
    assert!(matches!(
        PeftLora::from_bytes(&none, &cfg),
        Err(Error::Model { .. })
    ));
    let w = peft_weights();
    assert!(matches!(
        PeftLora::from_bytes(&w, &peft_config(r#", "use_dora": true"#)),
        Err(Error::Model { .. })
    ));
    assert!(matches!(
        PeftLora::from_bytes(&w, r#"{"r": 2}"#),
        Err(Error::Format { .. })
    ));
    assert!(matches!(
        PeftLora::from_bytes(&w, "not json"),
        Err(Error::Format { .. })
    ));
    assert!(matches!(
        PeftLora::from_bytes(&w, r#"{"peft_type": "IA3", "r": 2, "lora_alpha": 1}"#),
        Err(Error::Model { .. })
    ));
    assert!(matches!(
        PeftLora::from_bytes(&w[..w.len() - 3], &cfg),
        Err(Error::Format { .. })
    ));
}

#[test]
fn npy_features() {
    let dir = tempfile::tempdir().unwrap();
    let m = arr2(&[[0.1, -2.5, 3.0], [1e-300, 4.0, -0.0]]);
    let p64 = dir.path().join("f64.npy");
    save_features_npy(&p64, m.view()).unwrap();
    assert_eq!(load_features_npy(&p64).unwrap(), m);
    // Non-standard layout is written correctly too.
    let t = m.t();
    let pt = dir.path().join("t.npy");
    save_features_npy(&pt, t).unwrap();
    assert_eq!(load_features_npy(&pt).unwrap(), t.to_owned());

    let p32 = dir.path().join("f32.npy");
    let m32 = arr2(&[[0.5f32, -1.25], [3.0, 1e-3]]);
    ndarray_npy::write_npy(&p32, &m32).unwrap();
    assert_eq!(load_features_npy(&p32).unwrap(), m32.mapv(f64::from));

    let p1 = dir.path().join("one.npy");
    ndarray_npy::write_npy(&p1, &arr1(&[1.0f64, 2.0, 3.0])).unwrap();
    assert_eq!(load_features_npy(&p1).unwrap(), arr2(&[[1.0, 2.0, 3.0]]));

    // Batch evaluation straight from loaded features.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let probe = zoo::linear_probe(&mut rng, 3, 2).unwrap();
    let feats = load_features_npy(&p64).unwrap();
    assert_eq!(
        evaluate_batch(&probe, &[feats.view()]).unwrap().0.dim(),
        (2, 2)
    );

    // Errors.
    let nan = dir.path().join("nan.npy");
    ndarray_npy::write_npy(&nan, &arr2(&[[1.0f32, f32::NAN]])).unwrap();
    assert!(matches!(
        load_features_npy(&nan),
        Err(Error::InvalidValue { .. })
    ));
    assert!(matches!(
        save_features_npy(dir.path().join("x.npy"), arr2(&[[f64::INFINITY]]).view()),
        Err(Error::InvalidValue { .. })
    ));
    let p3 = dir.path().join("3d.npy");
    ndarray_npy::write_npy(&p3, &Array3::<f64>::zeros((2, 2, 2))).unwrap();
    assert!(matches!(load_features_npy(&p3), Err(Error::Format { .. })));
    let pi = dir.path().join("int.npy");
    ndarray_npy::write_npy(&pi, &Array1::<i64>::zeros(3)).unwrap();
    assert!(matches!(load_features_npy(&pi), Err(Error::Format { .. })));
    let pe = dir.path().join("empty.npy");
    ndarray_npy::write_npy(&pe, &Array2::<f64>::zeros((0, 3))).unwrap();
    assert!(matches!(
        load_features_npy(&pe),
        Err(Error::InvalidValue { .. })
    ));
    let bytes = std::fs::read(&p64).unwrap();
    for cut in [0, 5, 20, bytes.len() - 1] {
        assert!(
            matches!(
                features_from_npy_bytes(&bytes[..cut]),
                Err(Error::Format { .. })
            ),
            "cut {cut}"
        );
    }
    let mut extra = bytes.clone();
    extra.extend_from_slice(&[0; 8]);
    assert!(matches!(
        features_from_npy_bytes(&extra),
        Err(Error::Format { .. })
    ));
    // A header claiming a huge shape is refused before allocating it.
    let mut lying = bytes.clone();
    let pat = b"(2, 3)}";
    let at = lying.windows(pat.len()).position(|w| w == pat).unwrap();
    let forged = b"(99999999999, 3)}";
    let grow = forged.len() - pat.len();
    assert!(
        lying[at + pat.len()..at + pat.len() + grow]
            .iter()
            .all(|&b| b == b' '),
        "header padding"
    );
    lying.splice(at..at + pat.len() + grow, forged.iter().copied());
    assert_eq!(lying.len(), bytes.len());
    assert!(features_from_npy_bytes(&lying).is_err());
    assert!(features_from_npy_bytes(CARD.as_bytes()).is_err());
    assert!(matches!(
        load_features_npy(dir.path().join("absent.npy")),
        Err(Error::Io { .. })
    ));
}
