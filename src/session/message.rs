//! What travels between client and server: encrypted queries and results
//! ([`Ciphertexts`], with the aliases [`Query`] and [`QueryResult`]) and the JSON sidecar
//! written next to them on disk ([`CtMeta`]).
//!
//! On the wire and on disk a query or result is one `CiphertextBundle` envelope with a
//! binding block (see `io::binding` and docs/file-formats.md); [`Ciphertexts::to_bytes`]
//! writes exactly the bytes `hepeft encrypt` and `hepeft evaluate` write.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ckks::{
    from_bytes_bound, load_bound, save_bound, to_bytes_bound, Ciphertext, CiphertextBundle,
    CkksParams,
};
use crate::io::binding::{Binding, Role};
use crate::io::format::digest_hex;
use crate::io::limits::{read_text, MAX_TEXT_FILE};
use crate::plan::{Mode, Plan, PlanOptions};
use crate::{Error, Result};

use super::keydir::json_bytes;

/// Version tag of the query / result metadata.
pub const META_FORMAT: &str = "hepeft-ciphertext-meta/1";

/// Encrypted queries or results of one exchange, in order, with their binding (key set,
/// plan structure, role, samples per query). `items` holds
/// `binding.queries.len() * binding.per_query` ciphertexts.
#[derive(Clone, Debug)]
pub struct Ciphertexts {
    /// The ciphertexts, query after query.
    pub items: Vec<Ciphertext>,
    /// What they are bound to; `binding.role` says query or result.
    pub binding: Binding,
}

/// Encrypted samples, as the client sends them ([`Role::Query`]).
pub type Query = Ciphertexts;
/// An evaluated, sanitized query, as the server returns it ([`Role::Result`]).
pub type QueryResult = Ciphertexts;

impl Ciphertexts {
    /// Number of samples (the sum over queries).
    pub fn samples(&self) -> usize {
        self.binding.queries.iter().map(|&q| q as usize).sum()
    }

    /// Samples in each query, in order.
    pub fn queries(&self) -> Vec<usize> {
        self.binding.queries.iter().map(|&q| q as usize).collect()
    }

    /// Ciphertexts per query.
    pub fn per_query(&self) -> usize {
        self.binding.per_query as usize
    }

    /// The ciphertexts of each query, in order.
    pub fn chunks(&self) -> std::slice::Chunks<'_, Ciphertext> {
        self.items.chunks(self.per_query().max(1))
    }

    /// The envelope bytes: a bound `CiphertextBundle` under `params` (what `hepeft
    /// encrypt` writes to disk and `/v1/evaluate` carries). Costs one copy of the
    /// ciphertexts plus a checksum.
    ///
    /// # Errors
    /// [`Error::ParameterMismatch`] if a ciphertext belongs to other parameters.
    pub fn to_bytes(&self, params: &CkksParams) -> Result<Vec<u8>> {
        to_bytes_bound(params, &self.bundle(params), &self.binding)
    }

    /// Parses one bound bundle envelope and checks its role is `role`. The binding's
    /// key set, plan and shape are checked by the consumer
    /// ([`super::Server::evaluate_queries`], [`super::Client::decrypt`]).
    ///
    /// # Errors
    /// Envelope errors; [`Error::Mismatch`] ("binding", "role") for a bundle without
    /// binding or of another role.
    pub fn from_bytes(params: &CkksParams, bytes: &[u8], role: Role) -> Result<Ciphertexts> {
        let (bundle, binding): (CiphertextBundle, _) = from_bytes_bound(params, bytes)?;
        Self::checked(bundle, binding, role)
    }

    /// Writes [`Ciphertexts::to_bytes`] to `path` atomically.
    ///
    /// # Errors
    /// As [`Ciphertexts::to_bytes`]; [`Error::Io`] on file-system failures.
    pub fn save(&self, path: &Path, params: &CkksParams) -> Result<()> {
        save_bound(path, params, &self.bundle(params), &self.binding)
    }

    /// Reads a bundle written by [`Ciphertexts::save`] (size-checked before reading).
    ///
    /// # Errors
    /// As [`Ciphertexts::from_bytes`]; [`Error::Io`].
    pub fn load(path: &Path, params: &CkksParams, role: Role) -> Result<Ciphertexts> {
        let (bundle, binding): (CiphertextBundle, _) = load_bound(path, params)?;
        Self::checked(bundle, binding, role)
    }

    fn checked(bundle: CiphertextBundle, binding: Option<Binding>, role: Role) -> Result<Self> {
        let what = match role {
            Role::Query => "the query",
            Role::Result => "the result",
            _ => "the ciphertext bundle",
        };
        let binding = super::require_binding(binding, what)?;
        super::binding::check_role(&binding, role, "the ciphertext")?;
        Ok(Ciphertexts {
            items: bundle.items,
            binding,
        })
    }

    fn bundle(&self, params: &CkksParams) -> CiphertextBundle {
        CiphertextBundle {
            digest: params.digest(),
            items: self.items.clone(),
        }
    }

    /// The sidecar describing these ciphertexts, for `plan` in `mode`.
    pub fn meta(&self, plan: &Plan) -> CtMeta {
        let params = plan.params();
        CtMeta {
            format: META_FORMAT.into(),
            content: self.binding.role.name().into(),
            mode: plan.options().mode.name().into(),
            samples: self.samples(),
            queries: self.queries(),
            ciphertexts_per_query: self.per_query(),
            structure_digest: digest_hex(&self.binding.structure),
            params_digest: digest_hex(&params.digest()),
            key_id: self.binding.key_set.hex(),
            pre_rotate: plan.options().pre_rotate,
            batch_pack: plan.options().batch_pack,
        }
    }
}

