//! The key directory of a token adapter: the same files as a pooled one (`secret.key`,
//! `public.key`, `eval.keys`, `params.toml`), with `plan.json` holding a [`TokenPlanInfo`]
//! (format `hepeft-token-plan/1`, mode `token`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ckks::{load, load_bound, save, save_bound, CkksParams, PublicKey, SecretKey};
use crate::io::binding::{Binding, KeySetId};
use crate::io::format::{digest_hex, write_bytes_atomic};
use crate::io::limits::{read_text, MAX_TEXT_FILE};
use crate::session::keydir::{
    check_writable, json_bytes, EVAL_KEYS, PARAMS_TOML, PLAN_JSON, PUBLIC_KEY, SECRET_KEY,
};
use crate::{Error, Result};

use super::client::TokenKeys;
use super::{TokenModel, TOKEN_MODE};

/// Version tag of a token key directory's `plan.json`.
pub const TOKEN_PLAN_FORMAT: &str = "hepeft-token-plan/1";

/// `plan.json` of a token key directory: what the keys were made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPlanInfo {
    /// [`TOKEN_PLAN_FORMAT`].
    pub format: String,
    /// Always `token`.
    pub mode: String,
    /// Token structure digest (hex, [`super::token_structure_digest`]).
    pub structure_digest: String,
    /// Parameter digest (hex).
    pub params_digest: String,
    /// Identifier of public.key.
    pub key_id: String,
    /// Galois elements of the evaluation keys.
    pub galois_elements: Vec<crate::ckks::GaloisElement>,
    /// Whether eval.keys holds a relinearization key.
    pub relinearization: bool,
    /// Tokens `T` of every input.
    pub tokens: usize,
    /// Widths `d` of the inputs (each `T x d`).
    pub input_dims: Vec<usize>,
    /// Output values per sample.
    pub output_dim: usize,
    /// Ciphertexts per query (one sample).
    pub query_ciphertexts: usize,
}

impl TokenPlanInfo {
    /// The metadata of keys of `key_set` for `model`.
    pub fn for_model(model: &TokenModel, key_set: KeySetId) -> TokenPlanInfo {
        TokenPlanInfo {
            format: TOKEN_PLAN_FORMAT.into(),
            mode: TOKEN_MODE.into(),
            structure_digest: digest_hex(&model.structure),
            params_digest: digest_hex(&model.params.digest()),
            key_id: key_set.hex(),
            galois_elements: model.galois_elements(),
            relinearization: model.plan.needs_relin(),
            tokens: model.adapter.tokens(),
            input_dims: model.input_dims(),
            output_dim: model.output_dim(),
            query_ciphertexts: model.query_ciphertexts(),
        }
    }
}

/// Whether the key directory `dir` holds token-adapter keys (its `plan.json` names
/// [`TOKEN_PLAN_FORMAT`]). A small file read; false when unreadable.
pub fn is_token_key_dir(dir: &Path) -> bool {
    read_text(&dir.join(PLAN_JSON), MAX_TEXT_FILE, "plan metadata")
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("format")
                .and_then(|f| f.as_str())
                .map(|f| f == TOKEN_PLAN_FORMAT)
        })
        .unwrap_or(false)
}

/// A token key directory, its parameter set and `plan.json` checked to agree.
#[derive(Debug, Clone)]
pub struct TokenKeyDir {
    /// The directory.
    pub dir: PathBuf,
    /// `params.toml`.
    pub params: CkksParams,
    /// `plan.json`.
    pub info: TokenPlanInfo,
}

impl TokenKeyDir {
    /// Reads `params.toml` and `plan.json` of `dir` and checks they agree.
    ///
    /// # Errors
    /// [`Error::Refused`] without `params.toml`; [`Error::Format`] for a malformed or
    /// pooled-adapter `plan.json`; [`Error::Mismatch`] ("parameter").
    pub fn open(dir: &Path) -> Result<TokenKeyDir> {
        let (params, pj, text) = crate::session::keydir::read_key_dir_files(dir)?;
        let info: TokenPlanInfo = serde_json::from_str(&text).map_err(|e| {
            Error::format(
                "plan metadata",
                format!(
                    "{}: not a token key directory ({e}); keys for a pooled adapter go with its model card",
                    pj.display()
                ),
            )
        })?;
        if info.format != TOKEN_PLAN_FORMAT || info.mode != TOKEN_MODE {
            return Err(Error::format(
                "plan metadata",
                format!(
                    "{}: format {:?}, expected {TOKEN_PLAN_FORMAT:?}",
                    pj.display(),
                    info.format
                ),
            ));
        }
        crate::session::keydir::check_plan_params(dir, &info.params_digest, &params)?;
        Ok(TokenKeyDir {
            dir: dir.to_path_buf(),
            params,
            info,
        })
    }

