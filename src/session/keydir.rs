//! The client's key directory: its file names, `plan.json` ([`PlanInfo`]) and the checks
//! that the directory's files belong together and to a plan ([`KeyDir`]).
//!
//! ```text
//! keys/
//!   secret.key    secret key, mode 0600, bound to the key set and plan (never leaves)
//!   public.key    public key; its SHA-256 prefix is the key-set id
//!   eval.keys     evaluation keys (carry the public key), bound like the secret key
//!   params.toml   the parameter set, frozen primes
//!   plan.json     PlanInfo: what the keys were made for
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ckks::{
    load, load_bound, save, save_bound, CkksParams, EvaluationKeys, PublicKey, SecretKey,
};
use crate::io::binding::{Binding, KeySetId};
use crate::io::format::{digest_hex, write_bytes_atomic};
use crate::io::limits::{read_text, MAX_TEXT_FILE};
use crate::plan::{Mode, Plan, PlanOptions};
use crate::{Error, Result};

use super::client::ClientKeys;
use super::message::CtMeta;

/// Secret key (never leaves the client; mode 0600).
pub const SECRET_KEY: &str = "secret.key";
/// Public encryption key.
pub const PUBLIC_KEY: &str = "public.key";
/// Evaluation keys (the only key file the server receives).
pub const EVAL_KEYS: &str = "eval.keys";
/// Parameter set (TOML, frozen primes).
pub const PARAMS_TOML: &str = "params.toml";
/// Plan metadata (JSON, [`PlanInfo`]).
pub const PLAN_JSON: &str = "plan.json";

/// Version tag of `plan.json`.
pub const PLAN_FORMAT: &str = "hepeft-plan/1";

/// `plan.json` of a key directory: what the keys were made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInfo {
    /// [`PLAN_FORMAT`].
    pub format: String,
    /// `latency` or `batch`.
    pub mode: String,
    /// Plan structure digest (hex).
    pub structure_digest: String,
    /// Parameter digest (hex).
    pub params_digest: String,
    /// Identifier of public.key (first 16 hex digits of its SHA-256).
    pub key_id: String,
    /// Galois elements of the evaluation keys (exactly the plan's).
    pub galois_elements: Vec<crate::ckks::GaloisElement>,
    /// Rotation steps behind them.
    pub rotation_steps: Vec<i64>,
    /// Whether eval.keys holds a relinearization key.
    pub relinearization: bool,
    /// Widths of the adapter inputs.
    pub input_dims: Vec<usize>,
    /// Width of the output.
    pub output_dim: usize,
    /// Client pre-rotated input copies per segment, at most ([`PlanOptions::pre_rotate`];
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

impl PlanInfo {
    /// The metadata of keys of key set `key_set` generated for `plan`. Costs the plan's
    /// structure digest (one SHA-256 over its description).
    pub fn for_plan(plan: &Plan, key_set: KeySetId) -> PlanInfo {
        PlanInfo {
            format: PLAN_FORMAT.into(),
            mode: plan.options().mode.name().into(),
            structure_digest: digest_hex(&plan.structure_digest()),
            params_digest: digest_hex(&plan.params().digest()),
            key_id: key_set.hex(),
            galois_elements: plan.galois_elements(),
            rotation_steps: plan.rotation_steps(),
            relinearization: plan.needs_relin(),
            input_dims: plan.input_dims().to_vec(),
            output_dim: plan.output_dim(),
            pre_rotate: plan.options().pre_rotate,
            batch_pack: plan.options().batch_pack,
        }
    }

    /// Pretty JSON with a final newline (the bytes of `plan.json`).
    ///
    /// # Errors
    /// [`Error::Format`] if serialization fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        json_bytes(self, "plan metadata")
    }

    /// Parses `plan.json` and checks its format tag.
    ///
    /// # Errors
    /// [`Error::Format`] for malformed JSON or another format tag.
    pub fn from_bytes(bytes: &[u8]) -> Result<PlanInfo> {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
            if v.get("format").and_then(|f| f.as_str()) == Some(super::token::TOKEN_PLAN_FORMAT) {
                return Err(Error::format(
                    "plan metadata",
                    "this key directory holds keys for a token adapter (hepeft-token-plan/1): pass its token \
                     card as --model (`hepeft serve`, `query` and `tune` do not handle token adapters yet)",
                ));
            }
        }
        let info: PlanInfo = serde_json::from_slice(bytes)
            .map_err(|e| Error::format("plan metadata", e.to_string()))?;
        if info.format != PLAN_FORMAT {
            return Err(Error::format(
                "plan metadata",
                format!("unsupported plan metadata format {:?}", info.format),
            ));
        }
        Ok(info)
    }

    /// The mode `plan.json` names.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for an unknown mode.
    pub fn mode(&self) -> Result<Mode> {
        Mode::parse(&self.mode)
    }

    /// The plan options `plan.json` names (mode and input layout).
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

    /// The key-set id `plan.json` names.
    ///
    /// # Errors
    /// [`Error::Format`] if `key_id` is not 16 hex digits.
    pub fn key_set(&self) -> Result<KeySetId> {
        KeySetId::from_hex(&self.key_id)
    }
}

