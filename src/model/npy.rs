//! Feature matrices as `.npy` files.

use std::path::Path;

use ndarray::{Array2, ArrayD, ArrayView2, Ix2};

use super::load::read_limited;
use crate::{Error, Result};

/// Largest `.npy` feature file read (4 GiB).
pub const MAX_NPY_BYTES: u64 = 4 << 30;

/// Parses `.npy` bytes holding f32 or f64 features: 2-D is `samples x features`, 1-D is
/// one sample. Little- and big-endian, C and Fortran order are accepted.
///
/// # Errors
/// [`Error::Format`] for a malformed or truncated file, another dtype, or another number
/// of dimensions; [`Error::InvalidValue`] for an empty array or a NaN/infinite value.
pub fn features_from_npy_bytes(bytes: &[u8]) -> Result<Array2<f64>> {
    let what = "npy features";
    let data = float_array_from_npy_bytes(bytes, what, 1..=2, "expected 1-D or 2-D")?;
    let m = match data.ndim() {
        1 => {
            let n = data.len();
            data.into_shape_with_order((1, n))
                .map_err(|e| Error::format(what, e.to_string()))?
        }
        _ => data
            .into_dimensionality::<Ix2>()
            .map_err(|e| Error::format(what, e.to_string()))?,
    };
    if let Some(((r, c), v)) = m.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::InvalidValue {
            context: format!("{what}, sample {r}, feature {c}"),
            reason: format!("value is {v}"),
        });
    }
    Ok(m)
}

/// Checks the fixed `.npy` preamble (magic, version, header length) against the buffer
/// before `ndarray-npy` parses the header: its reader allocates the declared header length
/// up front, so a 26-byte file declaring a 4 GiB header made it allocate 4 GiB (found by
/// the `model_files` fuzz target, docs/fuzzing.md).
/// Parses `.npy` bytes holding an f32 or f64 array of `ndims` dimensions (`shape_hint`
/// says which in the refusal), as f64. What it allocates is bounded by the bytes the file
/// holds: the header's element count must match the data length for one of the two
/// dtypes. Cost: one pass over the data.
///
/// # Errors
/// [`Error::Format`] (named `what`) for a malformed or truncated file, another dtype or
/// rank; [`Error::InvalidValue`] for an empty array. Finiteness is the caller's check (it
/// names the index its way).
pub(crate) fn float_array_from_npy_bytes(
    bytes: &[u8],
    what: &str,
    ndims: std::ops::RangeInclusive<usize>,
    shape_hint: &str,
) -> Result<ArrayD<f64>> {
    use ndarray_npy::ReadNpyExt;
    check_npy_preamble(bytes)?;
    let mut cursor = std::io::Cursor::new(bytes);
    let header = ndarray_npy::npy::header::Header::from_reader(&mut cursor)
        .map_err(|e| Error::format(what, e.to_string()))?;
    if !ndims.contains(&header.shape.len()) {
        return Err(Error::format(
            what,
            format!("shape {:?}: {shape_hint}", header.shape),
        ));
    }
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::format(what, format!("shape {:?} overflows", header.shape)))?;
    if count == 0 {
        return Err(Error::InvalidValue {
            context: what.into(),
            reason: format!("empty array, shape {:?}", header.shape),
        });
    }
    let data_len = bytes.len() as u64 - cursor.position();
    // Bound what the reader will allocate by what the file actually holds.
    if Some(data_len) == (count as u64).checked_mul(8) {
        ArrayD::<f64>::read_npy(bytes)
            .map_err(|e| Error::format(what, format!("{e} (expected f32 or f64)")))
    } else if Some(data_len) == (count as u64).checked_mul(4) {
        Ok(ArrayD::<f32>::read_npy(bytes)
            .map_err(|e| Error::format(what, format!("{e} (expected f32 or f64)")))?
            .mapv(f64::from))
    } else {
        Err(Error::format(
            what,
            format!(
                "shape {:?} with dtype {} does not match the {data_len} data bytes (truncated, or not f32/f64)",
                header.shape, header.type_descriptor
            ),
        ))
    }
}

