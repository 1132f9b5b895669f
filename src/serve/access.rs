//! Who may call the service, and how often: bearer-token authentication and per-client
//! token-bucket rate limiting.
//!
//! Tokens are compared by their SHA-256 digests in constant time, so neither a timing
//! difference nor the server's memory layout tells how much of a guessed token was right;
//! the configured tokens themselves are zeroized on drop and never printed.
//!
//! A rate-limited client is the token it authenticated with (or, without authentication,
//! its peer IP address). Each request to `/v1/*` costs one unit of a bucket that refills at
//! `per_second` up to `burst`; an empty bucket gives `429 Too Many Requests` with a
//! `Retry-After` header. The bucket table is bounded: idle full buckets are dropped first.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;
use zeroize::{Zeroize, Zeroizing};

/// Bearer tokens a server accepts. Debug prints only how many there are.
#[derive(Clone, Default)]
pub struct AuthTokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for AuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthTokens(<{} redacted>)", self.digests.len())
    }
}

impl Drop for AuthTokens {
    fn drop(&mut self) {
        self.digests.zeroize();
    }
}

/// Shortest token accepted: 128 bits of hex or base64 need at least 22 characters.
pub const MIN_TOKEN_CHARS: usize = 22;

impl AuthTokens {
    /// No tokens: the service is open (the default; see docs/deploy.md).
    pub fn none() -> Self {
        AuthTokens::default()
    }

    /// Whether any token is configured (authentication required).
    pub fn is_required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Accepts `tokens` (each at least [`MIN_TOKEN_CHARS`] printable ASCII characters
    /// without spaces).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for a short or malformed token (the message does not
    /// contain the token).
    pub fn new<S: AsRef<str>>(tokens: &[S]) -> Result<Self> {
        let mut digests = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let t = t.as_ref();
            if t.len() < MIN_TOKEN_CHARS || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::params(format!(
                    "access token {} must be at least {MIN_TOKEN_CHARS} printable characters without spaces (e.g. `openssl rand -hex 32`)",
                    i + 1
                )));
            }
            digests.push(Sha256::digest(t.as_bytes()).into());
        }
        Ok(AuthTokens { digests })
    }

    /// Reads tokens from a file, one per line (blank lines and lines starting with `#` are
    /// skipped). The file's contents are zeroized after parsing.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; as [`AuthTokens::new`]; an empty file is an
    /// error (it would silently open the service).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.is_empty() {
            return Err(Error::params(format!(
                "token file {} holds no token",
                path.display()
            )));
        }
        Self::new(&lines)
    }

    /// The index of the token presented in an `Authorization: Bearer <token>` header value,
    /// or `None`. Compares digests in constant time and checks every configured token.
    pub fn check(&self, authorization: Option<&str>) -> Option<usize> {
        // The scheme is case-insensitive (RFC 7235); the token is not.
        let (scheme, token) = authorization?.trim_start().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let presented = token.trim();
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (i, k) in self.digests.iter().enumerate() {
            if constant_time_eq(k, &d) {
                found = Some(i);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Token-bucket rate limit per client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed in a burst (bucket size, at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// Checks the limit is usable.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] unless `per_second` is finite and positive and `burst`
    /// at least 1.
    pub fn new(per_second: f64, burst: u32) -> Result<Self> {
        if !(per_second.is_finite() && per_second > 0.0) || burst == 0 {
            return Err(Error::params(
                "rate limit needs a positive finite rate and a burst of at least 1",
            ));
        }
        Ok(RateLimit { per_second, burst })
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Most clients tracked at once; beyond it idle buckets are dropped (a dropped client
/// simply starts again with a full bucket).
const MAX_BUCKETS: usize = 100_000;

/// The bucket table of a server.
pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn per_second(&self) -> f64 {
        self.limit.per_second
    }

    /// Takes one unit for `client` at time `now`: `Ok(())`, or `Err(seconds)` until one is
    /// available again.
    pub(crate) fn take(&self, client: &str, now: Instant) -> std::result::Result<(), u64> {
        let RateLimit { per_second, burst } = self.limit;
        let cap = f64::from(burst);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(client) {
            // Drop every bucket that has refilled completely (its client is idle).
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_second < cap
            });
        }
        let b = map.entry(client.to_string()).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let refill = now.saturating_duration_since(b.last).as_secs_f64() * per_second;
        b.tokens = (b.tokens + refill).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tokens_are_checked_and_redacted() {
        let t =
            AuthTokens::new(&["a-long-enough-secret-token-1", "another-secret-token-22"]).unwrap();
        assert!(t.is_required());
        assert_eq!(t.check(Some("Bearer another-secret-token-22")), Some(1));
        assert_eq!(
            t.check(Some("Bearer a-long-enough-secret-token-1")),
            Some(0)
        );
        assert_eq!(t.check(Some("Bearer a-long-enough-secret-token-2")), None);
        assert_eq!(t.check(Some("bearer another-secret-token-22")), Some(1));
        assert_eq!(t.check(Some("BEARER another-secret-token-22")), Some(1));
        assert_eq!(t.check(Some("Basic another-secret-token-22")), None);
        assert_eq!(t.check(Some("a-long-enough-secret-token-1")), None);
        assert_eq!(t.check(None), None);
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        assert!(AuthTokens::new(&["short"]).is_err());
        assert!(AuthTokens::new(&["has a space in the middle of it"]).is_err());
        assert!(!AuthTokens::none().is_required());
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let rl = RateLimiter::new(RateLimit::new(2.0, 3).unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.take("a", t0).is_ok());
        }
        assert_eq!(rl.take("a", t0), Err(1));
        // Another client has its own bucket.
        assert!(rl.take("b", t0).is_ok());
        // Half a second refills one unit at 2/s.
        assert!(rl.take("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(rl.take("a", t0 + Duration::from_millis(500)).is_err());
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(rl.take("a", later).is_ok());
        }
        assert!(rl.take("a", later).is_err());
        assert!(RateLimit::new(0.0, 1).is_err());
        assert!(RateLimit::new(1.0, 0).is_err());
        assert!(RateLimit::new(f64::NAN, 1).is_err());
    }
}