/// The parameter set of key directory `dir` (`params.toml`), the path of its `plan.json` and
/// that file's text: what [`KeyDir::open`] and the token key directory both read first. Two
/// small bounded file reads and the parameter set's construction.
///
/// # Errors
/// [`Error::Refused`] if `dir` has no `params.toml`; [`Error::Format`] or [`Error::Io`] for
/// unreadable files.
pub(crate) fn read_key_dir_files(dir: &Path) -> Result<(CkksParams, PathBuf, String)> {
    let ptoml = dir.join(PARAMS_TOML);
    if !ptoml.is_file() {
        return Err(Error::Refused {
            reason: format!(
                "{} is not a key directory (no {PARAMS_TOML}); create one with `hepeft keygen`",
                dir.display()
            ),
        });
    }
    let params = CkksParams::from_toml(&read_text(&ptoml, MAX_TEXT_FILE, "parameter file")?)?;
    let pj = dir.join(PLAN_JSON);
    let text = read_text(&pj, MAX_TEXT_FILE, "plan metadata")?;
    Ok((params, pj, text))
}

/// Checks that `plan.json` of `dir` (its `params_digest`, hex) names `params`.
///
/// # Errors
/// [`Error::Mismatch`] ("parameter") naming both digests.
pub(crate) fn check_plan_params(
    dir: &Path,
    params_digest: &str,
    params: &CkksParams,
) -> Result<()> {
    if params_digest != digest_hex(&params.digest()) {
        return Err(Error::mismatch(
            "parameter",
            format!(
                "inside {}: plan.json names parameters {}, params.toml is {}",
                dir.display(),
                params_digest.chars().take(16).collect::<String>(),
                params.digest_short()
            ),
        ));
    }
    Ok(())
}

/// Pretty JSON of `value` with a final newline.
pub(crate) fn json_bytes<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| Error::format(what, e.to_string()))?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// A key directory as `hepeft keygen` (or [`KeyDir::create`]) wrote it: its parameter set
/// and `plan.json`, checked to agree. The key files themselves are read on demand
/// ([`KeyDir::public_key`], [`KeyDir::secret_key`]).
#[derive(Debug, Clone)]
pub struct KeyDir {
    /// The directory.
    pub dir: PathBuf,
    /// `params.toml`.
    pub params: CkksParams,
    /// `plan.json`.
    pub info: PlanInfo,
    /// The mode `plan.json` names.
    pub mode: Mode,
}

impl KeyDir {
    /// Reads `params.toml` and `plan.json` of `dir` and checks they agree. Costs two small
    /// file reads and the parameter set's construction (prime checks, NTT tables).
    ///
    /// # Errors
    /// [`Error::Refused`] if `dir` has no `params.toml`; [`Error::Format`] for a malformed
    /// file; [`Error::Mismatch`] ("parameter") if the two files name other parameters.
    pub fn open(dir: &Path) -> Result<KeyDir> {
        let (params, pj, text) = read_key_dir_files(dir)?;
        let info = PlanInfo::from_bytes(text.as_bytes()).map_err(|e| match e {
            Error::Format { what, reason } => {
                Error::format(what, format!("{}: {reason}", pj.display()))
            }
            other => other,
        })?;
        check_plan_params(dir, &info.params_digest, &params)?;
        let mode = info.mode()?;
        Ok(KeyDir {
            dir: dir.to_path_buf(),
            params,
            info,
            mode,
        })
    }

