//! The serialization trait shared by every object with a file of its own (CKKS and exact
//! backends): [`HeObject`] supplies the kind, a payload codec and a size cap; the generic
//! [`to_bytes`], [`from_bytes`], [`save`] and [`load`] (and their `_bound` variants) wrap the
//! payload in the versioned envelope of [`crate::io::format`] with the parameter digest of
//! [`ParamsDigest`], write files atomically (secret keys with mode 0600), and zeroize
//! intermediate buffers of secret keys.

use crate::io::binding::Binding;
use crate::io::format::{
    read_envelope_bytes, write_envelope_flagged, write_file_atomic_flagged, FileKind,
    PayloadReader, PayloadWriter, CHECKSUM_LEN, FLAG_BOUND, HEADER_LEN,
};
use crate::{Error, Result};
use std::path::Path;

/// Largest payload any reader accepts (64 GiB); each kind has a tighter cap computed from
/// the parameters ([`HeObject::max_payload`]), and each reader also checks exact sizes.
pub const MAX_PAYLOAD: u64 = 64 << 30;

/// A parameter set that names itself by a 32-byte digest (written in every envelope).
pub trait ParamsDigest {
    /// The digest (SHA-256 over a canonical description; cost: a hash of a short string or
    /// a stored copy).
    fn digest(&self) -> [u8; 32];
    /// `Ok` if `digest` is this set's, else [`Error::ParameterMismatch`] naming `what`.
    fn check_digest(&self, what: &str, digest: &[u8; 32]) -> Result<()>;
}

