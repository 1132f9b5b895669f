//! What a parameter set was selected for, recorded in its TOML file, and the rules by
//! which `keygen`, `evaluate` and `serve` follow that record (issue 14, item 4).
//!
//! `hepeft params select` appends a `[selected_for]` table to the parameter file it writes:
//!
//! ```toml
//! [selected_for]
//! record = 1
//! by = "params select"
//! mode = "latency"
//! precision_bits = 16
//! security_bits = 128
//! noise_flooding = true
//! flooding_bits = 40
//! flooding_queries = 1
//! predicted_precision_bits = 16.4
//! ```
//!
//! The table is not part of the parameter digest (keys and ciphertexts made under a preset
//! and under a selected file with the same primes stay interchangeable), and
//! [`CkksParams::from_toml`] ignores it, so every reader of parameter files keeps working;
//! [`ParamsFile`] reads it. `keygen` copies it into the key directory's `params.toml` (the
//! file the server receives), adding one (`by = "keygen"`, the layout only) when the
//! parameters had none.
//!
//! The rules ([`resolve_mode`], [`resolve_sanitize`]):
//! - **layout**: a command not told a layout takes the recorded one; a layout other than the
//!   recorded one is refused, naming the flag that works.
//! - **flooding**: the server's own level (`--flooding-bits`/`--flooding-queries`, else the
//!   default 40 bits for one query) is a **minimum**: a recorded level or budget above it
//!   raises the flooding, one below it never lowers it (the server refuses instead, naming
//!   the flag that accepts the recorded level); a level or budget that would leave less precision than the set was selected
//!   for is refused, naming the largest level that keeps it and, when it works, the
//!   `params select` call that carries the level asked for. A record of "no flooding"
//!   never turns flooding off by itself: the server must say `--no-flooding`.
//! - a parameter **file** without a record (written before this version, or by hand) loads
//!   with today's defaults (latency layout, 40-bit flooding for one query) and a warning;
//!   presets carry no record and take the same defaults silently.
//!
//! Size: one concern (the `[selected_for]` record and the rules that follow it), whose refusals each name the settings that work, which takes the room.

use super::{select, SelectRequest};
use crate::ckks::{CkksParams, Security};
use crate::model::Adapter;
use crate::plan::DEFAULT_STATISTICAL_SECURITY;
use crate::plan::{FloodingConfig, Mode, Plan, PlanOptions, SanitizeConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Name of the TOML table holding the record.
pub const RECORD_TABLE: &str = crate::ckks::params::SELECTION_TABLE;

/// Version of the record's fields.
pub const RECORD_VERSION: u32 = 1;

/// The flooding a parameter set was selected for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum RecordedFlooding {
    /// Not recorded (a record written by `keygen` for a preset): the defaults apply.
    NotRecorded,
    /// Selected with `--no-flooding`.
    Off,
    /// Selected to carry this flooding level and query budget.
    On {
        /// Statistical security, bits.
        bits: u32,
        /// Decryptions covered at full strength.
        queries: u64,
    },
}

/// What a parameter set was selected for (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SelectionRecord {
    /// Who wrote it: "params select" or "keygen".
    pub by: String,
    /// Packing layout.
    pub mode: Mode,
    /// Samples per query (batch layout), when given.
    pub samples_per_query: Option<usize>,
    /// Output precision asked for (bits, unit-sized logit), if selected for one.
    pub precision_bits: Option<u32>,
    /// Security level asked for, bits.
    pub security_bits: Option<u32>,
    /// Flooding level and query budget.
    pub flooding: RecordedFlooding,
    /// The selector's predicted precision (after flooding), bits.
    pub predicted_precision_bits: Option<f64>,
}

/// The on-disk form (flat, so that the TOML reads well).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordToml {
    record: u32,
    by: String,
    mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    samples_per_query: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    precision_bits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    security_bits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    noise_flooding: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flooding_bits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flooding_queries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    predicted_precision_bits: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct Wrapper {
    selected_for: RecordToml,
}

/// The flag that chooses `mode` on the command line.
pub fn mode_flag(mode: Mode) -> &'static str {
    match mode {
        Mode::Latency => "--mode latency",
        Mode::Batch => "--mode batch",
    }
}

impl SelectionRecord {
    /// The record `params select` writes for a request it satisfied.
    pub fn selected(req: &SelectRequest, predicted_precision_bits: f64) -> Self {
        SelectionRecord {
            by: "params select".into(),
            mode: req.options.mode,
            samples_per_query: req.batch,
            precision_bits: Some(req.precision_bits),
            security_bits: req.security.bits(),
            flooding: match &req.flooding {
                Some(f) => RecordedFlooding::On {
                    bits: f.statistical_security,
                    queries: f.queries,
                },
                None => RecordedFlooding::Off,
            },
            predicted_precision_bits: Some(predicted_precision_bits),
        }
    }

