//! The incremental build cache: one entry per (source bytes, path, chunker, model), holding
//! that file's chunks and their embeddings, so a rebuild only re-chunks and re-embeds the files
//! that changed. Files with any diagnostic are never cached, so their warnings always show.

use std::path::{Path, PathBuf};

use rkyv::rancor;
use rkyv::{Archive, Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chunk::{CHUNKER_VERSION, Chunk};
use crate::diag::Pos;
use format::Visibility;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CachedChunk {
    pub id: String,
    pub doc: String,
    pub path: String,
    pub title: String,
    pub section: String,
    pub tags: Vec<String>,
    pub visibility: Visibility,
    pub text: String,
    pub line: u32,
    pub col: u32,
    pub vector: Vec<f32>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CacheEntry {
    pub chunks: Vec<CachedChunk>,
}

impl CachedChunk {
    pub fn new(chunk: &Chunk, vector: Vec<f32>) -> Self {
        CachedChunk {
            id: chunk.id.clone(),
            doc: chunk.doc.clone(),
            path: chunk.path.clone(),
            title: chunk.title.clone(),
            section: chunk.section.clone(),
            tags: chunk.tags.clone(),
            visibility: chunk.visibility,
            text: chunk.text.clone(),
            line: chunk.pos.line as u32,
            col: chunk.pos.col as u32,
            vector,
        }
    }

    pub fn chunk(&self) -> Chunk {
        Chunk {
            id: self.id.clone(),
            doc: self.doc.clone(),
            path: self.path.clone(),
            title: self.title.clone(),
            section: self.section.clone(),
            tags: self.tags.clone(),
            visibility: self.visibility,
            text: self.text.clone(),
            pos: Pos { line: self.line as usize, col: self.col as usize },
        }
    }
}

#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: &Path) -> Self {
        Cache { dir: dir.to_path_buf() }
    }

    fn entry_path(&self, rel: &str, sha256: &[u8; 32], model: &[u8; 32]) -> PathBuf {
        let key = Sha256::new()
            .chain_update(rel.as_bytes())
            .chain_update([0])
            .chain_update(sha256)
            .chain_update(model)
            .chain_update(CHUNKER_VERSION.to_le_bytes())
            .finalize();
        let hex: String = key[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.chunks"))
    }

    /// A cached entry, or `None` when absent or unreadable (a damaged entry is just a miss).
    pub fn get(&self, rel: &str, sha256: &[u8; 32], model: &[u8; 32]) -> Option<CacheEntry> {
        let bytes = std::fs::read(self.entry_path(rel, sha256, model)).ok()?;
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(&bytes);
        rkyv::from_bytes::<CacheEntry, rancor::Error>(&aligned).ok()
    }

    /// Store an entry atomically; failures only cost speed, so they are logged, not raised.
    pub fn put(&self, rel: &str, sha256: &[u8; 32], model: &[u8; 32], entry: &CacheEntry) {
        let path = self.entry_path(rel, sha256, model);
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let bytes = rkyv::to_bytes::<rancor::Error>(entry).map_err(std::io::Error::other)?;
            crate::atomic_write(&path, &bytes)
        })();
        if let Err(e) = result {
            tracing::warn!("could not write build cache entry {}: {e}", path.display());
        }
    }
}
