//! Keys, ciphertexts, plaintexts and parameter envelopes under a small (insecure,
//! test-only) parameter set, fuzzed structure-aware: valid files are built once, and the
//! input says which file to take and how to damage it.
//!
//! Input: byte 0 selects the object (low 3 bits), whether to truncate (0x40) and whether to
//! re-seal the checksum afterwards (0x80), so that mutations reach the payload parsers.
//! The rest is a list of 5-byte edits `(position u32 LE, xor u8)`; with truncation the
//! first edit's position also gives the cut. Object 7 parses the raw input instead.
#![no_main]
use hepeft::ckks::serialize::{params_from_bytes, params_to_bytes};
use hepeft::ckks::*;
use hepeft::io::format::{CHECKSUM_LEN, HEADER_LEN};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use sha2::Digest;
use std::sync::OnceLock;

struct Files {
    params: CkksParams,
    files: Vec<Vec<u8>>,
}

fn build() -> Option<Files> {
    let lit = CkksParamsLiteral::new(10, vec![50, 40, 40], vec![50], 40)
        .with_security(Security::Unchecked);
    let params = CkksParams::from_literal(lit).ok()?;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key(&mut rng);
    let pk = kg.gen_public_key(&sk, &mut rng).ok()?;
    let g = galois_element_for_rotation(&params, 1);
    let evk = kg
        .gen_evaluation_keys(&sk, &[g], true, &mut rng)
        .ok()?
        .with_public_key(pk.clone())
        .ok()?;
    let enc = Encoder::new(&params).ok()?;
    let pt = enc
        .encode(&[0.5, -0.25, 1.0], params.max_level(), params.default_scale())
        .ok()?;
    let ct = Encryptor::new(&params, EncryptionKey::Public(&pk))
        .ok()?
        .encrypt(&pt, &mut rng)
        .ok()?;
    let sym = Encryptor::new(&params, EncryptionKey::Secret(&sk))
        .ok()?
        .encrypt(&pt, &mut rng)
        .ok()?;
    let bundle = CiphertextBundle {
        digest: params.digest(),
        items: vec![ct.clone(), sym.clone()],
    };
    let files = vec![
        to_bytes(&params, &sk).ok()?,
        to_bytes(&params, &pk).ok()?,
        to_bytes(&params, &evk).ok()?,
        to_bytes(&params, &ct).ok()?,
        to_bytes(&params, &sym).ok()?,
        to_bytes(&params, &bundle).ok()?,
        to_bytes(&params, &pt).ok()?,
        params_to_bytes(&params).ok()?,
    ];
    Some(Files { params, files })
}

fn files() -> &'static Files {
    static F: OnceLock<Files> = OnceLock::new();
    F.get_or_init(|| build().unwrap_or_else(|| std::process::abort()))
}

fn parse(which: usize, p: &CkksParams, b: &[u8]) {
    let _ = match which {
        0 => from_bytes::<SecretKey>(p, b).map(drop),
        1 => from_bytes::<PublicKey>(p, b).map(drop),
        2 => from_bytes::<EvaluationKeys>(p, b).map(drop),
        3 | 4 => from_bytes::<Ciphertext>(p, b).map(drop),
        5 => from_bytes::<CiphertextBundle>(p, b).map(drop),
        6 => from_bytes::<Plaintext>(p, b).map(drop),
        _ => params_from_bytes(b).map(drop),
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let f = files();
    let which = usize::from(sel & 7);
    if which == 7 {
        for k in 0..8 {
            parse(k, &f.params, rest);
        }
        return;
    }
    let mut file = f.files[which].clone();
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
    if sel & 0x80 != 0 && file.len() >= HEADER_LEN + CHECKSUM_LEN {
        let body = file.len() - CHECKSUM_LEN;
        let sum = sha2::Sha256::digest(&file[..body]);
        file[body..].copy_from_slice(&sum[..CHECKSUM_LEN]);
    }
    parse(which, &f.params, &file);
    // Every object file is also tried as every other kind.
    parse((which + 1) % 8, &f.params, &file);
});