    /// The record `keygen` writes for parameters that had none: the layout of the keys.
    pub fn keygen(mode: Mode) -> Self {
        SelectionRecord {
            by: "keygen".into(),
            mode,
            samples_per_query: None,
            precision_bits: None,
            security_bits: None,
            flooding: RecordedFlooding::NotRecorded,
            predicted_precision_bits: None,
        }
    }

    /// The flooding this record asks for when the command line says nothing: the recorded
    /// level, or the default (40 bits, one query) when none was recorded; `None` when the
    /// set was selected without flooding.
    pub fn flooding_config(&self) -> Option<FloodingConfig> {
        match self.flooding {
            RecordedFlooding::NotRecorded => Some(FloodingConfig::default()),
            RecordedFlooding::Off => None,
            RecordedFlooding::On { bits, queries } => Some(FloodingConfig::new(bits, queries)),
        }
    }

    /// One line for reports: "latency layout, 16 bits after 40-bit flooding for 1 query".
    pub fn describe(&self) -> String {
        let mut s = format!("{} layout", self.mode.name());
        if let Some(b) = self.samples_per_query {
            s.push_str(&format!(" ({b} samples per query)"));
        }
        if let Some(p) = self.precision_bits {
            s.push_str(&format!(", {p} bits"));
        }
        match self.flooding {
            RecordedFlooding::NotRecorded => s.push_str(", flooding not recorded (default)"),
            RecordedFlooding::Off => s.push_str(", WITHOUT noise flooding"),
            RecordedFlooding::On { bits, queries } => s.push_str(&format!(
                " after {bits}-bit noise flooding for {queries} quer{}",
                if queries == 1 { "y" } else { "ies" }
            )),
        }
        if let Some(sec) = self.security_bits {
            s.push_str(&format!(", {sec}-bit security"));
        }
        s.push_str(&format!(" (recorded by `{}`)", self.by));
        s
    }

    fn to_toml_struct(&self) -> RecordToml {
        let (noise_flooding, flooding_bits, flooding_queries) = match self.flooding {
            RecordedFlooding::NotRecorded => (None, None, None),
            RecordedFlooding::Off => (Some(false), None, None),
            RecordedFlooding::On { bits, queries } => (Some(true), Some(bits), Some(queries)),
        };
        RecordToml {
            record: RECORD_VERSION,
            by: self.by.clone(),
            mode: self.mode.name().into(),
            samples_per_query: self.samples_per_query,
            precision_bits: self.precision_bits,
            security_bits: self.security_bits,
            noise_flooding,
            flooding_bits,
            flooding_queries,
            predicted_precision_bits: self
                .predicted_precision_bits
                .map(|p| (p * 10.0).floor() / 10.0),
        }
    }

    fn from_toml_struct(t: RecordToml) -> Result<Self> {
        let bad =
            |reason: String| Error::format("[selected_for] table of the parameter file", reason);
        if t.record != RECORD_VERSION {
            return Err(bad(format!(
                "record version {}, this hepeft reads version {RECORD_VERSION}",
                t.record
            )));
        }
        let mode = Mode::parse(&t.mode)?;
        let flooding = match (t.noise_flooding, t.flooding_bits, t.flooding_queries) {
            (None, None, None) => RecordedFlooding::NotRecorded,
            (Some(false), None, None) => RecordedFlooding::Off,
            (Some(true), Some(bits), Some(queries)) if queries >= 1 => {
                RecordedFlooding::On { bits, queries }
            }
            _ => {
                return Err(bad(
                    "noise_flooding = true needs flooding_bits and flooding_queries (>= 1); \
                     noise_flooding = false takes neither"
                        .into(),
                ))
            }
        };
        if t.samples_per_query.is_some() && mode != Mode::Batch {
            return Err(bad(
                "samples_per_query is only meaningful with mode = \"batch\"".into(),
            ));
        }
        Ok(SelectionRecord {
            by: t.by,
            mode,
            samples_per_query: t.samples_per_query,
            precision_bits: t.precision_bits,
            security_bits: t.security_bits,
            flooding,
            predicted_precision_bits: t.predicted_precision_bits,
        })
    }
}

/// A parameter file: the parameter set and what it was selected for.
#[derive(Clone, Debug)]
pub struct ParamsFile {
    /// The checked parameters.
    pub params: CkksParams,
    /// The `[selected_for]` record, when the file has one.
    pub record: Option<SelectionRecord>,
}

