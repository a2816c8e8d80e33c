//! Opening the files lore is handed, safely: regular files only, every read bounded.
//!
//! Both binaries read paths that users (and attackers) choose: knowledge-base sources, key
//! files, artifacts. A path may name `/dev/zero` (an endless read), a FIFO (an `open` that
//! blocks until a writer appears), a folder, or a 10 GB file. Every such read goes through
//! here, so one check covers every caller: the file is opened without blocking, must be a
//! regular file, and is read up to a stated limit and never past it.

use std::fs::{File, Metadata};
use std::io::Read as _;
use std::path::Path;

/// Largest knowledge-base source file `lorec` reads (a JSON Lines collection may be large).
pub const MAX_SOURCE_BYTES: u64 = 256 << 20;
/// Largest key file: a base64 key is 44 bytes; anything near this limit is not a key file.
pub const MAX_KEY_FILE_BYTES: u64 = 4 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path} is {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path} is {len} bytes; the limit is {limit} bytes")]
    TooLarge { path: String, len: u64, limit: u64 },
    #[error("{path} changed size while it was read")]
    Changed { path: String },
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

impl ReadError {
    fn io(path: &Path, error: std::io::Error) -> ReadError {
        ReadError::Io { path: path.display().to_string(), error }
    }
}

/// What kind of file `meta` describes, in words, for errors.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        return "a regular file";
    }
    if t.is_dir() {
        return "a directory";
    }
    if t.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    "not a regular file"
}

/// Open `path` for reading, refusing anything but a regular file. The open does not block on
/// a FIFO (it is opened non-blocking and then refused), and the returned metadata comes from
/// the opened descriptor, so it describes exactly the file that will be read.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), ReadError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        // It has no effect on reads of regular files, the only kind kept.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| ReadError::io(path, e))?;
    let meta = file.metadata().map_err(|e| ReadError::io(path, e))?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular { path: path.display().to_string(), kind: kind_of(&meta) });
    }
    Ok((file, meta))
}

/// Read a whole regular file of at most `limit` bytes. A file that grows while it is read is
/// refused rather than read past its size at opening.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_regular_with_metadata(path, limit).map(|(bytes, _)| bytes)
}

/// [`read_regular`], also returning the metadata of the file read.
pub fn read_regular_with_metadata(path: &Path, limit: u64) -> Result<(Vec<u8>, Metadata), ReadError> {
    let (file, meta) = open_regular(path)?;
    let len = meta.len();
    if len > limit {
        return Err(ReadError::TooLarge { path: path.display().to_string(), len, limit });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len + 1).read_to_end(&mut bytes).map_err(|e| ReadError::io(path, e))?;
    if bytes.len() as u64 != len {
        return Err(ReadError::Changed { path: path.display().to_string() });
    }
    Ok((bytes, meta))
}

/// Group- or world-readable permissions on a secret file, in words, for a warning.
pub fn loose_permissions(meta: &Metadata) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
                (true, true) => "its group and everyone",
                (true, false) => "its group",
                _ => "everyone",
            };
            return Some(format!("mode {mode:04o}: readable by {who}; `chmod 600` it"));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    None
}

/// A temporary file name in `dir` for `stem` that no other thread or process uses: the
/// process id (1 in every container, so not enough alone), a per-process counter and the clock.
pub fn unique_temp(dir: &std::path::Path, stem: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    dir.join(format!(".{stem}.{}.{n}.{nanos:08x}.part", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lore-fsio-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        let dir = scratch("limit");
        let path = dir.join("big");
        std::fs::write(&path, vec![b'x'; 100]).expect("write");
        assert_eq!(read_regular(&path, 100).expect("at the limit").len(), 100);
        assert!(matches!(read_regular(&path, 99), Err(ReadError::TooLarge { len: 100, limit: 99, .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_folders_are_refused() {
        let err = read_regular(Path::new("/dev/zero"), 1 << 20).expect_err("a device");
        assert!(err.to_string().contains("character device"), "{err}");
        let err = read_regular(Path::new("/"), 1 << 20).expect_err("a folder");
        assert!(err.to_string().contains("a directory"), "{err}");
    }
}
