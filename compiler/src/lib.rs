//! lorec's library: validate a knowledge base, chunk it, embed it, and write a sealed artifact.
//!
//! `check` never fails: it returns everything it could compile plus every diagnostic.
//! `build` turns a clean check into an artifact, written atomically.
#![forbid(unsafe_code)]

pub mod build;
pub mod chunk;
pub mod diag;
pub mod embedder;
pub mod jsonl;
pub mod markdown;
pub mod model;
pub mod passages;
pub mod sources;
pub mod unit;
pub mod yaml;

use std::io::Write as _;
use std::path::Path;

/// Stream a file into place: `fill` writes it into a temporary file in the same folder, which
/// is flushed to disk and renamed over `path` only if `fill` succeeds, so readers (including a
/// running `lore` that maps the old file) never see a partial file, even after a crash.
pub fn atomic_write_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
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

fn temp_path(path: &Path) -> std::path::PathBuf {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
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
