//! Layer 0: modular arithmetic, NTT (tfhe-ntt), RNS bases and polynomials, samplers.
//! Nothing here knows about CKKS.

pub mod dot;
pub mod modulus;
pub mod ntt;
pub mod par;
pub mod poly;
pub mod rns;
pub mod sample;
pub mod scratch;
pub mod simd;

pub use modulus::Modulus;
pub use ntt::NttTable;
pub use poly::{Coeff, Eval, RnsPoly};
pub use rns::{BasisConverter, CrtReconstructor, RingContext};
