//! Layer 1: RNS-CKKS (approximate arithmetic on encrypted complex/real vectors).
//!
//! ```text
//! CkksParamsLiteral --from_literal--> CkksParams (checked against the security table)
//! KeyGenerator -> SecretKey, PublicKey, RelinKey, GaloisKey, EvaluationKeys
//! Encoder (slots <-> Plaintext) · Encryptor / Decryptor · Evaluator
//! Evaluator::{rerandomize_assign, flood_assign} (sanitize.rs): output sanitization primitives
//! ```

pub mod ciphertext;
pub mod encoding;
pub mod encrypt;
pub mod eval;
pub mod keygen;
pub mod keys;
pub mod keyswitch;
pub mod lintrans;
pub mod params;
pub mod polyeval;
pub mod precision;
pub mod sanitize;
pub mod security;
pub mod serialize;
pub mod units;

pub use ciphertext::{Ciphertext, Plaintext};
pub use encoding::{Encoder, C64};
pub use encrypt::{Decryptor, EncryptionKey, Encryptor};
pub use eval::{Evaluator, HoistedCiphertext};
pub use keygen::{galois_element_for_conjugation, galois_element_for_rotation, KeyGenerator};
pub use keys::{EvaluationKeys, GaloisKey, PublicKey, RelinKey, SecretKey, SwitchingKey};
pub use lintrans::LinearTransform;
pub use params::{
    CkksParams, CkksParamsLiteral, SecretDistribution, OUTPUT_HEADROOM_BITS, PRESETS,
};
pub use precision::{model_precision_bits, PrecisionStats};
pub use security::Security;
pub use serialize::{
    ciphertext_bytes, from_bytes, from_bytes_bound, load, load_bound, save, save_bound, to_bytes,
    to_bytes_bound, CiphertextBundle, HeObject, KeyFileSizes,
};
pub use units::{GaloisElement, Level};