    /// Writes a new token key directory (as [`crate::session::KeyDir::create`]: each file
    /// atomically, the secret key 0600, no overwrite of a secret key without `force`).
    ///
    /// # Errors
    /// [`Error::Refused`], [`Error::Io`].
    pub fn create(
        dir: &Path,
        model: &TokenModel,
        keys: &TokenKeys,
        force: bool,
        record: Option<&crate::select::SelectionRecord>,
    ) -> Result<TokenKeyDir> {
        let params = &model.params;
        check_writable(dir, force)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let header = format!(
            "# Written by `hepeft keygen` (token adapter): {}\n",
            params.describe()
        );
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
        save(dir.join(PUBLIC_KEY), params, &keys.public)?;
        save_bound(dir.join(EVAL_KEYS), params, &keys.eval, &keys.binding)?;
        save_bound(dir.join(SECRET_KEY), params, &keys.secret, &keys.binding)?;
        let info = TokenPlanInfo::for_model(model, keys.binding.key_set);
        write_bytes_atomic(
            dir.join(PLAN_JSON),
            &json_bytes(&info, "plan metadata")?,
            None,
        )?;
        Ok(TokenKeyDir {
            dir: dir.to_path_buf(),
            params: params.clone(),
            info,
        })
    }

    /// `dir/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Checks that `model` (compiled from `source`) is what the keys were made for: the
    /// structure digest, the Galois elements and the relinearization flag.
    ///
    /// # Errors
    /// [`Error::Mismatch`] ("model").
    pub fn check_model(&self, model: &TokenModel, source: &Path) -> Result<()> {
        let want = TokenPlanInfo::for_model(model, self.key_set()?);
        if want != self.info {
            return Err(Error::mismatch(
                "model",
                format!(
                    "the keys in {} were made for a token plan with structure digest {}, but {} compiles to {} \
                     (or {} was edited): use the token card the keys were generated with, or run keygen again",
                    self.dir.display(),
                    self.info.structure_digest.chars().take(16).collect::<String>(),
                    source.display(),
                    want.structure_digest.chars().take(16).collect::<String>(),
                    self.path(PLAN_JSON).display()
                ),
            ));
        }
        Ok(())
    }

    /// The key-set id `plan.json` names.
    ///
    /// # Errors
    /// [`Error::Format`] for a malformed `key_id`.
    pub fn key_set(&self) -> Result<KeySetId> {
        KeySetId::from_hex(&self.info.key_id)
    }

    /// Reads `public.key`, checked to be the key `plan.json` names.
    ///
    /// # Errors
    /// Envelope errors; [`Error::Mismatch`] ("key set").
    pub fn public_key(&self) -> Result<(PublicKey, KeySetId)> {
        let pk: PublicKey = load(self.path(PUBLIC_KEY), &self.params)?;
        let id = crate::session::key_set_id(&self.params, &pk)?;
        if id != self.key_set()? {
            return Err(Error::mismatch(
                "key set",
                format!(
                    "{} (key id {id}) is not the key plan.json names ({})",
                    PUBLIC_KEY, self.info.key_id
                ),
            ));
        }
        Ok((pk, id))
    }

    /// Reads `secret.key`, checked to belong to this key set and to `model`.
    ///
    /// # Errors
    /// Envelope errors; [`Error::Mismatch`].
    pub fn secret_key(&self, model: &TokenModel) -> Result<(SecretKey, Binding)> {
        let (sk, binding): (SecretKey, _) = load_bound(self.path(SECRET_KEY), &self.params)?;
        let b =
            crate::session::check_secret_matches_public(binding.as_ref(), self.key_set()?, None)?;
        if b.structure != model.structure {
            return Err(Error::mismatch(
                "plan",
                "the secret key was generated for another token plan".to_string(),
            ));
        }
        Ok((sk, b))
    }
}
