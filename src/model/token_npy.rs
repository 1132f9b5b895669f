//! Token states as `.npy` files: `samples x T x d` (f32 or f64), one file per tapped layer,
//! the input format of token-level adapters (issue 15).

use std::path::Path;

use ndarray::{Array2, Array3, Axis, Ix3};

use super::load::read_limited;
use super::npy::{float_array_from_npy_bytes, MAX_NPY_BYTES};
use crate::{Error, Result};

/// Parses `.npy` bytes holding a `samples x T x d` array of f32 or f64; returns one `T x d`
/// matrix per sample. A 2-D file is one sample.
///
/// # Errors
/// [`Error::Format`] for a malformed or truncated file, another dtype or rank;
/// [`Error::InvalidValue`] for an empty array or a NaN/infinite value (naming sample, token
/// and feature).
pub fn token_states_from_npy_bytes(bytes: &[u8]) -> Result<Vec<Array2<f64>>> {
    let what = "npy token states";
    let data = float_array_from_npy_bytes(
        bytes,
        what,
        2..=3,
        "expected samples x tokens x features (3-D) or one sample (2-D)",
    )?;
    let data = if data.ndim() == 2 {
        data.insert_axis(Axis(0))
    } else {
        data
    };
    let a: Array3<f64> = data
        .into_dimensionality::<Ix3>()
        .map_err(|e| Error::format(what, e.to_string()))?;
    if let Some(((s, t, f), v)) = a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::InvalidValue {
            context: format!("{what}, sample {s}, token {t}, feature {f}"),
            reason: format!("value is {v}"),
        });
    }
    Ok(a.outer_iter().map(|m| m.to_owned()).collect())
}

/// Reads token states from a `.npy` file of at most [`MAX_NPY_BYTES`]; see
/// [`token_states_from_npy_bytes`].
///
/// # Errors
/// I/O errors, and as [`token_states_from_npy_bytes`].
pub fn load_token_states_npy(path: impl AsRef<Path>) -> Result<Vec<Array2<f64>>> {
    let path = path.as_ref();
    let bytes = read_limited(path, MAX_NPY_BYTES, "npy token states")?;
    token_states_from_npy_bytes(&bytes).map_err(|e| match e {
        Error::Format { what, reason } => Error::Format {
            what,
            reason: format!("{}: {reason}", path.display()),
        },
        other => other,
    })
}

/// Writes `samples` (each `T x d`, all the same shape) as a `samples x T x d` f64 `.npy`.
///
/// # Errors
/// [`Error::Model`] for no samples or unequal shapes; I/O errors.
pub fn save_token_states_npy(path: impl AsRef<Path>, samples: &[Array2<f64>]) -> Result<()> {
    use ndarray_npy::WriteNpyExt;
    let path = path.as_ref();
    let first = samples
        .first()
        .ok_or_else(|| Error::model("no token states to save"))?;
    let (t, d) = first.dim();
    let mut a = Array3::<f64>::zeros((samples.len(), t, d));
    for (i, s) in samples.iter().enumerate() {
        if s.dim() != (t, d) {
            return Err(Error::model(format!(
                "token states: sample {i} is {}x{}, sample 0 is {t}x{d}",
                s.nrows(),
                s.ncols()
            )));
        }
        a.index_axis_mut(Axis(0), i).assign(s);
    }
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    a.write_npy(&mut w).map_err(|e| match e {
        ndarray_npy::WriteNpyError::Io(e) => Error::io(path, e),
        other => Error::format("npy token states", format!("{}: {other}", path.display())),
    })?;
    std::io::Write::flush(&mut w).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.npy");
        let s: Vec<Array2<f64>> = (0..3)
            .map(|k| Array2::from_shape_fn((4, 5), |(t, f)| (k * 100 + t * 10 + f) as f64))
            .collect();
        save_token_states_npy(&p, &s).unwrap();
        assert_eq!(load_token_states_npy(&p).unwrap(), s);
        // a 2-D file is one sample
        let p2 = dir.path().join("one.npy");
        crate::model::npy::save_features_npy(&p2, s[1].view()).unwrap();
        assert_eq!(load_token_states_npy(&p2).unwrap(), vec![s[1].clone()]);
        let e = token_states_from_npy_bytes(b"not npy").unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        let bad = vec![s[0].clone(), Array2::zeros((2, 5))];
        assert!(save_token_states_npy(dir.path().join("x.npy"), &bad).is_err());
    }
}
