//! Loading adapters and features from files.
//!
//! * [`TensorStore`]: the tensors of a safetensors file as `f64` (F64, F32, F16 and BF16
//!   are converted; other dtypes are listed but refuse to load).
//! * [`PeftLora`]: a Hugging Face PEFT LoRA checkpoint (`adapter_model.safetensors` plus
//!   `adapter_config.json`) as LoRA pairs by module name.
//! * [`ModelCard`]: a TOML or JSON description of an adapter graph whose weights live in a
//!   safetensors file (and/or come from a PEFT checkpoint); see `docs/model-card.md`.
//!   [`load_card`] turns a card into an [`Adapter`](super::Adapter), [`save_adapter`] does the reverse.
//! * [`load_features_npy`] / [`save_features_npy`]: feature matrices as `.npy`.
//!
//! Every read is size-limited (see the `MAX_*` constants) and every malformed, truncated
//! or foreign file is reported as an error, never a panic.
//!
//! The code lives in [`tensors`](super::tensors), [`peft`](super::peft),
//! [`card`](super::card) and [`npy`](super::npy); this module re-exports all of it so
//! that `hepeft::model::load::*` paths keep working, and holds the size-limited file readers
//! they share.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

pub use super::card::*;
pub use super::npy::*;
pub use super::peft::*;
pub use super::tensors::*;

/// Reads a whole regular file (no device, FIFO or directory, also behind a symlink),
/// refusing files larger than `limit` bytes.
pub(crate) fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let (file, len) = crate::io::limits::open_regular(path)?;
    if len > limit {
        return Err(Error::format(
            what,
            format!(
                "{} is {len} bytes, more than the limit of {limit}",
                path.display()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::format(
            what,
            format!("{} grew past the limit of {limit} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

pub(crate) fn read_text_limited(path: &Path, limit: u64, what: &str) -> Result<String> {
    let bytes = read_limited(path, limit, what)?;
    String::from_utf8(bytes)
        .map_err(|e| Error::format(what, format!("{} is not UTF-8: {e}", path.display())))
}