    /// Writes a new key directory: `params.toml` (headed by a comment naming the writer),
    /// `public.key`, `eval.keys`, `secret.key` (mode 0600) and `plan.json`, each
    /// atomically. Refuses to replace an existing secret key unless `force`. Costs the
    /// serialization of the keys (the evaluation keys dominate: one switching key per
    /// Galois element).
    ///
    /// # Errors
    /// [`Error::Refused`] for an existing secret key without `force`; [`Error::Io`] on
    /// file-system failures; [`Error::MissingKey`] if `keys` has no public key.
    pub fn create(dir: &Path, plan: &Plan, keys: &ClientKeys, force: bool) -> Result<KeyDir> {
        Self::create_with_record(dir, plan, keys, force, None)
    }

    /// [`KeyDir::create`] with the `[selected_for]` record of the parameter set written
    /// into `params.toml` (what the set was selected for travels with it to the server;
    /// see [`crate::select::record`]).
    ///
    /// # Errors
    /// As [`KeyDir::create`].
    pub fn create_with_record(
        dir: &Path,
        plan: &Plan,
        keys: &ClientKeys,
        force: bool,
        record: Option<&crate::select::SelectionRecord>,
    ) -> Result<KeyDir> {
        let public = keys.public.as_ref().ok_or_else(|| Error::MissingKey {
            what: "public key (a key directory holds one)".into(),
        })?;
        create_from_parts(
            dir,
            plan,
            KeyParts {
                secret: &keys.secret,
                public,
                eval: &keys.eval,
                binding: &keys.binding,
            },
            force,
            record,
        )
    }

    /// Checks that `plan` (compiled from `source`, named in the message) is the plan the
    /// keys were made for: the structure digest, and every other field of `plan.json`
    /// against the plan (Galois elements, rotation steps, relinearization, input and
    /// output widths), so an edited `plan.json` is refused rather than believed. A few
    /// comparisons plus the structure digest.
    ///
    /// # Errors
    /// [`Error::Mismatch`] ("model") naming the field.
    pub fn check_plan(&self, plan: &Plan, source: &Path) -> Result<()> {
        let got = digest_hex(&plan.structure_digest());
        if got != self.info.structure_digest {
            return Err(Error::mismatch(
                "model",
                format!(
                    "the keys in {} were made for a plan with structure digest {} ({} mode), but {} compiles \
                     to {}: use the model card the keys were generated with, or run keygen again",
                    self.dir.display(),
                    self.info.structure_digest.chars().take(16).collect::<String>(),
                    self.info.mode,
                    source.display(),
                    &got[..16]
                ),
            ));
        }
        let pj = self.path(PLAN_JSON);
        let field = |name: &str, found: String, want: String| -> Result<()> {
            if found != want {
                return Err(Error::mismatch(
                    "model",
                    format!(
                        "{}: field `{name}` is {found} but the plan it names has {want} (the file was edited \
                         or mixed up): run keygen again",
                        pj.display()
                    ),
                ));
            }
            Ok(())
        };
        let i = &self.info;
        field(
            "galois_elements",
            format!("{:?}", i.galois_elements),
            format!("{:?}", plan.galois_elements()),
        )?;
        field(
            "rotation_steps",
            format!("{:?}", i.rotation_steps),
            format!("{:?}", plan.rotation_steps()),
        )?;
        field(
            "relinearization",
            i.relinearization.to_string(),
            plan.needs_relin().to_string(),
        )?;
        field(
            "input_dims",
            format!("{:?}", i.input_dims),
            format!("{:?}", plan.input_dims()),
        )?;
        field(
            "output_dim",
            i.output_dim.to_string(),
            plan.output_dim().to_string(),
        )
    }

    /// The key-set id `plan.json` names.
    ///
    /// # Errors
    /// [`Error::Format`] naming `plan.json`'s field `key_id`.
    pub fn key_set(&self) -> Result<KeySetId> {
        self.info.key_set().map_err(|e| {
            Error::format(
                "plan metadata",
                format!("{}: field `key_id`: {e}", self.path(PLAN_JSON).display()),
            )
        })
    }

    /// Checks the sidecar of a result (`ct`) names this directory's plan and key set
    /// before anything is decrypted.
    ///
    /// # Errors
    /// [`Error::Mismatch`] ("model" or "key").
    pub fn check_meta(&self, meta: &CtMeta, ct: &Path) -> Result<()> {
        if meta.structure_digest != self.info.structure_digest {
            return Err(Error::mismatch(
                "model",
                format!(
                    "{} was computed for a plan with structure digest {}, the keys in {} are for {}",
                    ct.display(),
                    meta.structure_digest.chars().take(16).collect::<String>(),
                    self.dir.display(),
                    self.info.structure_digest.chars().take(16).collect::<String>()
                ),
            ));
        }
        if meta.key_id != self.info.key_id {
            return Err(Error::mismatch(
                "key",
                format!(
                    "{} was encrypted under public key {}, the keys in {} are {}: it cannot be decrypted with them",
                    ct.display(),
                    meta.key_id,
                    self.dir.display(),
                    self.info.key_id
                ),
            ));
        }
        Ok(())
    }

