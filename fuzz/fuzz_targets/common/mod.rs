//! Shared by the fuzz targets: the small (insecure, test-only) N = 2^10 parameter set the
//! structure-aware targets build their inputs under.
use hepeft::ckks::{CkksParams, CkksParamsLiteral, Security};
use std::sync::OnceLock;

/// N = 2^10, Q = 50/40/40, P = 50, scale 2^40, security unchecked; built once.
pub fn test_params() -> Option<&'static CkksParams> {
    static P: OnceLock<Option<CkksParams>> = OnceLock::new();
    P.get_or_init(|| {
        let lit = CkksParamsLiteral::new(10, vec![50, 40, 40], vec![50], 40)
            .with_security(Security::Unchecked);
        CkksParams::from_literal(lit).ok()
    })
    .as_ref()
}