impl ParamsFile {
    /// A parameter set without a record (a preset).
    pub fn bare(params: CkksParams) -> Self {
        ParamsFile {
            params,
            record: None,
        }
    }

    /// Parses a parameter file: the literal (as [`CkksParams::from_toml`]) and an optional
    /// `[selected_for]` table.
    ///
    /// # Errors
    /// [`Error::Format`] for malformed TOML or a malformed record; what
    /// [`CkksParams::from_literal`] refuses.
    pub fn from_toml(text: &str) -> Result<Self> {
        let params = CkksParams::from_toml(text)?;
        let table: toml::Table =
            toml::from_str(text).map_err(|e| Error::format("parameter file", e.to_string()))?;
        let record = match table.get(RECORD_TABLE) {
            None => None,
            Some(v) => {
                let t: RecordToml = v.clone().try_into().map_err(|e: toml::de::Error| {
                    Error::format("[selected_for] table of the parameter file", e.to_string())
                })?;
                Some(SelectionRecord::from_toml_struct(t)?)
            }
        };
        Ok(ParamsFile { params, record })
    }

    /// The TOML text: the literal with frozen primes, then the record (if any).
    pub fn to_toml(&self) -> Result<String> {
        let mut s = self.params.to_toml()?;
        if let Some(r) = &self.record {
            let w = Wrapper {
                selected_for: r.to_toml_struct(),
            };
            let t =
                toml::to_string(&w).map_err(|e| Error::format("parameter file", e.to_string()))?;
            s.push('\n');
            s.push_str(&t);
        }
        Ok(s)
    }

    /// The warning to print when a parameter *file* has no record.
    pub fn missing_record_warning(label: &str) -> String {
        format!(
            "warning: {label} has no [selected_for] record (written before hepeft recorded selections, or by hand): \
             assuming the latency layout and {DEFAULT_STATISTICAL_SECURITY}-bit noise flooding for 1 query; \
             `hepeft params select` writes files that record what they were selected for\n"
        )
    }
}

/// The layout to use: `requested` if given (refused if it differs from the record), else
/// the recorded one, else latency.
///
/// With `ctx`, a refusal also names the `params select` call that gives parameters for the
/// requested layout, after checking that it succeeds.
///
/// # Errors
/// [`Error::Mismatch`] naming the recorded layout and the flag that matches it.
pub fn resolve_mode(
    record: Option<&SelectionRecord>,
    requested: Option<Mode>,
    ctx: Option<&SelectContext<'_>>,
) -> Result<Mode> {
    match (record, requested) {
        (Some(r), Some(m)) if r.mode != m => {
            let security = r
                .security_bits
                .and_then(|b| Security::parse(&b.to_string()).ok())
                .unwrap_or(Security::Bits128);
            let flooding = r.flooding_config().unwrap_or_default();
            let hint = ctx
                .and_then(|c| {
                    select_advice(c, m, r.precision_bits.unwrap_or(16), security, flooding)
                })
                .map_or_else(String::new, |a| {
                    format!(
                        ", or use parameters selected for the {} layout: {a}",
                        m.name()
                    )
                });
            Err(Error::mismatch(
                "layout",
                format!(
                    "the parameters were selected for the {} layout{}, not {}: pass {} (or leave --mode out){hint}",
                    r.mode.name(),
                    r.samples_per_query
                        .map_or_else(String::new, |b| format!(" ({b} samples per query)")),
                    m.name(),
                    mode_flag(r.mode),
                ),
            ))
        }
        (_, Some(m)) => Ok(m),
        (Some(r), None) => Ok(r.mode),
        (None, None) => Ok(Mode::Latency),
    }
}

/// What the command line says about flooding; `None` fields were not given.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FloodingRequest {
    /// `--flooding-bits`.
    pub bits: Option<u32>,
    /// `--flooding-queries`.
    pub queries: Option<u64>,
    /// `--no-flooding`.
    pub off: bool,
    /// The adapter's calibrated error profile ([`crate::select::calibrate()`], computed by
    /// the server from its own weights): the flooding is sized from it.
    pub profile: Option<crate::select::ErrorProfile>,
}

/// The sanitization settled on, and notes for the user.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedSanitize {
    /// What to pass to [`Plan::sanitize`].
    pub config: SanitizeConfig,
    /// Warnings to print (weaker than the default, flooding off, ...).
    pub warnings: Vec<String>,
}

