//! Bounded, regular-file-only readers for every input path.
//!
//! A hostile path can name a device (`/dev/zero`, `/dev/urandom`), a FIFO, or a symlink to
//! one; a hostile text file can be gigabytes long. Every reader of a user-named path goes
//! through [`open_regular`] (refuses anything but a regular file, after following
//! symlinks) and a size cap chosen for what the file holds, so memory stays bounded by the
//! cap, not by the input.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::format::{peek_header, FileKind, HEADER_LEN};
use crate::{Error, Result};

/// Cap on text files: parameter TOML, model cards, JSON sidecars, `adapter_config.json`
/// (1 MiB; the largest legitimate one is a few KiB).
pub const MAX_TEXT_FILE: u64 = 1 << 20;

/// Opens `path` for reading and returns the file with its size; refuses anything that is
/// not a regular file (a device, FIFO, socket or directory, also behind a symlink).
/// Costs one `open` and one `fstat`.
///
/// # Errors
/// [`Error::Io`] with the path: it cannot be opened, or it is not a regular file.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "not a regular file ({}): hepeft reads inputs only from regular files",
                    kind_name(&meta)
                ),
            ),
        ));
    }
    Ok((file, meta.len()))
}

fn kind_name(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Reads the whole regular file at `path`, refusing it if it is larger than `max` bytes
/// (checked on the size before reading, and again while reading, so a file that grows
/// cannot exceed it). Memory: at most `max` bytes.
///
/// # Errors
/// [`Error::Io`] as [`open_regular`]; [`Error::TooLarge`] naming `what` and the path.
pub fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let (file, size) = open_regular(path)?;
    let too_large = |found: u64| Error::TooLarge {
        what: format!("{what} {}", path.display()),
        found: format!("{found} bytes"),
        limit: format!("{max} bytes"),
    };
    if size > max {
        return Err(too_large(size));
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > max {
        return Err(too_large(buf.len() as u64));
    }
    Ok(buf)
}

/// Reads a UTF-8 text file of at most `max` bytes (see [`read_bounded`]).
///
/// # Errors
/// As [`read_bounded`]; [`Error::Format`] if it is not UTF-8.
pub fn read_text(path: &Path, max: u64, what: &str) -> Result<String> {
    let bytes = read_bounded(path, max, what)?;
    String::from_utf8(bytes)
        .map_err(|_| Error::format(format!("{what} {}", path.display()), "not UTF-8 text"))
}

/// Whether `kind` is key material (secret, public or evaluation keys).
pub fn is_key_kind(kind: FileKind) -> bool {
    matches!(
        kind,
        FileKind::SecretKey | FileKind::PublicKey | FileKind::EvaluationKeys
    )
}

/// Refuses to write over an existing key file with anything but a file of the same kind:
/// `decrypt --out keys/secret.key` must not destroy the secret key. `writing` is the kind
/// about to be written (`None` for a non-envelope output such as `.npy` or JSON). Reads
/// at most the 56-byte header of an existing file; a missing or unreadable target is no
/// objection.
///
/// # Errors
/// [`Error::Io`] (`AlreadyExists`) naming the path and the key kind found there.
pub fn refuse_key_overwrite(path: &Path, writing: Option<FileKind>) -> Result<()> {
    let Ok((mut file, _)) = open_regular(path) else {
        return Ok(());
    };
    let mut head = Vec::with_capacity(HEADER_LEN);
    if (&mut file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .is_err()
    {
        return Ok(());
    }
    match peek_header(&head) {
        Ok(h) if is_key_kind(h.kind) && Some(h.kind) != writing => Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "refusing to overwrite an existing {} file with {}: choose another output path",
                    h.kind,
                    writing.map_or_else(|| "this output".to_string(), |k| format!("a {k} file"))
                ),
            ),
        )),
        _ => Ok(()),
    }
}

/// The permission bits of a secret-key file if it is readable by group or others
/// (`Some(0o644)`), `None` if it is owner-only or the platform has no Unix modes.
pub fn loose_secret_permissions(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Most worker threads a command accepts: 4x the available parallelism, at most 256.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4 * cores).clamp(4, 256)
}

/// Checks a requested thread count against [`max_threads`].
///
/// # Errors
/// [`Error::TooLarge`] naming the limit (more threads than cores only adds switching).
pub fn check_threads(requested: usize) -> Result<usize> {
    let max = max_threads();
    if requested > max {
        return Err(Error::TooLarge {
            what: "--threads".into(),
            found: requested.to_string(),
            limit: format!(
                "{max} (4x the {} available core(s), at most 256; more threads only add switching)",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            ),
        });
    }
    Ok(requested)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_directories_are_refused() {
        #[cfg(unix)]
        {
            let e = read_bounded(Path::new("/dev/zero"), 10, "weights").unwrap_err();
            assert!(e.to_string().contains("character device"), "{e}");
        }
        let e = read_bounded(&std::env::temp_dir(), 10, "x").unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }

    #[test]
    fn oversized_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("hepeft-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("big.toml");
        std::fs::write(&p, vec![b'a'; 100]).unwrap();
        assert_eq!(read_text(&p, 100, "t").unwrap().len(), 100);
        let e = read_text(&p, 99, "params").unwrap_err();
        assert!(
            e.to_string().contains("exceeds the limit of 99 bytes"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