pub(crate) fn check_npy_preamble(bytes: &[u8]) -> Result<()> {
    let what = "npy features";
    let magic = b"\x93NUMPY";
    if bytes.get(..magic.len()) != Some(&magic[..]) {
        return Err(Error::format(what, "not an npy file (bad magic)"));
    }
    let (header_len, start) = match bytes.get(6) {
        Some(1) => (
            bytes
                .get(8..10)
                .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]]))),
            10usize,
        ),
        Some(2 | 3) => (
            bytes
                .get(8..12)
                .and_then(|b| usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()),
            12usize,
        ),
        Some(v) => {
            return Err(Error::format(
                what,
                format!("unsupported npy format version {v}"),
            ))
        }
        None => return Err(Error::format(what, "truncated npy preamble")),
    };
    let header_len = header_len.ok_or_else(|| Error::format(what, "truncated npy preamble"))?;
    match start.checked_add(header_len) {
        Some(end) if end <= bytes.len() => Ok(()),
        _ => Err(Error::format(
            what,
            format!(
                "truncated: the npy header declares {header_len} bytes, the file has {} after the preamble",
                bytes.len().saturating_sub(start)
            ),
        )),
    }
}

/// Reads features from a `.npy` file of at most [`MAX_NPY_BYTES`]; see
/// [`features_from_npy_bytes`].
///
/// # Errors
/// [`Error::Io`] if unreadable, else as [`features_from_npy_bytes`] (messages name the path).
pub fn load_features_npy(path: impl AsRef<Path>) -> Result<Array2<f64>> {
    let path = path.as_ref();
    let bytes = read_limited(path, MAX_NPY_BYTES, "npy features")?;
    features_from_npy_bytes(&bytes).map_err(|e| match e {
        Error::Format { what, reason } => {
            Error::format(what, format!("{}: {reason}", path.display()))
        }
        Error::InvalidValue { context, reason } => Error::InvalidValue {
            context: format!("{}: {context}", path.display()),
            reason,
        },
        other => other,
    })
}

/// Reads class labels (one per sample) from a `.npy` file: a 1-D array or a single column,
/// f32 or f64, every value a class index (a non-negative integer below 2^20).
///
/// # Errors
/// As [`load_features_npy`]; [`Error::InvalidValue`] for a value that is not a class index,
/// [`Error::Format`] for more than one column.
pub fn load_labels_npy(path: impl AsRef<Path>) -> Result<Vec<usize>> {
    let path = path.as_ref();
    let a = load_features_npy(path)?;
    if a.nrows() != 1 && a.ncols() != 1 {
        return Err(Error::format(
            "npy labels",
            format!(
                "{}: shape {:?}, expected one label per sample",
                path.display(),
                a.shape()
            ),
        ));
    }
    a.iter()
        .enumerate()
        .map(|(i, &v)| {
            if v >= 0.0 && v < (1 << 20) as f64 && v.fract() == 0.0 {
                Ok(v as usize)
            } else {
                Err(Error::InvalidValue {
                    context: format!("{}: label {i}", path.display()),
                    reason: format!("{v} is not a class index"),
                })
            }
        })
        .collect()
}

/// Writes `samples x features` as an f64 `.npy` file (C order); see
/// [`features_to_npy_bytes`].
///
/// # Errors
/// [`Error::InvalidValue`] for NaN/infinite values, [`Error::Io`] on write failure.
pub fn save_features_npy(path: impl AsRef<Path>, features: ArrayView2<f64>) -> Result<()> {
    let path = path.as_ref();
    let bytes = features_to_npy_bytes(features)?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// The bytes of an f64 `.npy` file holding `samples x features` (C order): a header of
/// at most a few hundred bytes and 8 bytes per value.
///
/// # Errors
/// [`Error::InvalidValue`] for NaN/infinite values, [`Error::Format`] if encoding fails.
pub fn features_to_npy_bytes(features: ArrayView2<f64>) -> Result<Vec<u8>> {
    use ndarray_npy::WriteNpyExt;
    if let Some(((r, c), v)) = features.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::InvalidValue {
            context: format!("features to save, sample {r}, feature {c}"),
            reason: format!("value is {v}"),
        });
    }
    let mut out = Vec::with_capacity(128 + 8 * features.len());
    features
        .as_standard_layout()
        .write_npy(&mut out)
        .map_err(|e| Error::format("npy features", e.to_string()))?;
    Ok(out)
}
