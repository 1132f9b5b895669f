#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Where a bootstrapping's time goes on this machine (issue 19): the keyswitch
//! (2048 -> 918, 2^4 x 4) alone, then the blind rotation of the classic bootstrapping key
//! for each decomposition the exact path uses (2^23 x 1 coarse, 2^15 x 2 and 2^12 x 3 fine),
//! and of tfhe-rs's multi-bit bootstrapping key (grouping factor 2 and 3, same small key
//! n = 918, same GLWE key and noise) two ways: tfhe-rs's
//! `multi_bit_programmable_bootstrap_lwe_ciphertext` with `ThreadCount(1)` (one producer
//! thread beside the caller) and a one-thread loop over its public pieces
//! (`prepare_multi_bit_ggsw_mem_optimized`, `add_external_product_assign`), which is what
//! counts when rayon already keeps both cores busy with other neurons. Mean of REPS each.
//!
//! Run: `cargo run --release --example exact_pbs_cost [REPS]` (default 16).
use std::time::Instant;
use tfhe::core_crypto::algorithms::polynomial_algorithms::polynomial_wrapping_monic_monomial_div_assign;
use tfhe::core_crypto::commons::computation_buffers::ComputationBuffers;
use tfhe::core_crypto::fft_impl::fft64::crypto::ggsw::{
    add_external_product_assign, add_external_product_assign_scratch,
};
use tfhe::core_crypto::fft_impl::fft64::math::fft::Fft;
use tfhe::core_crypto::prelude::*;

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(16);
    let n = LweDimension(918);
    let big_n = PolynomialSize(2048);
    let k = GlweDimension(1);
    let modulus = CiphertextModulus::<u64>::new_native();
    let mut boxed = new_seeder();
    let seeder = boxed.as_mut();
    let mut sgen = SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed());
    let mut egen = EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
    let small = LweSecretKey::generate_new_binary(n, &mut sgen);
    let glwe = GlweSecretKey::generate_new_binary(k, big_n, &mut sgen);
    let big = glwe.as_lwe_secret_key();
    let glwe_noise = DynamicDistribution::<u64>::new_t_uniform(17);
    let lwe_noise = DynamicDistribution::<u64>::new_t_uniform(45);
    let ksk = allocate_and_generate_new_lwe_keyswitch_key(
        &big,
        &small,
        DecompositionBaseLog(4),
        DecompositionLevelCount(4),
        lwe_noise,
        modulus,
        &mut egen,
    );
    let mut ct = LweCiphertext::new(0u64, big.lwe_dimension().to_lwe_size(), modulus);
    encrypt_lwe_ciphertext(&big, &mut ct, Plaintext(3u64 << 59), glwe_noise, &mut egen);
    let mut sm = LweCiphertext::new(0u64, small.lwe_dimension().to_lwe_size(), modulus);
    let t = Instant::now();
    for _ in 0..reps {
        keyswitch_lwe_ciphertext(&ksk, &ct, &mut sm);
    }
    println!(
        "keyswitch 2048->918 4x4: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
    let lut = generate_programmable_bootstrap_glwe_lut(
        big_n,
        k.to_glwe_size(),
        16,
        modulus,
        1u64 << 59,
        |i: u64| i,
    );
    for (b, l) in [(23usize, 1usize), (15, 2), (12, 3)] {
        let bsk = par_allocate_and_generate_new_lwe_bootstrap_key(
            &small,
            &glwe,
            DecompositionBaseLog(b),
            DecompositionLevelCount(l),
            glwe_noise,
            modulus,
            &mut egen,
        );
        let mut fb = FourierLweBootstrapKey::new(
            bsk.input_lwe_dimension(),
            bsk.glwe_size(),
            bsk.polynomial_size(),
            bsk.decomposition_base_log(),
            bsk.decomposition_level_count(),
        );
        par_convert_standard_lwe_bootstrap_key_to_fourier(&bsk, &mut fb);
        let t = Instant::now();
        for _ in 0..reps {
            let msed = lwe_ciphertext_centered_binary_modulus_switch::<u64, usize, _>(
                sm.as_view(),
                big_n.to_blind_rotation_input_modulus_log(),
            );
            let mut acc = lut.clone();
            blind_rotate_assign(&msed, &mut acc, &fb);
        }
        println!(
            "classic BR 2^{b} x {l}: {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
        for gf in [2usize, 3] {
            let mb = par_allocate_and_generate_new_lwe_multi_bit_bootstrap_key(
                &small,
                &glwe,
                DecompositionBaseLog(b),
                DecompositionLevelCount(l),
                LweBskGroupingFactor(gf),
                glwe_noise,
                modulus,
                &mut egen,
            );
            let mut fmb = FourierLweMultiBitBootstrapKey::new(
                mb.input_lwe_dimension(),
                mb.glwe_size(),
                mb.polynomial_size(),
                mb.decomposition_base_log(),
                mb.decomposition_level_count(),
                mb.grouping_factor(),
            );
            par_convert_standard_lwe_multi_bit_bootstrap_key_to_fourier(&mb, &mut fmb);
            let mut out = LweCiphertext::new(0u64, big.lwe_dimension().to_lwe_size(), modulus);
            let t = Instant::now();
            for _ in 0..reps {
                multi_bit_programmable_bootstrap_lwe_ciphertext(
                    &sm,
                    &mut out,
                    &lut,
                    &fmb,
                    ThreadCount(1),
                    true,
                );
            }
            let dt = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
            // single-threaded loop
            let fft = Fft::new(big_n);
            let fft = fft.as_view();
            let mut buffers = ComputationBuffers::new();
            buffers.resize(
                add_external_product_assign_scratch::<u64>(k.to_glwe_size(), big_n, fft)
                    .unaligned_bytes_required(),
            );
            let ggsws: Vec<_> = fmb.ggsw_iter().collect();
            let per = LweBskGroupingFactor(gf).ggsw_per_multi_bit_element().0;
            let mut buf = FourierGgswCiphertext::new(
                fmb.glwe_size(),
                big_n,
                fmb.decomposition_base_log(),
                fmb.decomposition_level_count(),
            );
            let mut mono = FourierPolynomial::new(big_n);
            let log_mod = big_n.to_blind_rotation_input_modulus_log();
            let t = Instant::now();
            let mut out2 = LweCiphertext::new(0u64, big.lwe_dimension().to_lwe_size(), modulus);
            for _ in 0..reps {
                let ms = StandardMultiBitModulusSwitchedCt {
                    input: sm.as_view(),
                    grouping_factor: LweBskGroupingFactor(gf),
                    log_modulus: log_mod,
                };
                let mut a0 = lut.clone();
                let body = ms.switched_modulus_input_lwe_body();
                for mut p in a0.as_mut_polynomial_list().iter_mut() {
                    polynomial_wrapping_monic_monomial_div_assign(&mut p, MonomialDegree(body));
                }
                let mut a1 = a0.clone();
                for w in 0..(n.0 / gf) {
                    prepare_multi_bit_ggsw_mem_optimized(
                        &mut buf,
                        &ggsws[w * per..(w + 1) * per],
                        ms.switched_modulus_input_mask_per_group(w),
                        &mut mono,
                        fft,
                    );
                    a1.as_mut().fill(0);
                    add_external_product_assign(
                        a1.as_mut_view(),
                        buf.as_view(),
                        a0.as_view(),
                        fft,
                        buffers.stack(),
                    );
                    std::mem::swap(&mut a0, &mut a1);
                }
                extract_lwe_sample_from_glwe_ciphertext(&a0, &mut out2, MonomialDegree(0));
            }
            let dt2 = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
            let d1 = decrypt_lwe_ciphertext(&big, &out).0 as i64;
            let d2 = decrypt_lwe_ciphertext(&big, &out2).0 as i64;
            println!("multi-bit gf {gf} 2^{b} x {l}: tfhe (1 producer thread) {dt:.2} ms, own 1-thread loop {dt2:.2} ms | outs {:.3} {:.3}", d1 as f64 / 2f64.powi(59), d2 as f64 / 2f64.powi(59));
        }
    }
}
