//! Parameter selection for token-level adapters (issue 15): which numbers of tapped layers
//! fit one CKKS chain (no bootstrapping) for CryptPEFT-like shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hepeft::ckks::Security;
use hepeft::model::token::{random_owc, OwcShape};
use hepeft::plan::token::{fuse_tokens, TokenPlan};
use hepeft::select::token::select_token;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn owc(
    taps: usize,
    tokens: usize,
    d: usize,
    r: usize,
    heads: usize,
) -> hepeft::model::token::TokenAdapter {
    let mut rng = ChaCha20Rng::seed_from_u64(taps as u64);
    let sh = OwcShape {
        tokens,
        d,
        r,
        heads,
        taps,
        classes: 2,
    };
    fuse_tokens(&random_owc(&mut rng, sh).unwrap()).unwrap()
}

#[test]
fn minilm_sized_owc_fits_up_to_three_taps_at_128_bits() {
    // MiniLM width d = 384, T = 64 tokens, r = 64, 2 heads (a CryptPEFT configuration)
    for (taps, precision, fits) in [(1, 16, true), (2, 16, true), (3, 16, true), (4, 16, false)] {
        let ad = owc(taps, 64, 384, 64, 2);
        let depth = TokenPlan::depth_of(&ad);
        assert_eq!(depth, 12 * taps + 2);
        match select_token(&ad, precision, Security::Bits128) {
            Ok(sel) => {
                println!("s = {taps}, {precision} bits:\n{}", sel.report.to_text());
                assert!(fits, "s = {taps} was expected not to fit");
                assert!(sel.report.log_qp <= sel.report.max_log_qp as f64);
                // packed: N/2 / 64 columns per ciphertext
                let per_ct = (1usize << (sel.report.log_n - 1)) / 64;
                assert_eq!(
                    sel.report.query_ciphertexts,
                    (taps + 1) * 384usize.div_ceil(per_ct)
                );
                assert_eq!(sel.report.result_ciphertexts, 2);
            }
            Err(e) => {
                println!("s = {taps}, {precision} bits: refused: {e}");
                assert!(!fits, "s = {taps}: {e}");
                assert!(e.to_string().contains("depth"), "{e}");
            }
        }
    }
}

#[test]
fn small_token_adapters_get_small_rings() {
    let ad = owc(1, 8, 16, 8, 1);
    let sel = select_token(&ad, 12, Security::Bits128).unwrap();
    println!("{}", sel.report.to_text());
    assert!(sel.report.log_n <= 15);
    assert!(select_token(&ad, 12, Security::Unchecked).is_err());
}
