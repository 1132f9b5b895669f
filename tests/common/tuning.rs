//! Shared fixtures of the private-tuning tests (tests/tune.rs, tests/serve_tune.rs): a tiny
//! linear head, a teacher-labelled task, reply settings and the plaintext twin of a step.

use hepeft::model::{reference, Adapter, AdapterBuilder, Op};
use hepeft::tune::*;
use ndarray::{Array1, Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Input width of the tiny head.
pub const D: usize = 8;
/// Classes of the tiny head.
pub const CLASSES: usize = 3;

/// A linear head `D -> CLASSES` with weights from `seed` scaled by `gain`.
pub fn head(seed: u64, gain: f64) -> Adapter {
    let mut r = ChaCha20Rng::seed_from_u64(seed);
    let mut b = AdapterBuilder::new();
    let x = b.input("x", D).unwrap();
    let w = Array2::from_shape_simple_fn((CLASSES, D), || gain * r.random_range(-1.0..1.0));
    let bias = Array1::from_shape_simple_fn(CLASSES, || 0.1 * gain * r.random_range(-1.0..1.0));
    b.node(
        "head",
        Op::Linear {
            weight: w,
            bias: Some(bias),
        },
        &[x],
    )
    .unwrap();
    b.build().unwrap()
}

/// `samples` features in [-1, 1] and the labels a teacher head gives them.
pub fn task(samples: usize) -> (Array2<f64>, Vec<usize>) {
    let mut r = ChaCha20Rng::seed_from_u64(7);
    let x = Array2::from_shape_simple_fn((samples, D), || r.random_range(-1.0..1.0));
    let (logits, _) = reference::evaluate_batch(&head(99, 1.0), &[x.view()]).unwrap();
    let labels = logits.outer_iter().map(reference::argmax).collect();
    (x, labels)
}

/// Two directions, eps = 1e-2, lr = 0.5, every parameter moves.
pub fn config() -> TuneConfig {
    TuneConfig {
        directions: 2,
        perturbation: 1e-2,
        learning_rate: 0.5,
        trainable: Trainable::All,
    }
}

/// Clipped replies without privacy noise.
pub fn no_noise() -> ReplyPrivacy {
    ReplyPrivacy {
        clip: Some(50.0),
        noise_multiplier: None,
        delta: 1e-5,
    }
}

/// One plaintext step: the twin of the encrypted step.
pub fn plain_step(
    server: &mut TuneServer,
    client: &mut TuneClient,
    x: ArrayView2<f64>,
) -> StepReply {
    let logits: Vec<Array2<f64>> = server
        .perturbed_adapters()
        .unwrap()
        .iter()
        .map(|a| reference::evaluate_batch(a, &[x]).unwrap().0)
        .collect();
    let reply = client
        .reply(server.step(), &logits, server.config())
        .unwrap();
    assert_eq!(server.apply(&reply).unwrap(), Applied::Updated);
    reply
}