    /// `dir/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads `public.key` and checks it is the key `plan.json` names. Costs reading the
    /// key and one SHA-256 over it.
    ///
    /// # Errors
    /// Format and parameter errors of [`load`]; [`Error::Mismatch`] ("key set").
    pub fn public_key(&self) -> Result<(PublicKey, KeySetId)> {
        let pk_path = self.path(PUBLIC_KEY);
        let pk: PublicKey = load(&pk_path, &self.params)?;
        let key_set = super::key_set_id(&self.params, &pk)?;
        if key_set.hex() != self.info.key_id {
            return Err(Error::mismatch(
                "key set",
                format!(
                    "{} (key id {key_set}) is not the public key {} was written with (key id {})",
                    pk_path.display(),
                    self.path(PLAN_JSON).display(),
                    self.info.key_id
                ),
            ));
        }
        Ok((pk, key_set))
    }

    /// Reads `secret.key` and checks it belongs to this directory's key set and, when
    /// given, to `plan`. Returns the key and its binding.
    ///
    /// # Errors
    /// Format and parameter errors of [`load_bound`]; [`Error::Mismatch`] from
    /// [`super::check_secret_matches_public`].
    pub fn secret_key(&self, plan: Option<&Plan>) -> Result<(SecretKey, Binding)> {
        let sk_path = self.path(SECRET_KEY);
        let (sk, binding): (SecretKey, _) = load_bound(&sk_path, &self.params)?;
        let binding = super::check_secret_matches_public(binding.as_ref(), self.key_set()?, plan)?;
        Ok((sk, binding))
    }
}

/// Refuses to write keys into `dir` if it already holds a secret key, unless `force`
/// (results encrypted under the old key could no longer be decrypted). Call it before
/// generating keys, so the refusal costs nothing. One `stat`.
///
/// # Errors
/// [`Error::Refused`].
pub fn check_writable(dir: &Path, force: bool) -> Result<()> {
    let sk_path = dir.join(SECRET_KEY);
    if sk_path.exists() && !force {
        return Err(Error::Refused {
            reason: format!(
                "{} already exists: refusing to overwrite a secret key (results encrypted under it could \
                 no longer be decrypted); pass --force or choose another --out",
                sk_path.display()
            ),
        });
    }
    Ok(())
}

/// Borrowed keys of a key directory.
pub(crate) struct KeyParts<'a> {
    pub(crate) secret: &'a SecretKey,
    pub(crate) public: &'a PublicKey,
    pub(crate) eval: &'a EvaluationKeys,
    pub(crate) binding: &'a Binding,
}

/// [`KeyDir::create`] from borrowed keys.
pub(crate) fn create_from_parts(
    dir: &Path,
    plan: &Plan,
    keys: KeyParts<'_>,
    force: bool,
    record: Option<&crate::select::SelectionRecord>,
) -> Result<KeyDir> {
    let params = plan.params();
    check_writable(dir, force)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let sk_path = dir.join(SECRET_KEY);
    let header = format!("# Written by `hepeft keygen`: {}\n", params.describe());
    let body = crate::select::ParamsFile {
        params: params.clone(),
        record: record.cloned(),
    }
    .to_toml()?;
    write_bytes_atomic(
        dir.join(PARAMS_TOML),
        format!("{header}{body}").as_bytes(),
        None,
    )?;
    save(dir.join(PUBLIC_KEY), params, keys.public)?;
    save_bound(dir.join(EVAL_KEYS), params, keys.eval, keys.binding)?;
    save_bound(&sk_path, params, keys.secret, keys.binding)?;
    let info = PlanInfo::for_plan(plan, keys.binding.key_set);
    write_bytes_atomic(dir.join(PLAN_JSON), &info.to_bytes()?, None)?;
    Ok(KeyDir {
        dir: dir.to_path_buf(),
        params: params.clone(),
        mode: plan.options().mode,
        info,
    })
}
