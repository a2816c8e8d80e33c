//! lorec's library: validate a knowledge base, chunk it, embed it, and write a sealed artifact.
//!
//! `check` never fails: it returns everything it could compile plus every diagnostic.
//! `build` turns a clean check into an artifact, written atomically.
#![forbid(unsafe_code)]

pub mod build;
pub mod chunk;
pub mod diag;
pub mod diff;
pub mod embedder;
pub mod jsonl;
pub mod manifest;
pub mod markdown;
pub mod model;
pub mod passages;
pub mod persona;
pub mod publish;
pub mod sources;
pub mod unit;
pub mod yaml;

use std::io::Write as _;
use std::path::Path;

/// Stream a file into place: `fill` writes it into a temporary file in the same folder, which
/// is flushed to disk and renamed over `path` only if `fill` succeeds, so readers (including a
/// running `lore` that maps the old file) never see a partial file, even after a crash.
///
/// The file gets the permissions of the file it replaces, or `new_mode` when there is none.
/// The temporary is locked while it is written; temporaries that no live writer holds (left by
/// a build that was killed) are removed first.
pub fn atomic_write_with(
    path: &Path,
    new_mode: u32,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    remove_stale_temporaries(path);
    let tmp = temp_path(path);
    let result = (|| {
        let file = create_private(&tmp)?;
        // Held until the file is closed; tells a concurrent build this temporary is alive.
        file.lock()?;
        set_mode(&file, std::fs::metadata(path).ok().map_or(new_mode, |m| mode_of(&m)))?;
        let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
        fill(&mut file)?;
        let file = file.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new file only its owner can read, whatever the umask.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
}

#[cfg(not(unix))]
fn mode_of(_: &std::fs::Metadata) -> u32 {
    0o600
}

fn set_mode(file: &std::fs::File, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    #[cfg(not(unix))]
    let _ = (file, mode);
    Ok(())
}

/// Remove `.NAME.PID.tmp` files beside `path` that no process holds locked: what a build killed
/// mid-write leaves behind. A live writer holds its temporary's lock, so it is never touched.
fn remove_stale_temporaries(path: &Path) {
    let (dir, name) = split(path);
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let is_ours = file_name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if !is_ours || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        // A writer creates its temporary and then locks it; an empty, new one may be in that gap.
        let just_created = entry.metadata().is_ok_and(|m| {
            m.len() == 0 && m.modified().ok().and_then(|t| t.elapsed().ok()).is_none_or(|age| age.as_secs() < 5)
        });
        if just_created {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(entry.path()) else { continue };
        if file.try_lock().is_ok() {
            tracing::info!(file = %entry.path().display(), "removing a temporary file left by an interrupted build");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn split(path: &Path) -> (&Path, String) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    (dir, path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
}

fn temp_path(path: &Path) -> std::path::PathBuf {
    let (dir, name) = split(path);
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

/// A cache entry on disk: its payload followed by the payload's SHA-256, so damage anywhere in
/// it (a bad copy, a restored cache, bit rot) makes the entry a miss instead of a wrong answer.
pub fn checked_entry(payload: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut out = Vec::with_capacity(payload.len() + 32);
    out.extend_from_slice(payload);
    out.extend_from_slice(&sha2::Sha256::digest(payload));
    out
}

/// The payload of an entry written by [`checked_entry`], copied into an aligned buffer for
/// rkyv, or `None` when it does not match its digest.
pub fn read_checked_entry(path: &Path) -> Option<rkyv::util::AlignedVec<16>> {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).ok()?;
    let (payload, digest) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if sha2::Sha256::digest(payload).as_slice() != digest {
        return None;
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    Some(aligned)
}

/// Like [`atomic_write_with`] for a buffer, without waiting for the disk: for cache entries, which carry their own
/// digest ([`checked_entry`]), so a crash can cost an entry but never serve a wrong one.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        std::fs::File::create(&tmp)?.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
