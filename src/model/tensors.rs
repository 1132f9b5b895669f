//! Safetensors files as `f64` tensors by name ([`TensorStore`]).

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array1, Array2, ArrayD, Ix1, Ix2};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::load::read_limited;
use crate::{Error, Result};

/// Largest safetensors file read (4 GiB).
pub const MAX_WEIGHTS_BYTES: u64 = 4 << 30;

/// One tensor converted to `f64`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Values in row-major order; `data.len()` is the product of `shape`.
    pub data: Vec<f64>,
}

/// The tensors of a safetensors file, converted to `f64`, by name.
///
/// F64, F32, F16 and BF16 tensors are converted on load (F16/BF16 by hand, exactly).
/// Tensors of other dtypes are remembered by name and dtype, and asking for one is an
/// error. Values are checked finite when a tensor is taken out with [`TensorStore::matrix`]
/// or [`TensorStore::vector`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorStore {
    tensors: BTreeMap<String, Tensor>,
    unsupported: BTreeMap<String, String>,
    source: String,
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let mant = f64::from(h & 0x3ff);
    match exp {
        0 => sign * mant * 2f64.powi(-24),
        31 => {
            if mant == 0.0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        _ => sign * (1.0 + mant / 1024.0) * 2f64.powi(exp - 15),
    }
}

fn bf16_to_f64(h: u16) -> f64 {
    f64::from(f32::from_bits(u32::from(h) << 16))
}

