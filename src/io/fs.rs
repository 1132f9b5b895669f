//! Atomic file writes: a temporary file in the same directory, synced, then renamed over
//! the target (a reader sees the old file or the complete new one). The one home of
//! temp-file-and-rename in the crate; re-exported by [`super::format`].

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::envelope::{write_envelope_flagged, FileKind};
use crate::{Error, Result};

/// Writes an envelope to `path` atomically: a temporary file in the same directory is
/// written, flushed to disk, then renamed over `path`. A reader sees the old file or the
/// complete new one, never a partial write. An existing key file at `path` is replaced
/// only by a file of the same kind (see [`super::limits::refuse_key_overwrite`]).
///
/// `mode` (Unix permission bits, such as `0o600` for secret keys) is applied to the
/// temporary file right after it is created, before any byte is written. On platforms
/// without Unix permissions, `Some(mode)` is refused rather than silently ignored.
///
/// # Errors
/// [`Error::Io`] with the path on any file-system failure; the temporary file is removed.
pub fn write_file_atomic(
    path: impl AsRef<Path>,
    kind: FileKind,
    params_digest: &[u8; 32],
    payload: &[u8],
    mode: Option<u32>,
) -> Result<()> {
    write_file_atomic_flagged(path, kind, params_digest, 0, payload, mode)
}

/// [`write_file_atomic`] with flag bits (see [`FLAG_BOUND`](super::envelope::FLAG_BOUND)).
///
/// # Errors
/// As [`write_file_atomic`].
pub fn write_file_atomic_flagged(
    path: impl AsRef<Path>,
    kind: FileKind,
    params_digest: &[u8; 32],
    flags: u32,
    payload: &[u8],
    mode: Option<u32>,
) -> Result<()> {
    let path = path.as_ref();
    // Never replace a key file with an object of another kind (`--out keys/secret.key`).
    super::limits::refuse_key_overwrite(path, Some(kind))?;
    write_atomic_with(path, mode, |w, tmp| {
        write_envelope_flagged(w, kind, params_digest, flags, payload)
            .map_err(|e| with_path(e, tmp))
    })
}

/// Writes raw `bytes` to `path` atomically, like [`write_file_atomic`] but with no
/// envelope (for JSON checkpoints and reports that carry their own format tag). Refuses to
/// replace a key file.
///
/// # Errors
/// [`Error::Io`] with the path on any file-system failure; the temporary file is removed.
pub fn write_bytes_atomic(path: impl AsRef<Path>, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    let path = path.as_ref();
    super::limits::refuse_key_overwrite(path, None)?;
    replace_bytes_atomic(path, bytes, mode)
}

/// [`write_bytes_atomic`] without the key-file refusal, for a store that owns its
/// directory and replaces its own key files (the service's key store).
///
/// # Errors
/// As [`write_bytes_atomic`].
pub(crate) fn replace_bytes_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    write_atomic_with(path, mode, |w, tmp| {
        w.write_all(bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// The temporary-file, sync, rename and directory-sync sequence behind the atomic writers;
/// `fill` writes the content.
fn write_atomic_with(
    path: &Path,
    mode: Option<u32>,
    fill: impl FnOnce(&mut BufWriter<File>, &Path) -> Result<()>,
) -> Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (file, tmp) = create_temp(&dir, file_name, mode)?;
    let guard = TempGuard(Some(tmp.clone()));
    let mut w = BufWriter::new(file);
    fill(&mut w, &tmp)?;
    let file = w
        .into_inner()
        .map_err(|e| Error::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    guard.disarm();
    // Make the rename itself durable. Some file systems refuse to sync a directory; the
    // data is already written, so that is not an error.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes the temporary file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn create_temp(
    dir: &Path,
    file_name: &std::ffi::OsStr,
    mode: Option<u32>,
) -> Result<(File, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last_err = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = std::ffi::OsString::from(".");
        name.push(file_name);
        name.push(format!(".tmp-{}-{n}-{nanos}", std::process::id()));
        let tmp = dir.join(name);
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        if let Some(m) = mode {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(m);
        }
        #[cfg(not(unix))]
        if mode.is_some() {
            return Err(Error::io(
                &tmp,
                std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "file permissions were requested but this platform has no Unix modes",
                ),
            ));
        }
        match opts.open(&tmp) {
            Ok(file) => {
                // The creation mode is reduced by the umask; set the exact bits before any
                // byte is written.
                #[cfg(unix)]
                if let Some(m) = mode {
                    use std::os::unix::fs::PermissionsExt;
                    if let Err(e) = file.set_permissions(fs::Permissions::from_mode(m)) {
                        let _ = fs::remove_file(&tmp);
                        return Err(Error::io(&tmp, e));
                    }
                }
                return Ok((file, tmp));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some((tmp, e)),
            Err(e) => return Err(Error::io(&tmp, e)),
        }
    }
    match last_err {
        Some((tmp, e)) => Err(Error::io(tmp, e)),
        None => Err(Error::io(
            dir,
            std::io::Error::other("could not create a temporary file"),
        )),
    }
}

pub(super) fn with_path(e: Error, path: &Path) -> Error {
    match e {
        Error::Io { path: None, source } => Error::io(path, source),
        other => other,
    }
}
