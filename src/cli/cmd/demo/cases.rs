//! The demo's embedded examples: the real tasks shipped in `assets/real/` (a trained
//! adapter with held-out features and labels) and the seeded synthetic adapters.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use ndarray::{Array2, Axis};
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;

use hepeft::model::load::{features_from_npy_bytes, save_adapter};
use hepeft::model::{zoo, ActivationFn, Adapter};

use crate::cli::args::DemoModel;
use crate::cli::common::load_model;

/// Seed of the demo adapters' weights (fixed: the demo is reproducible up to encryption noise).
const MODEL_SEED: u64 = 0x4845_5045_4654;
/// Seed of the demo features.
const FEATURE_SEED: u64 = 2024;

/// A trained adapter with held-out data, embedded from `assets/real/<task>/`.
pub(crate) struct RealTask {
    pub(crate) card_toml: &'static str,
    /// Written next to the card under [`REAL_WEIGHTS_FILE`], the name its `weights` field gives.
    pub(crate) weights: &'static [u8],
    pub(crate) features: &'static [u8],
    pub(crate) labels: &'static [u8],
    pub(crate) classes: &'static [&'static str],
}

/// The weights file name every shipped card (`assets/real/*/*/card.toml`) refers to.
const REAL_WEIGHTS_FILE: &str = "adapter.safetensors";

const REVIEWS: RealTask = RealTask {
    card_toml: include_str!("../../../../assets/real/finefoods/bottleneck/card.toml"),
    weights: include_bytes!("../../../../assets/real/finefoods/bottleneck/adapter.safetensors"),
    features: include_bytes!("../../../../assets/real/finefoods/features/emb.npy"),
    labels: include_bytes!("../../../../assets/real/finefoods/features/labels.npy"),
    classes: &["other", "great"],
};

const DIGITS: RealTask = RealTask {
    card_toml: include_str!("../../../../assets/real/digits/bottleneck/card.toml"),
    weights: include_bytes!("../../../../assets/real/digits/bottleneck/adapter.safetensors"),
    features: include_bytes!("../../../../assets/real/digits/features/pixels.npy"),
    labels: include_bytes!("../../../../assets/real/digits/features/labels.npy"),
    classes: &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
};

/// What the demo runs: an adapter, its card on disk, and the client's features.
pub(super) struct DemoCase {
    pub(super) adapter: Adapter,
    pub(super) label: &'static str,
    pub(super) preset: &'static str,
    pub(super) features: Vec<Array2<f64>>,
    /// True labels and class names of a real task.
    pub(super) truth: Option<(Vec<usize>, &'static [&'static str])>,
}

/// Writes the private card of `which` into `server` and returns the case with `samples`
/// feature rows (held-out rows for a real task, seeded uniform ones otherwise).
pub(super) fn demo_case(which: DemoModel, server: &Path, samples: usize) -> Result<DemoCase> {
    let private_card = server.join("adapter.toml");
    let real = match which {
        DemoModel::Reviews => Some((
            &REVIEWS,
            "fine-food reviews (real): bottleneck adapter on all-MiniLM-L6-v2 embeddings, 5 stars vs the rest",
        )),
        DemoModel::Digits => Some((
            &DIGITS,
            "8x8 digits (real): bottleneck adapter on pixels, 10 classes",
        )),
        DemoModel::Lora | DemoModel::Bottleneck => None,
    };
    if let Some((task, label)) = real {
        std::fs::write(&private_card, task.card_toml)
            .with_context(|| format!("writing {}", private_card.display()))?;
        let w = server.join(REAL_WEIGHTS_FILE);
        std::fs::write(&w, task.weights).with_context(|| format!("writing {}", w.display()))?;
        let adapter = load_model(&private_card, None)?;
        let all = features_from_npy_bytes(task.features).context("embedded features")?;
        let labels = features_from_npy_bytes(task.labels).context("embedded labels")?;
        if samples > all.nrows() {
            bail!(
                "this task ships {} held-out samples; ask for at most that many",
                all.nrows()
            );
        }
        let rows = all
            .slice_axis(Axis(0), ndarray::Slice::from(0..samples))
            .to_owned();
        let truth: Vec<usize> = labels.iter().take(samples).map(|&y| y as usize).collect();
        return Ok(DemoCase {
            adapter,
            label,
            preset: "CKKS_N14_QP430_128",
            features: vec![rows],
            truth: Some((truth, task.classes)),
        });
    }
    let (adapter, label, preset) = demo_adapter(which)?;
    save_adapter(&adapter, &private_card, Some("hepeft demo"))?;
    let mut frng = ChaCha20Rng::seed_from_u64(FEATURE_SEED);
    let features = zoo::uniform_inputs(&mut frng, &adapter, samples);
    Ok(DemoCase {
        adapter,
        label,
        preset,
        features,
        truth: None,
    })
}

fn demo_adapter(which: DemoModel) -> Result<(Adapter, &'static str, &'static str)> {
    let mut rng = ChaCha20Rng::seed_from_u64(MODEL_SEED);
    Ok(match which {
        DemoModel::Lora => (
            zoo::lora_head(&mut rng, 384, 8, 10)?,
            "LoRA classifier head (d = 384, rank 8, 10 classes)",
            "CKKS_N13_QP200_128",
        ),
        DemoModel::Bottleneck => (
            zoo::bottleneck(&mut rng, 128, 16, ActivationFn::Gelu, 7, (-4.0, 4.0), 10)?,
            "bottleneck adapter (d = 128, hidden 16, GELU degree 7 on [-4, 4], residual, 10 classes)",
            "CKKS_N14_QP430_128",
        ),
        DemoModel::Reviews | DemoModel::Digits => bail!("a real task is not a synthetic adapter"),
    })
}

/// The embedded real task of `which` (`None` for the synthetic adapters).
#[cfg(feature = "exact")]
pub(crate) fn real_task(which: DemoModel) -> Option<&'static RealTask> {
    match which {
        DemoModel::Reviews => Some(&REVIEWS),
        DemoModel::Digits => Some(&DIGITS),
        DemoModel::Lora | DemoModel::Bottleneck => None,
    }
}