/// An object with a file format of its own.
pub trait HeObject: Sized {
    /// The parameter set objects of this type are made under (CKKS or exact).
    type Params: ParamsDigest;
    /// The envelope kind.
    const KIND: FileKind;
    /// Human name for messages.
    const WHAT: &'static str;
    /// Digest of the parameter set it was made under, if the object records one (checked
    /// against the parameters before writing; `None` skips that check).
    fn digest(&self) -> Option<[u8; 32]>;
    /// Appends the payload.
    fn write_payload(&self, params: &Self::Params, w: &mut PayloadWriter) -> Result<()>;
    /// Parses and checks the payload.
    fn read_payload(params: &Self::Params, r: &mut PayloadReader<'_>) -> Result<Self>;
    /// Largest payload (including a binding block) a file of this kind can have under
    /// `params`: readers refuse a larger declared length before reading anything.
    fn max_payload(_params: &Self::Params) -> u64 {
        MAX_PAYLOAD
    }
}

/// Serializes `obj` into a complete envelope. For a secret key the intermediate payload
/// buffer is zeroized; the returned bytes are the caller's to wipe.
pub fn to_bytes<T: HeObject>(params: &T::Params, obj: &T) -> Result<Vec<u8>> {
    to_bytes_inner(params, obj, None)
}

/// [`to_bytes`] with a binding block (envelope flag `FLAG_BOUND`): the key set, plan and
/// role the object belongs to, inside the checksummed envelope.
pub fn to_bytes_bound<T: HeObject>(
    params: &T::Params,
    obj: &T,
    binding: &Binding,
) -> Result<Vec<u8>> {
    to_bytes_inner(params, obj, Some(binding))
}

fn payload_of<T: HeObject>(
    params: &T::Params,
    obj: &T,
    binding: Option<&Binding>,
) -> Result<(PayloadWriter, u32)> {
    if let Some(d) = obj.digest() {
        params.check_digest(T::WHAT, &d)?;
    }
    let mut w = PayloadWriter::new();
    let mut flags = 0;
    if let Some(b) = binding {
        b.write(&mut w)?;
        flags |= FLAG_BOUND;
    }
    if let Err(e) = obj.write_payload(params, &mut w) {
        wipe_if_secret::<T>(w.into_bytes());
        return Err(e);
    }
    Ok((w, flags))
}

fn to_bytes_inner<T: HeObject>(
    params: &T::Params,
    obj: &T,
    binding: Option<&Binding>,
) -> Result<Vec<u8>> {
    let (w, flags) = payload_of(params, obj, binding)?;
    let mut out = Vec::with_capacity(w.len() + 64);
    let r = write_envelope_flagged(&mut out, T::KIND, &params.digest(), flags, w.as_slice());
    wipe_if_secret::<T>(w.into_bytes());
    r?;
    Ok(out)
}

/// Zeroizes `buf` when `T` is a secret key (payload buffers and file contents).
fn wipe_if_secret<T: HeObject>(mut buf: Vec<u8>) {
    if T::KIND == FileKind::SecretKey {
        zeroize::Zeroize::zeroize(&mut buf);
    }
}

/// Parses an envelope of the right kind made under `params`.
///
/// A binding block, if present, is skipped; use [`from_bytes_bound`] where it matters.
pub fn from_bytes<T: HeObject>(params: &T::Params, bytes: &[u8]) -> Result<T> {
    from_bytes_bound(params, bytes).map(|(obj, _)| obj)
}

/// Parses an envelope of the right kind made under `params`, and its binding block if the
/// envelope has one (`None` for files written without, or before issue 20).
///
/// The declared payload length is checked against [`HeObject::max_payload`] and against
/// the buffer's size before anything is allocated.
pub fn from_bytes_bound<T: HeObject>(
    params: &T::Params,
    bytes: &[u8],
) -> Result<(T, Option<Binding>)> {
    let env = read_envelope_bytes(bytes, T::KIND, T::max_payload(params))?;
    env.check_params(&params.digest(), T::WHAT)?;
    let mut r = PayloadReader::new(&env.payload, T::WHAT);
    let obj = (|| {
        let binding = if env.flags & FLAG_BOUND != 0 {
            Some(Binding::read(&mut r)?)
        } else {
            None
        };
        let obj = T::read_payload(params, &mut r)?;
        r.finish()?;
        Ok((obj, binding))
    })();
    wipe_if_secret::<T>(env.payload);
    obj
}

/// Writes `obj` to `path` atomically; secret keys get mode 0600.
///
/// Refuses to replace an existing key file with an object of another kind (a result
/// written over `secret.key`): see [`crate::io::limits::refuse_key_overwrite`].
pub fn save<T: HeObject>(path: impl AsRef<Path>, params: &T::Params, obj: &T) -> Result<()> {
    save_inner(path.as_ref(), params, obj, None)
}

/// [`save`] with a binding block (see [`to_bytes_bound`]).
pub fn save_bound<T: HeObject>(
    path: impl AsRef<Path>,
    params: &T::Params,
    obj: &T,
    binding: &Binding,
) -> Result<()> {
    save_inner(path.as_ref(), params, obj, Some(binding))
}

fn save_inner<T: HeObject>(
    path: &Path,
    params: &T::Params,
    obj: &T,
    binding: Option<&Binding>,
) -> Result<()> {
    let (w, flags) = payload_of(params, obj, binding)?;
    let mode = (T::KIND == FileKind::SecretKey).then_some(0o600);
    let r = write_file_atomic_flagged(path, T::KIND, &params.digest(), flags, w.as_slice(), mode);
    wipe_if_secret::<T>(w.into_bytes());
    r
}

/// Reads `obj` from `path` (a binding block, if present, is skipped).
pub fn load<T: HeObject>(path: impl AsRef<Path>, params: &T::Params) -> Result<T> {
    load_bound(path, params).map(|(obj, _)| obj)
}

/// Reads `obj` and its binding block from `path` (see [`from_bytes_bound`]). The path
/// must be a regular file no larger than the kind's cap plus the envelope framing,
/// checked before it is read.
pub fn load_bound<T: HeObject>(
    path: impl AsRef<Path>,
    params: &T::Params,
) -> Result<(T, Option<Binding>)> {
    let path = path.as_ref();
    let cap = T::max_payload(params).saturating_add((HEADER_LEN + CHECKSUM_LEN) as u64);
    // The header first: its declared size must be the file's size and within the cap,
    // checked before the payload is read (a 3 GB file costs 56 bytes, not 3 GB).
    {
        use std::io::Read as _;
        let (file, size) = crate::io::limits::open_regular(path)?;
        let mut head = Vec::with_capacity(HEADER_LEN);
        file.take(HEADER_LEN as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::io(path, e))?;
        let what = format!("{} {}", T::WHAT, path.display());
        let h = crate::io::format::peek_header(&head).map_err(|e| match e {
            Error::Format { reason, .. } => Error::format(&what, reason),
            other => other,
        })?;
        match h.total_len() {
            Some(t) if t > cap => {
                return Err(Error::TooLarge {
                    what,
                    found: format!("a declared size of {t} bytes"),
                    limit: format!("{cap} bytes for these parameters"),
                })
            }
            Some(t) if t != size => {
                return Err(Error::format(
                    what,
                    format!(
                        "{}: the file is {size} bytes, its header declares {t}",
                        if size < t {
                            "truncated"
                        } else {
                            "trailing bytes"
                        }
                    ),
                ))
            }
            None => {
                return Err(Error::format(what, "declared payload length overflows"));
            }
            _ => {}
        }
    }
    let bytes = crate::io::limits::read_bounded(path, cap, T::WHAT)?;
    let obj = from_bytes_bound(params, &bytes).map_err(|e| match e {
        Error::Format { what, reason } => {
            Error::format(format!("{what} {}", path.display()), reason)
        }
        other => other,
    });
    wipe_if_secret::<T>(bytes);
    obj
}