/// Precision (bits) a plan keeps after flooding at `bits` for `queries`.
fn after(plan: &Plan, bits: u32, queries: u64) -> f64 {
    plan.flooded_precision_bits(&FloodingConfig::new(bits, queries))
}

/// The largest flooding level (bits, at most 128) that keeps `target` bits of precision on
/// `plan` for `queries` decryptions, if any.
pub fn max_flooding_bits(plan: &Plan, queries: u64, target: f64) -> Option<u32> {
    (0..=128u32)
        .rev()
        .find(|&s| after(plan, s, queries) >= target)
}

/// Context for advice: the public adapter and what a new selection would ask for. With it
/// a refusal names a `params select` call only after checking that it succeeds.
#[derive(Clone, Copy, Debug)]
pub struct SelectContext<'a> {
    /// The adapter (its public structure is enough).
    pub adapter: &'a Adapter,
    /// The command line that would run it, e.g. "hepeft params select --model card.toml".
    pub command: &'a str,
}

/// `command` with the flooding flags of `f`, if `params select` succeeds for it at
/// `precision` bits in `mode` (checked by running the selection), with the ring it picks.
fn select_advice(
    ctx: &SelectContext<'_>,
    mode: Mode,
    precision: u32,
    security: Security,
    f: FloodingConfig,
) -> Option<String> {
    let req = SelectRequest {
        precision_bits: precision,
        security,
        options: PlanOptions {
            mode,
            ..Default::default()
        },
        batch: None,
        flooding: Some(f),
        profile: None,
    };
    let sel = select(ctx.adapter, &req).ok()?;
    let mut cmd = format!("{} --precision {precision}", ctx.command);
    if mode == Mode::Batch {
        cmd.push_str(" --mode batch");
    }
    if f.statistical_security != DEFAULT_STATISTICAL_SECURITY {
        cmd.push_str(&format!(" --flooding-bits {}", f.statistical_security));
    }
    if f.queries != 1 {
        cmd.push_str(&format!(" --flooding-queries {}", f.queries));
    }
    Some(format!("`{cmd}` (picks N = 2^{})", sel.params.log_n()))
}

/// The strongest flooding level below `bits` (at least 8) for which `params select`
/// succeeds, with its advice: a binary search, about five selections.
fn strongest_selectable(
    ctx: &SelectContext<'_>,
    mode: Mode,
    precision: u32,
    security: Security,
    bits: u32,
    queries: u64,
) -> Option<(u32, String)> {
    let try_at = |s: u32| {
        select_advice(
            ctx,
            mode,
            precision,
            security,
            FloodingConfig::new(s, queries),
        )
    };
    let (mut lo, mut hi) = (8u32, bits.checked_sub(1)?);
    let mut best = None;
    while lo <= hi {
        let mid = (lo + hi) / 2;
        match try_at(mid) {
            Some(a) => {
                best = Some((mid, a));
                lo = mid + 1;
            }
            None => match mid.checked_sub(1) {
                Some(h) => hi = h,
                None => break,
            },
        }
    }
    best
}

