//! The library's error kinds as Python exception classes.
//!
//! Every `hepeft::Error` variant maps to one subclass of `hepeft.HepeftError`, carrying the
//! library's message unchanged (`str(e)` is the `Display` of the Rust error, the same text
//! the CLI prints). An HTTP error answer of `hepeft serve` becomes `hepeft.RemoteError` with
//! the status in `e.status`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    hepeft,
    HepeftError,
    PyException,
    "Base class of every error raised by hepeft."
);
create_exception!(
    hepeft,
    InvalidParametersError,
    HepeftError,
    "A parameter set is malformed."
);
create_exception!(
    hepeft,
    InsecureParametersError,
    HepeftError,
    "A parameter set exceeds the HomomorphicEncryption.org bound for its security level."
);
create_exception!(
    hepeft,
    ParameterMismatchError,
    HepeftError,
    "Two objects were made under different parameter sets."
);
create_exception!(
    hepeft,
    ScaleMismatchError,
    HepeftError,
    "Two operands live at different scales."
);
create_exception!(
    hepeft,
    LevelExhaustedError,
    HepeftError,
    "An operation needs more levels than the ciphertext has left."
);
create_exception!(
    hepeft,
    InvalidLevelError,
    HepeftError,
    "A level argument is out of range."
);
create_exception!(
    hepeft,
    MissingKeyError,
    HepeftError,
    "A key the operation needs was not provided."
);
create_exception!(
    hepeft,
    DimensionMismatchError,
    HepeftError,
    "Dimensions of two operands do not agree."
);
create_exception!(
    hepeft,
    InvalidValueError,
    HepeftError,
    "A numeric input is NaN, infinite or too large to encode."
);
create_exception!(
    hepeft,
    OutOfIntervalError,
    HepeftError,
    "A value left the interval an activation was fitted on."
);
create_exception!(
    hepeft,
    FormatError,
    HepeftError,
    "A file or byte buffer is not a valid hepeft object."
);
create_exception!(
    hepeft,
    MismatchError,
    HepeftError,
    "Objects that must belong together do not (key set, plan, role, level)."
);
create_exception!(
    hepeft,
    TooLargeError,
    HepeftError,
    "An input is larger than its limit."
);
create_exception!(
    hepeft,
    ModelError,
    HepeftError,
    "A model description or weight file is inconsistent."
);
create_exception!(
    hepeft,
    RefusedError,
    HepeftError,
    "The operation would destroy or misuse a file or a setting (the message names a way out)."
);
create_exception!(
    hepeft,
    HepeftIOError,
    HepeftError,
    "An I/O failure (file system or network)."
);
create_exception!(
    hepeft,
    RemoteError,
    HepeftIOError,
    "An HTTP error answer of `hepeft serve`; `status` holds the HTTP status."
);

/// Converts a library error into the matching Python exception, message unchanged.
pub fn to_py(e: hepeft::Error) -> PyErr {
    use hepeft::Error as E;
    if let Some(remote) = hepeft::serve::client::remote_error(&e) {
        let (status, message) = (remote.status, remote.to_string());
        return Python::attach(|py| {
            let err = RemoteError::new_err(message);
            // Best effort: the status as an attribute (the message names it too).
            let _ = err.value(py).setattr("status", status);
            err
        });
    }
    let msg = e.to_string();
    match e {
        E::InvalidParameters { .. } => InvalidParametersError::new_err(msg),
        E::InsecureParameters { .. } => InsecureParametersError::new_err(msg),
        E::ParameterMismatch { .. } => ParameterMismatchError::new_err(msg),
        E::ScaleMismatch { .. } => ScaleMismatchError::new_err(msg),
        E::LevelExhausted { .. } => LevelExhaustedError::new_err(msg),
        E::InvalidLevel { .. } => InvalidLevelError::new_err(msg),
        E::MissingKey { .. } => MissingKeyError::new_err(msg),
        E::DimensionMismatch { .. } => DimensionMismatchError::new_err(msg),
        E::InvalidValue { .. } => InvalidValueError::new_err(msg),
        E::OutOfInterval { .. } => OutOfIntervalError::new_err(msg),
        E::Format { .. } => FormatError::new_err(msg),
        E::Mismatch { .. } => MismatchError::new_err(msg),
        E::TooLarge { .. } => TooLargeError::new_err(msg),
        E::Model { .. } => ModelError::new_err(msg),
        E::Refused { .. } => RefusedError::new_err(msg),
        E::Io { .. } => HepeftIOError::new_err(msg),
        _ => HepeftError::new_err(msg),
    }
}

/// `?` for library results inside `#[pymethods]`.
pub trait IntoPy<T> {
    /// The result with its error converted by [`to_py`].
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for hepeft::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("HepeftError", py.get_type::<HepeftError>())?;
    m.add(
        "InvalidParametersError",
        py.get_type::<InvalidParametersError>(),
    )?;
    m.add(
        "InsecureParametersError",
        py.get_type::<InsecureParametersError>(),
    )?;
    m.add(
        "ParameterMismatchError",
        py.get_type::<ParameterMismatchError>(),
    )?;
    m.add("ScaleMismatchError", py.get_type::<ScaleMismatchError>())?;
    m.add("LevelExhaustedError", py.get_type::<LevelExhaustedError>())?;
    m.add("InvalidLevelError", py.get_type::<InvalidLevelError>())?;
    m.add("MissingKeyError", py.get_type::<MissingKeyError>())?;
    m.add(
        "DimensionMismatchError",
        py.get_type::<DimensionMismatchError>(),
    )?;
    m.add("InvalidValueError", py.get_type::<InvalidValueError>())?;
    m.add("OutOfIntervalError", py.get_type::<OutOfIntervalError>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("MismatchError", py.get_type::<MismatchError>())?;
    m.add("TooLargeError", py.get_type::<TooLargeError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    m.add("HepeftIOError", py.get_type::<HepeftIOError>())?;
    m.add("RemoteError", py.get_type::<RemoteError>())?;
    Ok(())
}
