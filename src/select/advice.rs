//! Refusals that name a setting that works (issue 14, friction item a): when
//! [`select`] refuses, [`select_with_advice`] tries the nearest requests one
//! change away (less precision, weaker flooding, fewer covered queries, the latency layout,
//! 128-bit security) and appends those that succeed to the refusal.

use super::{select, SelectRequest, Selection};
use crate::ckks::Security;
use crate::model::Adapter;
use crate::plan::{FloodingConfig, Mode};
use crate::{Error, Result};

/// The largest `x` in `lo..=hi` with `ok(x)`, for a predicate true below some threshold
/// and false above it: a binary search (about log2(hi - lo) calls).
fn largest_ok(lo: u32, hi: u32, ok: impl Fn(u32) -> bool) -> Option<u32> {
    let (mut lo, mut hi) = (lo, hi);
    let mut best = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        if ok(mid) {
            best = Some(mid);
            lo = mid + 1;
        } else if mid == 0 {
            break;
        } else {
            hi = mid - 1;
        }
    }
    best
}

/// The changes of one setting that make `req` selectable for `adapter`, as command-line
/// flags with what they keep, e.g. "--flooding-bits 24 (keeping 16 bits)". Each candidate is
/// checked by running the selection: up to about 20 selections in all.
pub fn advice(adapter: &Adapter, req: &SelectRequest) -> Vec<String> {
    let works = |r: &SelectRequest| select(adapter, r).is_ok();
    let mut out = Vec::new();
    let flood_desc = |f: &Option<FloodingConfig>| match f {
        Some(f) => format!("{}-bit flooding", f.statistical_security),
        None => "no flooding".to_string(),
    };
    // Less precision, same flooding.
    if let Some(p) = largest_ok(1, req.precision_bits.saturating_sub(1), |p| {
        works(&SelectRequest {
            precision_bits: p,
            ..*req
        })
    }) {
        out.push(format!(
            "--precision {p} (keeping {})",
            flood_desc(&req.flooding)
        ));
    }
    if let Some(f) = req.flooding {
        // Weaker flooding, same precision.
        if let Some(s) = largest_ok(1, f.statistical_security.saturating_sub(1), |s| {
            works(&SelectRequest {
                flooding: Some(FloodingConfig {
                    statistical_security: s,
                    ..f
                }),
                ..*req
            })
        }) {
            out.push(format!(
                "--flooding-bits {s} (keeping {} bits; weaker than the default, see docs/threat-model.md)",
                req.precision_bits
            ));
        }
        // Fewer decryptions covered.
        if f.queries > 1 {
            let one = SelectRequest {
                flooding: Some(FloodingConfig { queries: 1, ..f }),
                ..*req
            };
            if works(&one) {
                out.push("--flooding-queries 1".into());
            }
        }
    }
    if req.options.mode == Mode::Batch {
        let mut lat = *req;
        lat.options.mode = Mode::Latency;
        lat.batch = None;
        if works(&lat) {
            out.push("--mode latency without --batch (one sample per query)".into());
        }
    }
    if req.security != Security::Bits128 && req.security.bits().is_some() {
        let s128 = SelectRequest {
            security: Security::Bits128,
            ..*req
        };
        if works(&s128) {
            out.push("--security 128".into());
        }
    }
    out
}

/// [`select`]; when it refuses, the refusal is returned with the changes of one setting
/// that work ([`advice`]) appended, or a note that none does.
///
/// Cost: one selection when it succeeds; up to about 20 more when it refuses.
///
/// # Errors
/// What [`select`] returns, with the advice in its reason.
pub fn select_with_advice(adapter: &Adapter, req: &SelectRequest) -> Result<Selection> {
    match select(adapter, req) {
        Ok(s) => Ok(s),
        Err(Error::InvalidParameters { reason }) => {
            let ways = advice(adapter, req);
            let tail = if ways.is_empty() {
                "no change of one setting (precision, flooding bits or queries, layout, security) makes it fit"
                    .to_string()
            } else {
                format!("what works instead: {}", ways.join("; or "))
            };
            Err(Error::params(format!("{reason}. {tail}")))
        }
        Err(e) => Err(e),
    }
}