/// Metadata written next to a query (`query.ct.json`) or a result (`result.ct.json`).
/// The binding inside the ciphertext envelope is authoritative; the sidecar is checked
/// against it ([`CtMeta::check_binding`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtMeta {
    /// [`META_FORMAT`].
    pub format: String,
    /// `query` or `result`.
    pub content: String,
    /// `latency` or `batch`.
    pub mode: String,
    /// Total number of samples.
    pub samples: usize,
    /// Samples in each query, in order (latency: all 1; batch: at most N/2 each).
    pub queries: Vec<usize>,
    /// Ciphertexts per query; the bundle holds `queries.len() * ciphertexts_per_query`.
    pub ciphertexts_per_query: usize,
    /// Plan structure digest (hex) the client compiled.
    pub structure_digest: String,
    /// Parameter digest (hex).
    pub params_digest: String,
    /// Identifier of the public key the query was encrypted under.
    pub key_id: String,
    /// Client pre-rotated input copies per segment, at most (the plan option `pre_rotate`;
    /// absent, 1, for the replicated layout).
    #[serde(
        default = "super::description::one",
        skip_serializing_if = "super::description::is_one"
    )]
    pub pre_rotate: usize,
    /// Batch mode: input features per query ciphertext (the plan option `batch_pack`;
    /// absent, 1, for one ciphertext per feature).
    #[serde(
        default = "super::description::one",
        skip_serializing_if = "super::description::is_one"
    )]
    pub batch_pack: usize,
}

/// `<file>.json`: where the sidecar of a ciphertext file lives.
pub fn meta_path(ct: &Path) -> PathBuf {
    let mut s = ct.as_os_str().to_os_string();
    s.push(".json");
    PathBuf::from(s)
}

