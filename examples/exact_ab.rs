#![allow(clippy::expect_used, clippy::unwrap_used)]
//! One hidden unit's bootstrappings, two ways, interleaved on one thread (issue 19): the
//! shifted stages (`Evaluator::drop_low_nibble`, a coarse sign and a fine low part each)
//! against `Evaluator::top_digits` (all on the coarse key), each followed by the same
//! 5-bit or 6-bit table read, for J = 2 and 3. Ratios only: run both in the same window.
//!
//! Run: `cargo run --release --example exact_ab [REPS [FINE]]` (default 8 and `15x2`).
use hepeft::exact::{
    generate_keys, DecompositionBaseLog, DecompositionLevelCount, Evaluator, ExactParams,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::time::Instant;
fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(8);
    let (fb, fl): (usize, usize) = std::env::args()
        .nth(2)
        .map(|s| {
            let (a, b) = s.split_once('x').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .unwrap_or((15, 2));
    let params = ExactParams::vetted(
        hepeft::exact::DEFAULT_VETTED,
        DecompositionBaseLog(fb),
        DecompositionLevelCount(fl),
    )
    .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (ck, comp) = generate_keys(&params, &mut rng).unwrap();
    let sk = comp.expand(&params).unwrap();
    let ev = Evaluator::new(&sk);
    let table: Vec<i64> = (0..32).map(|i| if i < 16 { i } else { 0 }).collect();
    let t64: Vec<i64> = (0..64).map(|i| if i < 32 { i } else { 0 }).collect();
    for (j, bits) in [(2u32, 5u32), (3, 5), (3, 6)] {
        let p = 4 * j + 5;
        let ct = ck
            .encrypt(&[12345 % (1 << p)], p, &mut rng)
            .unwrap()
            .remove(0);
        let (mut told, mut tnew) = (0.0, 0.0);
        for _ in 0..reps {
            let t = Instant::now();
            let mut acc = ct.clone();
            let mut pc = p;
            if bits == 6 {
                for s in 0..j {
                    if s + 1 == j {
                        let (a, b) = ev.drop_low_nibble_keep_top(&acc, pc).unwrap();
                        acc = a;
                        let _ = ev.lut6(&acc, &b, &t64, 11).unwrap();
                    } else {
                        acc = ev.drop_low_nibble(&acc, pc).unwrap();
                    }
                    pc -= 4;
                }
            } else {
                for _ in 0..j {
                    acc = ev.drop_low_nibble(&acc, pc).unwrap();
                    pc -= 4;
                }
                let _ = ev.lut5(&acc, &table, 11).unwrap();
            }
            told += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let (w, b) = ev.top_digits(&ct, p, j, bits == 6).unwrap();
            if bits == 6 {
                let _ = ev.lut6(&w, &b.unwrap(), &t64, 11).unwrap();
            } else {
                let _ = ev.lut5(&w, &table, 11).unwrap();
            }
            tnew += t.elapsed().as_secs_f64();
        }
        println!("fine {fb}x{fl} J={j} table {bits} bits: per unit old {:.1} ms, new {:.1} ms, new/old {:.3}", told * 1e3 / reps as f64, tnew * 1e3 / reps as f64, tnew / told);
    }
}
