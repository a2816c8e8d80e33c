//! The build manifest: beside every artifact `lorec build` writes, one JSON file per build in
//! `manifest/` (`<created>-<build id>.json`), written atomically, so concurrent builds never
//! share a file and an entry is whole or absent. `lorec versions` lists them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The folder beside the artifacts.
pub const MANIFEST_DIR: &str = "manifest";

/// What one build produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The artifact's file name (entries of several artifacts can share a folder).
    pub artifact: String,
    pub version: String,
    pub build_id: String,
    /// SHA-256 of the whole artifact file, hex.
    pub sha256: String,
    pub bytes: u64,
    pub created_unix: u64,
    /// SHA-256 over the sorted (path, file SHA-256) pairs of the sources, hex: equal source
    /// trees have equal hashes.
    pub source_tree_sha256: String,
    pub embedder: String,
    pub audience: String,
    pub format_version: u32,
    /// The entry for the same artifact name made before this one, if any.
    pub previous: Option<Previous>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Previous {
    pub version: String,
    pub build_id: String,
}

/// The hash of a source tree: its files' relative paths and digests, in path order.
pub fn source_tree_sha256<'a>(sources: impl Iterator<Item = (&'a str, &'a [u8; 32])>) -> String {
    let mut files: Vec<_> = sources.collect();
    files.sort();
    let mut h = Sha256::new();
    for (path, sha) in files {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update(sha);
    }
    hex(&h.finalize())
}

pub use format::text::hex;

/// Every entry in `dir`'s manifest folder, oldest first; unreadable files are skipped (a
/// manifest is a record, not an input).
pub fn entries(dir: &Path) -> Vec<Entry> {
    let mut out: Vec<Entry> = std::fs::read_dir(dir.join(MANIFEST_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    out.sort_by(|a: &Entry, b: &Entry| (a.created_unix, &a.build_id).cmp(&(b.created_unix, &b.build_id)));
    out
}

/// Record `entry` beside `artifact` (in `manifest/` of its folder), filling in `previous`.
pub fn record(artifact: &Path, mut entry: Entry) -> std::io::Result<PathBuf> {
    let dir = artifact.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    entry.previous = entries(dir)
        .into_iter()
        .rfind(|e| e.artifact == entry.artifact && e.build_id != entry.build_id)
        .map(|e| Previous { version: e.version, build_id: e.build_id });
    let folder = dir.join(MANIFEST_DIR);
    std::fs::create_dir_all(&folder)?;
    let path = folder.join(format!("{:010}-{}.json", entry.created_unix, entry.build_id));
    let json = serde_json::to_vec_pretty(&entry).map_err(std::io::Error::other)?;
    crate::atomic_write_with(&path, 0o644, |f| f.write_all(&json))?;
    Ok(path)
}

/// A writer that hashes everything written through it (the artifact's file digest, without
/// reading the file back).
pub struct HashingWrite<'a, W: Write> {
    pub inner: &'a mut W,
    pub hasher: Sha256,
    pub written: u64,
}

impl<W: Write> Write for HashingWrite<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
