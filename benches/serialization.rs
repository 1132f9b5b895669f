//! Encoding benchmark for large `u64` arrays (ciphertext and key limbs).
//!
//! Compares, for a `Vec<u64>` of random values below 2^60 (the shape of RNS limbs):
//! bincode 2 (`Encode`/`Decode`, standard config with fixed-int and with varint encoding),
//! postcard (serde), and a plain little-endian bulk copy in safe code; then the whole
//! hepeft envelope path (bulk little-endian payload plus SHA-256 checksum).
//!
//! Run: `cargo bench --bench serialization -- --warm-up-time 1 --measurement-time 3`.
//! Results and the decision they support: `docs/serialization.md`.

// Bench inputs are fixed and valid: an encoding failure here is a bug in the bench itself.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// 2 parts x 3 RNS limbs x N = 2^13: one small ciphertext.
const SMALL: usize = 2 * 3 * 8192;
/// 2^20 values (8 MiB): the order of one key-switching key.
const LARGE: usize = 1 << 20;

fn random_limbs(n: usize) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x4845_5045_4654);
    (0..n).map(|_| rng.random::<u64>() >> 4).collect()
}

fn le_encode(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 8);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn le_decode(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect()
}

fn bincode_fixint() -> impl bincode::config::Config {
    bincode::config::standard().with_fixed_int_encoding()
}

fn bincode_varint() -> impl bincode::config::Config {
    bincode::config::standard().with_variable_int_encoding()
}

fn encoders(values: &[u64]) -> Vec<(&'static str, Vec<u8>)> {
    let v = values.to_vec();
    vec![
        (
            "bincode-fixint",
            bincode::encode_to_vec(&v, bincode_fixint()).expect("bincode fixint"),
        ),
        (
            "bincode-varint",
            bincode::encode_to_vec(&v, bincode_varint()).expect("bincode varint"),
        ),
        ("postcard", postcard::to_stdvec(&v).expect("postcard")),
        ("raw-le", le_encode(values)),
    ]
}

fn bench(c: &mut Criterion) {
    for n in [SMALL, LARGE] {
        let values = random_limbs(n);
        let encoded = encoders(&values);
        for (name, bytes) in &encoded {
            eprintln!(
                "size n={n} {name}: {} bytes ({:.4} bytes/value)",
                bytes.len(),
                bytes.len() as f64 / n as f64
            );
        }

        let mut g = c.benchmark_group(format!("encode/{n}"));
        g.throughput(Throughput::Bytes((n * 8) as u64));
        g.bench_function(BenchmarkId::from_parameter("bincode-fixint"), |b| {
            b.iter(|| bincode::encode_to_vec(black_box(&values), bincode_fixint()).expect("enc"))
        });
        g.bench_function(BenchmarkId::from_parameter("bincode-varint"), |b| {
            b.iter(|| bincode::encode_to_vec(black_box(&values), bincode_varint()).expect("enc"))
        });
        g.bench_function(BenchmarkId::from_parameter("postcard"), |b| {
            b.iter(|| postcard::to_stdvec(black_box(&values)).expect("enc"))
        });
        g.bench_function(BenchmarkId::from_parameter("raw-le"), |b| {
            b.iter(|| le_encode(black_box(&values)))
        });
        g.finish();

        let mut g = c.benchmark_group(format!("decode/{n}"));
        g.throughput(Throughput::Bytes((n * 8) as u64));
        for (name, bytes) in &encoded {
            let name = *name;
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    let out: Vec<u64> = match name {
                        "bincode-fixint" => {
                            bincode::decode_from_slice(black_box(bytes), bincode_fixint())
                                .expect("dec")
                                .0
                        }
                        "bincode-varint" => {
                            bincode::decode_from_slice(black_box(bytes), bincode_varint())
                                .expect("dec")
                                .0
                        }
                        "postcard" => postcard::from_bytes(black_box(bytes)).expect("dec"),
                        _ => le_decode(black_box(bytes)),
                    };
                    debug_assert_eq!(out.len(), n);
                    out
                })
            });
        }
        g.finish();

        // Every decoder must give back exactly the input.
        for (name, bytes) in &encoded {
            let back: Vec<u64> = match *name {
                "bincode-fixint" => {
                    bincode::decode_from_slice(bytes, bincode_fixint())
                        .expect("d")
                        .0
                }
                "bincode-varint" => {
                    bincode::decode_from_slice(bytes, bincode_varint())
                        .expect("d")
                        .0
                }
                "postcard" => postcard::from_bytes(bytes).expect("d"),
                _ => le_decode(bytes),
            };
            assert_eq!(back, values, "{name} roundtrip");
        }
    }
}

/// The full hepeft path: `PayloadWriter::u64_slice` + `write_envelope` (SHA-256 checksum)
/// into memory, and `read_envelope` + `PayloadReader::u64_vec` back.
fn bench_envelope(c: &mut Criterion) {
    use hepeft::io::format::{
        read_envelope, write_envelope, FileKind, PayloadReader, PayloadWriter,
    };
    let digest = [3u8; 32];
    for n in [SMALL, LARGE] {
        let values = random_limbs(n);
        let write = |values: &[u64]| {
            let mut p = PayloadWriter::with_capacity(values.len() * 8);
            p.u64_slice(values);
            let mut out = Vec::with_capacity(values.len() * 8 + 64);
            write_envelope(&mut out, FileKind::Ciphertext, &digest, p.as_slice()).expect("write");
            out
        };
        let file = write(&values);
        eprintln!("size n={n} hepeft-envelope: {} bytes", file.len());

        let mut g = c.benchmark_group(format!("envelope/{n}"));
        g.throughput(Throughput::Bytes((n * 8) as u64));
        g.bench_function(BenchmarkId::from_parameter("encode"), |b| {
            b.iter(|| write(black_box(&values)))
        });
        g.bench_function(BenchmarkId::from_parameter("decode"), |b| {
            b.iter(|| {
                let env = read_envelope(
                    &mut black_box(file.as_slice()),
                    FileKind::Ciphertext,
                    1 << 30,
                )
                .expect("read");
                let mut r = PayloadReader::new(&env.payload, "bench");
                r.u64_vec(n, n).expect("limbs")
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench, bench_envelope);
criterion_main!(benches);