/// The sanitization to run for `plan`, from the command line and the parameters' record
/// (see the module docs for the rules).
///
/// `ctx`, when given, lets a refusal name a `params select` call that works (each candidate
/// is checked by running the selection: a few compilations of the plan).
///
/// # Errors
/// [`Error::InvalidParameters`] when the flooding asked for (or, without a flag, recorded)
/// would leave less precision than the set was selected for (1 bit without a record), or a
/// set selected without flooding is used without `--no-flooding`; the message names the
/// settings that work.
pub fn resolve_sanitize(
    record: Option<&SelectionRecord>,
    req: &FloodingRequest,
    plan: &Plan,
    ctx: Option<&SelectContext<'_>>,
) -> Result<ResolvedSanitize> {
    let mut warnings = Vec::new();
    if req.off {
        return Ok(ResolvedSanitize {
            config: SanitizeConfig::without_flooding(),
            warnings,
        });
    }
    let recorded = record.map_or(RecordedFlooding::NotRecorded, |r| r.flooding);
    let (rec_bits, rec_queries) = match recorded {
        RecordedFlooding::On { bits, queries } => (Some(bits), Some(queries)),
        _ => (None, None),
    };
    // The server's own level (its flag, else the default) is a minimum: a record can
    // raise the flooding, never lower it.
    let server_bits = req.bits.unwrap_or(DEFAULT_STATISTICAL_SECURITY);
    let server_queries = req.queries.unwrap_or(1).max(1);
    let bits = rec_bits.map_or(server_bits, |r| r.max(server_bits));
    let queries = rec_queries.map_or(server_queries, |r| r.max(server_queries));
    let below_minimum = rec_bits.is_some_and(|r| r < server_bits)
        || rec_queries.is_some_and(|r| r < server_queries);
    let f =
        FloodingConfig::new(bits, queries).with_error_offset(req.profile.map(|p| p.offset_bits));
    let predicted =
        plan.flooded_precision_bits(&f) + req.profile.map_or(0.0, |p| p.logit_floor_log2.min(0.0));
    let target = record.and_then(|r| r.precision_bits);
    // Never refuse the exact setting the parameters were selected for: the selector's
    // figure for it is the contract (it may be a fraction of a bit under the target on
    // another adapter of the same shape).
    let is_recorded = rec_bits == Some(bits) && rec_queries == Some(queries);
    let floor = target.map_or(1.0, f64::from);
    if !is_recorded && predicted < floor {
        let mode = plan.options().mode;
        let security = record
            .and_then(|r| r.security_bits)
            .and_then(|b| Security::parse(&b.to_string()).ok())
            .unwrap_or(Security::Bits128);
        let plural = |q: u64| if q == 1 { "query" } else { "queries" };
        let mut ways = Vec::new();
        match (rec_bits, rec_queries) {
            (Some(rb), Some(rq)) => {
                let mut flags = format!("--flooding-bits {rb}");
                if rq != 1 {
                    flags.push_str(&format!(" --flooding-queries {rq}"));
                }
                ways.push(format!(
                    "pass {flags} (what these parameters were selected for) or leave the flooding flags out"
                ));
            }
            _ => {
                // The strongest level these parameters carry while keeping a useful
                // precision (16 bits, or the recorded target), else the floor.
                let useful = f64::from(target.unwrap_or(16)).max(floor);
                let best = max_flooding_bits(plan, queries, useful)
                    .map(|m| (m, useful))
                    .or_else(|| max_flooding_bits(plan, queries, floor).map(|m| (m, floor)));
                if let Some((m, keep)) = best {
                    ways.push(format!(
                        "pass --flooding-bits {m} (the most these parameters carry keeping {keep} bits for {queries} {})",
                        plural(queries)
                    ));
                }
            }
        }
        if let Some(ctx) = ctx {
            let precision = target.unwrap_or(16);
            if let Some(a) = select_advice(ctx, mode, precision, security, f) {
                ways.push(format!(
                    "have the client select parameters for {bits}-bit flooding: {a}"
                ));
            } else if let Some((m, a)) =
                strongest_selectable(ctx, mode, precision, security, bits, queries)
            {
                ways.push(format!(
                    "no parameter set up to N = 2^16 carries {bits}-bit flooding at {precision} bits for this \
                     adapter; the strongest that does is {m}-bit: {a} (then --flooding-bits {m})"
                ));
            }
        }
        ways.push("for a trusted client only, --no-flooding".into());
        let what = if recorded == RecordedFlooding::Off && req.bits.is_none() {
            format!(
                "these parameters were selected WITHOUT noise flooding, and the default {bits}-bit flooding \
                 would leave {predicted:.1} bits of precision"
            )
        } else if let (true, Some(t), Some(rb)) = (below_minimum, target, rec_bits) {
            format!(
                "these parameters were selected for {rb}-bit noise flooding ({}), below this server's minimum of \
                 {server_bits} bits for {server_queries} {} (a parameter record never lowers the server's \
                 flooding); at {bits} bits they would leave {predicted:.1} bits of precision, not {t}",
                record.map_or_else(String::new, SelectionRecord::describe),
                plural(server_queries)
            )
        } else if let Some(t) = target {
            format!(
                "noise flooding at {bits} bits would leave {predicted:.1} bits of precision for {queries} {}, \
                 but these parameters were selected for {t} bits ({})",
                plural(queries),
                record.map_or_else(String::new, SelectionRecord::describe)
            )
        } else {
            format!(
                "noise flooding at {bits} bits would leave {predicted:.1} bits of precision for {queries} {} \
                 with these parameters",
                plural(queries)
            )
        };
        return Err(Error::params(format!("{what}: {}", ways.join("; or "))));
    }
    if bits < DEFAULT_STATISTICAL_SECURITY {
        warnings.push(format!(
            "note: noise flooding at {bits} bits{}, weaker than the default {DEFAULT_STATISTICAL_SECURITY} bits \
             (docs/threat-model.md)\n",
            if req.bits.is_none() {
                " (the level the parameters record)"
            } else {
                ""
            }
        ));
    }
    Ok(ResolvedSanitize {
        config: SanitizeConfig { flooding: Some(f) },
        warnings,
    })
}