fn convert(view: &TensorView<'_>) -> Option<Vec<f64>> {
    let d = view.data();
    Some(match view.dtype() {
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| f16_to_f64(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| bf16_to_f64(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        _ => return None,
    })
}

impl TensorStore {
    /// An empty store (to fill with [`TensorStore::insert`] and write with
    /// [`TensorStore::write`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a safetensors buffer.
    ///
    /// # Errors
    /// [`Error::Format`] if the buffer is not a valid safetensors file (truncated, bad
    /// header, overlapping or out-of-range offsets).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes_named(bytes, "<bytes>")
    }

    pub(crate) fn from_bytes_named(bytes: &[u8], source: &str) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::format("safetensors file", format!("{source}: {e}")))?;
        let mut store = TensorStore {
            source: source.to_string(),
            ..Self::default()
        };
        for (name, view) in st.tensors() {
            match convert(&view) {
                Some(data) => {
                    let expected: usize = view.shape().iter().product();
                    if data.len() != expected {
                        return Err(Error::format(
                            "safetensors file",
                            format!(
                                "{source}: tensor '{name}' holds {} values for shape {:?}",
                                data.len(),
                                view.shape()
                            ),
                        ));
                    }
                    store.tensors.insert(
                        name,
                        Tensor {
                            shape: view.shape().to_vec(),
                            data,
                        },
                    );
                }
                None => {
                    store.unsupported.insert(name, view.dtype().to_string());
                }
            }
        }
        Ok(store)
    }

    /// Reads and parses a safetensors file of at most [`MAX_WEIGHTS_BYTES`].
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read, [`Error::Format`] if it is too large or malformed.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_limited(path, MAX_WEIGHTS_BYTES, "safetensors file")?;
        Self::from_bytes_named(&bytes, &path.display().to_string())
    }

    /// Names of all tensors (convertible or not), sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .tensors
            .keys()
            .chain(self.unsupported.keys())
            .map(String::as_str)
            .collect();
        v.sort_unstable();
        v
    }

    /// Number of tensors (convertible or not).
    pub fn len(&self) -> usize {
        self.tensors.len() + self.unsupported.len()
    }

    /// True if the store holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tensor named `name`.
    ///
    /// # Errors
    /// [`Error::Model`] if there is no such tensor or its dtype is not F64/F32/F16/BF16.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        if let Some(t) = self.tensors.get(name) {
            return Ok(t);
        }
        if let Some(dtype) = self.unsupported.get(name) {
            return Err(Error::model(format!(
                "tensor '{name}' in {} has dtype {dtype}; only F64, F32, F16 and BF16 are supported",
                self.source
            )));
        }
        let mut known: Vec<&str> = self.names();
        let more = known.len() > 12;
        known.truncate(12);
        Err(Error::model(format!(
            "no tensor '{name}' in {} (it has: {}{})",
            self.source,
            known.join(", "),
            if more { ", ..." } else { "" }
        )))
    }

    /// The 2-D tensor `name` as a matrix, checked finite.
    ///
    /// # Errors
    /// As [`TensorStore::get`], plus [`Error::Model`] if it is not 2-D and
    /// [`Error::InvalidValue`] if it holds NaN or infinity.
    pub fn matrix(&self, name: &str) -> Result<Array2<f64>> {
        let t = self.get(name)?;
        let arr = self.finite_array(name, t)?;
        arr.into_dimensionality::<Ix2>().map_err(|_| {
            Error::model(format!(
                "tensor '{name}' has shape {:?}, expected 2-D",
                t.shape
            ))
        })
    }

    /// The 1-D tensor `name` as a vector, checked finite.
    ///
    /// # Errors
    /// As [`TensorStore::matrix`], for 1-D.
    pub fn vector(&self, name: &str) -> Result<Array1<f64>> {
        let t = self.get(name)?;
        let arr = self.finite_array(name, t)?;
        arr.into_dimensionality::<Ix1>().map_err(|_| {
            Error::model(format!(
                "tensor '{name}' has shape {:?}, expected 1-D",
                t.shape
            ))
        })
    }

    fn finite_array(&self, name: &str, t: &Tensor) -> Result<ArrayD<f64>> {
        if let Some((i, v)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::InvalidValue {
                context: format!("tensor '{name}' in {}", self.source),
                reason: format!("element {i} is {v}"),
            });
        }
        ArrayD::from_shape_vec(t.shape.clone(), t.data.clone())
            .map_err(|e| Error::model(format!("tensor '{name}': {e}")))
    }

    /// Adds (or replaces) a tensor.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] if `data.len()` is not the product of `shape`.
    pub fn insert(&mut self, name: &str, shape: Vec<usize>, data: Vec<f64>) -> Result<()> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::dims(format!("tensor '{name}'"), n, data.len()));
        }
        self.unsupported.remove(name);
        self.tensors
            .insert(name.to_string(), Tensor { shape, data });
        Ok(())
    }

    /// Moves every tensor of `other` into this store (for a card naming several weights
    /// files).
    ///
    /// # Errors
    /// [`Error::Model`] if both stores hold a tensor of the same name (naming both files).
    pub fn merge(&mut self, other: TensorStore) -> Result<()> {
        for name in other.names() {
            if self.tensors.contains_key(name) || self.unsupported.contains_key(name) {
                return Err(Error::model(format!(
                    "tensor '{name}' is in both {} and {}; tensor names must be unique across a card's weights files",
                    self.source, other.source
                )));
            }
        }
        self.source = if self.source.is_empty() {
            other.source
        } else {
            format!("{} + {}", self.source, other.source)
        };
        self.tensors.extend(other.tensors);
        self.unsupported.extend(other.unsupported);
        Ok(())
    }

    /// Serializes all convertible tensors as F64 safetensors.
    ///
    /// # Errors
    /// [`Error::Format`] if safetensors refuses the data.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let raw: Vec<(&String, &Tensor, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, t)| (n, t, t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let mut views = Vec::with_capacity(raw.len());
        for (name, t, bytes) in &raw {
            let view = TensorView::new(Dtype::F64, t.shape.clone(), bytes)
                .map_err(|e| Error::format("safetensors tensor", format!("{name}: {e}")))?;
            views.push((name.as_str(), view));
        }
        safetensors::serialize(views, None)
            .map_err(|e| Error::format("safetensors file", e.to_string()))
    }

    /// Writes [`TensorStore::to_bytes`] to `path`.
    ///
    /// # Errors
    /// [`Error::Io`] on write failure, else as [`TensorStore::to_bytes`].
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x3555), 0.333_251_953_125);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24)); // smallest subnormal
        assert_eq!(f16_to_f64(0x7bff), 65504.0); // largest finite
        assert_eq!(f16_to_f64(0x7c00), f64::INFINITY);
        assert!(f16_to_f64(0x7e00).is_nan());
        assert_eq!(bf16_to_f64(0x3f80), 1.0);
        assert_eq!(bf16_to_f64(0xc0a0), -5.0);
    }
}