impl CtMeta {
    /// Pretty JSON with a final newline.
    ///
    /// # Errors
    /// [`Error::Format`] if serialization fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        json_bytes(self, "ciphertext metadata")
    }

    /// The mode the sidecar names.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for an unknown mode.
    pub fn mode(&self) -> Result<Mode> {
        Mode::parse(&self.mode)
    }

    /// The plan options the sidecar names (mode and input layout).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for an unknown mode.
    pub fn plan_options(&self) -> Result<PlanOptions> {
        Ok(PlanOptions {
            mode: self.mode()?,
            pre_rotate: self.pre_rotate,
            batch_pack: self.batch_pack,
            ..PlanOptions::default()
        })
    }

    /// Reads the sidecar of the ciphertext file `ct` and checks its format tag, its
    /// content (`query` or `result`), its parameter digest against `params` and its sample
    /// counts. A small file read.
    ///
    /// # Errors
    /// [`Error::Refused`] if the sidecar is missing; [`Error::Format`];
    /// [`Error::Mismatch`] ("parameter", "content").
    pub fn read(ct: &Path, content: &str, params: &CkksParams) -> Result<CtMeta> {
        let path = meta_path(ct);
        if !path.is_file() {
            return Err(Error::Refused {
                reason: format!(
                    "missing {}: the {content} metadata written next to {} by hepeft (keep the two files together)",
                    path.display(),
                    ct.display()
                ),
            });
        }
        let what = format!("{content} metadata");
        let text = read_text(&path, MAX_TEXT_FILE, &what)?;
        let meta: CtMeta = serde_json::from_str(&text).map_err(|e| {
            Error::format(
                what.clone(),
                format!("{} is malformed: {e}", path.display()),
            )
        })?;
        if meta.format != META_FORMAT {
            return Err(Error::format(
                what,
                format!(
                    "{}: unsupported metadata format {:?} (expected {META_FORMAT})",
                    path.display(),
                    meta.format
                ),
            ));
        }
        if meta.content != content {
            return Err(Error::mismatch(
                "content",
                format!(
                    "{} describes a {}, expected a {content}",
                    ct.display(),
                    meta.content
                ),
            ));
        }
        if meta.params_digest != digest_hex(&params.digest()) {
            return Err(Error::mismatch(
                "parameter",
                format!(
                    "{} was made for parameters {}, expected {}",
                    ct.display(),
                    meta.params_digest.chars().take(16).collect::<String>(),
                    params.digest_short()
                ),
            ));
        }
        if meta.queries.iter().sum::<usize>() != meta.samples || meta.queries.contains(&0) {
            return Err(Error::format(
                what,
                format!("{}: inconsistent sample counts", path.display()),
            ));
        }
        Ok(meta)
    }

    /// Writes the sidecar of the ciphertext file `ct` atomically.
    ///
    /// # Errors
    /// [`Error::Io`] on file-system failures (or a key file at the sidecar's path).
    pub fn write(&self, ct: &Path) -> Result<()> {
        crate::io::format::write_bytes_atomic(meta_path(ct), &self.to_bytes()?, None)
    }

    /// Checks every field of the sidecar of `ct` against the binding inside its envelope
    /// (the envelope is authoritative: a ciphertext swapped under an untouched sidecar, or
    /// an edited sidecar, is refused here).
    ///
    /// # Errors
    /// [`Error::Mismatch`] ("sidecar") naming the field.
    pub fn check_binding(&self, ct: &Path, binding: &Binding, mode: Mode) -> Result<()> {
        let path = meta_path(ct);
        let mismatch = |field: &str, side: String, env: String| -> Result<()> {
            if side != env {
                return Err(Error::mismatch(
                    "sidecar",
                    format!(
                        "{}: field `{field}` is {side}, but the ciphertext in {} is bound to {env}: the two \
                         files do not belong together (keep each ciphertext with its own .json)",
                        path.display(),
                        ct.display()
                    ),
                ));
            }
            Ok(())
        };
        mismatch("key_id", self.key_id.clone(), binding.key_set.hex())?;
        mismatch(
            "structure_digest",
            self.structure_digest.clone(),
            digest_hex(&binding.structure),
        )?;
        mismatch(
            "ciphertexts_per_query",
            self.ciphertexts_per_query.to_string(),
            binding.per_query.to_string(),
        )?;
        mismatch(
            "queries",
            format!("{:?}", self.queries),
            format!("{:?}", binding.queries),
        )?;
        mismatch(
            "content",
            self.content.clone(),
            binding.role.name().to_string(),
        )?;
        mismatch("mode", self.mode.clone(), mode.name().to_string())
    }
}
