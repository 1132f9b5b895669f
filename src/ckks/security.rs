//! The HomomorphicEncryption.org security table (ternary secret, classical attacks).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Requested security level of a parameter set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// 128-bit classical security (the default).
    #[default]
    #[serde(rename = "128")]
    Bits128,
    /// 192-bit classical security.
    #[serde(rename = "192")]
    Bits192,
    /// 256-bit classical security.
    #[serde(rename = "256")]
    Bits256,
    /// No check at all. Only for tests and experiments: such parameters may be trivially
    /// breakable. Everything hepeft prints about such a set says so.
    Unchecked,
}

impl Security {
    /// Number of bits, or `None` for [`Security::Unchecked`].
    pub fn bits(self) -> Option<u32> {
        match self {
            Security::Bits128 => Some(128),
            Security::Bits192 => Some(192),
            Security::Bits256 => Some(256),
            Security::Unchecked => None,
        }
    }

    /// Parses `128`, `192`, `256` or `unchecked`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "128" => Ok(Security::Bits128),
            "192" => Ok(Security::Bits192),
            "256" => Ok(Security::Bits256),
            "unchecked" => Ok(Security::Unchecked),
            _ => Err(Error::params(format!(
                "unknown security level {s:?} (use 128, 192, 256 or unchecked)"
            ))),
        }
    }
}

impl std::fmt::Display for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bits() {
            Some(b) => write!(f, "{b}-bit"),
            None => write!(f, "UNCHECKED (no security guarantee)"),
        }
    }
}

/// Maximum `log2(Q·P)` for ring degree `2^log_n` at the given security, from the
/// HomomorphicEncryption.org standard (uniform ternary secret, error sigma 3.2, classical
/// cost model); the N = 2^16, 128-bit entry follows the later extended tables (1747 bits).
/// `None` when the table has no entry (then only [`Security::Unchecked`] can be used).
pub fn max_log_qp(log_n: u32, security: Security) -> Option<u32> {
    let row: [Option<u32>; 7] = match security {
        Security::Bits128 => [
            Some(27),
            Some(54),
            Some(109),
            Some(218),
            Some(438),
            Some(881),
            Some(1747),
        ],
        Security::Bits192 => [
            Some(19),
            Some(37),
            Some(75),
            Some(152),
            Some(305),
            Some(611),
            None,
        ],
        Security::Bits256 => [
            Some(14),
            Some(29),
            Some(58),
            Some(118),
            Some(237),
            Some(476),
            None,
        ],
        Security::Unchecked => return None,
    };
    if !(10..=16).contains(&log_n) {
        return None;
    }
    row[(log_n - 10) as usize]
}

/// Checks `log_qp` against the table; [`Security::Unchecked`] always passes.
pub fn check(log_n: u32, log_qp: f64, security: Security) -> Result<()> {
    let Some(bits) = security.bits() else {
        return Ok(());
    };
    match max_log_qp(log_n, security) {
        Some(max) if log_qp <= max as f64 => Ok(()),
        Some(max) => Err(Error::InsecureParameters {
            log_n,
            log_qp,
            max_log_qp: max,
            security_bits: bits,
        }),
        None => Err(Error::params(format!(
            "the HomomorphicEncryption.org table has no {bits}-bit entry for N = 2^{log_n}; \
             pick another ring degree or Security::Unchecked"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_refuses_oversized_moduli() {
        assert!(check(13, 218.0, Security::Bits128).is_ok());
        assert!(matches!(
            check(13, 218.5, Security::Bits128),
            Err(Error::InsecureParameters { .. })
        ));
        assert!(check(14, 438.0, Security::Bits128).is_ok());
        assert!(check(15, 882.0, Security::Bits128).is_err());
        assert!(check(16, 1747.0, Security::Bits128).is_ok());
        assert!(check(13, 200.0, Security::Bits192).is_err());
        assert!(check(12, 200.0, Security::Unchecked).is_ok());
        assert!(check(17, 100.0, Security::Bits128).is_err());
    }
}
