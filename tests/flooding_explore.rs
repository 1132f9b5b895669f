#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use hepeft::ckks::*;
use hepeft::model::{reference, zoo};
use hepeft::plan::{FloodingConfig, SanitizeConfig};
use hepeft::select::{select, SelectRequest};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn run(label: &str, d: usize, h: usize, c: usize, samples: usize) {
    let adapter = zoo::square_mlp(&mut ChaCha20Rng::seed_from_u64(8), d, h, c).unwrap();
    let req = SelectRequest {
        flooding: Some(FloodingConfig::default()),
        ..Default::default()
    };
    let sel = match select(&adapter, &req) {
        Ok(s) => s,
        Err(e) => {
            println!("{label}: {e}");
            return;
        }
    };
    println!("{label}: {}", sel.report.to_text());
    let plan = &sel.plan;
    let mut r = rng(5);
    let inputs = zoo::uniform_inputs(&mut r, &adapter, samples);
    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|a| a.view()).collect();
    let (want, _) = reference::evaluate_batch(&adapter, &views).unwrap();
    let got = run_plan_sanitized(plan, &inputs, 77, Some(&SanitizeConfig::flooded()));
    let g: Vec<f64> = got.iter().copied().collect();
    let w: Vec<f64> = want.iter().copied().collect();
    let abs = PrecisionStats::compare(&g, &w);
    let rel = PrecisionStats::relative_to_largest(&g, &w);
    println!(
        "{label}: measured abs worst {:.2} rel worst {:.2} predicted {:?}",
        abs.min_bits, rel.min_bits, sel.report.flooded_precision_bits
    );
}

#[test]
fn explore() {
    run("b", 384, 8, 10, 16);
    run("a", 768, 64, 100, 4);
}
