//! Model cards (TOML and JSON), safetensors weights, PEFT checkpoints and npy features,
//! fuzzed structure-aware: valid files are built once and damaged by the input.
//!
//! Input: byte 0 selects the file (low 3 bits: 0 safetensors, 1 npy, 2 TOML card, 3 JSON
//! card, 4 PEFT checkpoint, 5..7 raw input to every reader) and truncation (0x40); the
//! rest is a list of 5-byte edits `(position u32 LE, xor u8)`.
#![no_main]
use hepeft::model::load::{
    features_from_npy_bytes, save_features_npy, CardFormat, ModelCard, PeftLora, TensorStore,
};
use hepeft::model::zoo;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use std::sync::OnceLock;

const PEFT_CONFIG: &str = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q"]}"#;

fn build() -> Option<Vec<Vec<u8>>> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let adapter = zoo::lora_head(&mut rng, 8, 2, 3).ok()?;
    let (card, store) = ModelCard::from_adapter(&adapter, Some("fuzz")).ok()?;
    let dir = std::env::temp_dir().join(format!("hepeft-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let npy = dir.join("x.npy");
    let m = ndarray::Array2::from_shape_fn((2, 8), |(i, j)| (i * 8 + j) as f64 / 7.0);
    save_features_npy(&npy, m.view()).ok()?;
    let npy_bytes = std::fs::read(&npy).ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut peft = TensorStore::new();
    peft.insert(
        "base_model.model.q.lora_A.weight",
        vec![2, 8],
        (0..16).map(|v| v as f64 / 16.0).collect(),
    )
    .ok()?;
    peft.insert(
        "base_model.model.q.lora_B.weight",
        vec![8, 2],
        (0..16).map(|v| v as f64 / 32.0).collect(),
    )
    .ok()?;
    Some(vec![
        store.to_bytes().ok()?,
        npy_bytes,
        card.to_string(CardFormat::Toml).ok()?.into_bytes(),
        card.to_string(CardFormat::Json).ok()?.into_bytes(),
        peft.to_bytes().ok()?,
    ])
}

fn files() -> &'static Vec<Vec<u8>> {
    static F: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    F.get_or_init(|| build().unwrap_or_else(|| std::process::abort()))
}

fn all(bytes: &[u8]) {
    let _ = TensorStore::from_bytes(bytes);
    let _ = features_from_npy_bytes(bytes);
    let text = String::from_utf8_lossy(bytes);
    let _ = ModelCard::from_toml_str(&text);
    let _ = ModelCard::from_json_str(&text);
    let _ = PeftLora::from_bytes(bytes, PEFT_CONFIG);
    let _ = PeftLora::from_bytes(&files()[4], &text);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let which = usize::from(sel & 7);
    if which >= 5 {
        all(rest);
        return;
    }
    let mut file = files()[which].clone();
    let n = file.len();
    let mut first = None;
    for e in rest.chunks_exact(5) {
        let pos = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize % n;
        first.get_or_insert(pos);
        file[pos] ^= e[4];
    }
    if sel & 0x40 != 0 {
        file.truncate(first.unwrap_or(0));
    }
    match which {
        0 => {
            let _ = TensorStore::from_bytes(&file);
        }
        1 => {
            let _ = features_from_npy_bytes(&file);
        }
        2 => {
            if let Ok(c) = ModelCard::from_toml_str(&String::from_utf8_lossy(&file)) {
                let _ = c.to_string(CardFormat::Json);
            }
        }
        3 => {
            if let Ok(c) = ModelCard::from_json_str(&String::from_utf8_lossy(&file)) {
                let _ = c.to_string(CardFormat::Toml);
            }
        }
        _ => {
            let _ = PeftLora::from_bytes(&file, PEFT_CONFIG);
        }
    }
});
