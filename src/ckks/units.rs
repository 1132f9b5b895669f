//! Newtypes for the CKKS quantities that cross module boundaries: a ciphertext [`Level`]
//! and a [`GaloisElement`]. Both serialize as the bare integer (`serde(transparent)`), so
//! files and JSON reports are byte-identical to the plain `usize`/`u64` they replace, and
//! both format (`Display` and `Debug`, width and fill included) as that integer. Inner
//! arithmetic loops keep plain integers; these types mark what a public figure means.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A level: the index of the last RNS prime a ciphertext holds (the number of rescalings
/// left). Level 0 holds `q_0` only.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Level(pub usize);

/// A Galois element `g` (odd, modulo `2N`): the automorphism `X -> X^g`. Rotation by `k`
/// slots is `5^k mod 2N`, conjugation `2N - 1`
/// ([`galois_element_for_rotation`](crate::ckks::galois_element_for_rotation)).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GaloisElement(pub u64);

macro_rules! integer_newtype {
    ($name:ident, $int:ty, $what:literal) => {
        impl $name {
            /// The integer.
            pub const fn get(self) -> $int {
                self.0
            }
        }
        impl From<$int> for $name {
            fn from(v: $int) -> Self {
                $name(v)
            }
        }
        impl From<$name> for $int {
            fn from(v: $name) -> Self {
                v.0
            }
        }
        impl PartialEq<$int> for $name {
            fn eq(&self, other: &$int) -> bool {
                self.0 == *other
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl FromStr for $name {
            type Err = crate::Error;
            fn from_str(s: &str) -> crate::Result<Self> {
                s.trim()
                    .parse::<$int>()
                    .map($name)
                    .map_err(|e| crate::Error::InvalidValue {
                        context: $what.into(),
                        reason: format!("{s:?} is not a non-negative integer ({e})"),
                    })
            }
        }
    };
}

integer_newtype!(Level, usize, "level");

impl Level {
    /// Level 0: only `q_0` is held.
    pub const ZERO: Level = Level(0);
    /// Number of ciphertext primes `q_0 .. q_level` held: `level + 1`.
    pub const fn primes(self) -> usize {
        self.0 + 1
    }
    /// The level `n` rescalings lower, or `None` below level 0.
    pub const fn checked_sub(self, n: usize) -> Option<Level> {
        match self.0.checked_sub(n) {
            Some(l) => Some(Level(l)),
            None => None,
        }
    }
    /// The level `n` rescalings lower, stopping at level 0.
    pub const fn saturating_sub(self, n: usize) -> Level {
        Level(self.0.saturating_sub(n))
    }
    /// Rescalings from `self` down to `lower` (0 when `lower` is not below `self`).
    pub const fn levels_above(self, lower: Level) -> usize {
        self.0.saturating_sub(lower.0)
    }
}

impl PartialOrd<usize> for Level {
    fn partial_cmp(&self, other: &usize) -> Option<std::cmp::Ordering> {
        self.0.partial_cmp(other)
    }
}
integer_newtype!(GaloisElement, u64, "Galois element");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_in_text_and_json() {
        let g = GaloisElement(25);
        assert_eq!(format!("{g} {g:?} {g:>4}"), "25 25   25");
        assert_eq!(
            serde_json::to_string(&vec![g]).ok().as_deref(),
            Some("[25]")
        );
        assert_eq!("25".parse::<GaloisElement>().ok(), Some(g));
        assert!("-1".parse::<Level>().is_err());
        assert_eq!(Level(3), 3usize);
        assert_eq!(
            serde_json::from_str::<Level>("7").ok(),
            Some(Level::from(7usize))
        );
    }
}
