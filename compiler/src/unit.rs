//! Compiled units: everything the artifact needs from one source file, in final form
//! (compressed text blocks, stored vectors, analysed BM25 terms, replayable warnings), cached
//! per file, so a rebuild compiles only the files that changed and then merges.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use format::analyze::Analyzer;
use format::{ChunkRecord, Compression, TextBlock};
use rkyv::rancor;
use rkyv::{Archive, Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chunk::{CHUNKER_VERSION, Chunk};
use crate::diag::{Diagnostic, Label, Pos, Severity};

/// Bump when block packing, analysis or this layout changes, so old cache entries miss.
const UNIT_VERSION: u32 = 4;

/// Target plaintext size of one text block: small enough that opening a hit costs
/// microseconds, large enough for zstd to find repetition. Blocks never span two files, so a
/// file's blocks can be reused as they are.
pub const TEXT_BLOCK_BYTES: usize = 16 * 1024;

/// How chunk vectors are stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorFormat {
    F32,
    /// Symmetric int8 with a per-chunk scale: a quarter of the size; see EVALUATION.md for the
    /// quality cost.
    I8,
}

/// One text block, compressed (or not) and ready to be sealed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UnitBlock {
    pub stored: Vec<u8>,
    pub compression: Compression,
    pub plain_len: u32,
    pub plain_sha256: [u8; 32],
    /// How many chunk records the block holds.
    pub chunks: u32,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum UnitVectors {
    F32(Vec<f32>),
    I8 { values: Vec<i8>, scales: Vec<f32> },
}

/// A diagnostic in a form the cache can store; only warnings are ever cached, because a file
/// with errors never reaches a build.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CachedDiagnostic {
    pub code: String,
    pub message: String,
    pub labels: Vec<(String, u32, u32, String)>,
    pub hint: Option<String>,
}

/// Everything one source file contributes to an artifact, for one audience and vector format.
/// Chunk-level arrays cover the admitted chunks only, in source order.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Unit {
    pub warnings: Vec<CachedDiagnostic>,
    /// Chunks in the file before the audience filter.
    pub chunks_found: u32,
    pub titles: Vec<String>,
    /// The persona's name as this file states it (a JSON Resume's `basics`, a RenderCV `cv`,
    /// a top-level `profile` or `about` with a `name`), for topic detection.
    pub names: Vec<String>,
    pub blocks: Vec<UnitBlock>,
    pub vectors: UnitVectors,
    /// Per chunk, how many facet vectors it has (see `Chunk::facets`)...
    pub facet_counts: Vec<u32>,
    /// ...and those vectors, chunk by chunk.
    pub facet_vectors: UnitVectors,
    /// The file's own BM25 vocabulary; `chunk_terms` index into it.
    pub terms: Vec<String>,
    /// Per chunk, where its terms start in `chunk_terms`/`chunk_tfs` (one more entry than chunks).
    pub chunk_term_starts: Vec<u32>,
    pub chunk_terms: Vec<u32>,
    pub chunk_tfs: Vec<u16>,
    /// Per chunk, its length in analysed terms.
    pub chunk_lens: Vec<u32>,
}

impl Unit {
    /// Compile one file's admitted chunks and their vectors: `vectors` holds, chunk by chunk,
    /// the vector of its text and then, `with_facets`, one per facet.
    pub fn compile(
        chunks: &[&Chunk],
        vectors: &[Vec<f32>],
        format: VectorFormat,
        chunks_found: usize,
        warnings: &[&Diagnostic],
        with_facets: bool,
    ) -> Unit {
        let facet_count = |c: &Chunk| if with_facets { c.facets.len() } else { 0 };
        let (mut whole, mut facets) = (Vec::with_capacity(chunks.len()), Vec::new());
        let mut rows = vectors.iter();
        for chunk in chunks {
            whole.extend(rows.next().cloned());
            facets.extend(rows.by_ref().take(facet_count(chunk)).cloned());
        }
        let mut unit = Unit {
            warnings: warnings.iter().map(|d| CachedDiagnostic::from(*d)).collect(),
            chunks_found: chunks_found as u32,
            titles: chunks.iter().map(|c| c.title.clone()).collect(),
            names: chunks.iter().filter_map(|c| persona_name(c)).collect(),
            blocks: pack_blocks(chunks),
            vectors: store_vectors(&whole, format),
            facet_counts: chunks.iter().map(|c| facet_count(c) as u32).collect(),
            facet_vectors: store_vectors(&facets, format),
            terms: Vec::new(),
            chunk_term_starts: vec![0],
            chunk_terms: Vec::new(),
            chunk_tfs: Vec::new(),
            chunk_lens: Vec::with_capacity(chunks.len()),
        };
        let analyzer = Analyzer::default();
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut tf: HashMap<u32, u32> = HashMap::new();
        let mut sorted = Vec::new();
        for chunk in chunks {
            tf.clear();
            let mut len = 0u32;
            analyzer.for_each_term(&chunk.text, |term| {
                let id = match ids.get(term) {
                    Some(&id) => id,
                    None => {
                        let id = unit.terms.len() as u32;
                        ids.insert(term.to_string(), id);
                        unit.terms.push(term.to_string());
                        id
                    }
                };
                *tf.entry(id).or_default() += 1;
                len += 1;
            });
            sorted.clear();
            sorted.extend(tf.iter().map(|(&t, &n)| (t, n.min(u32::from(u16::MAX)) as u16)));
            sorted.sort_unstable();
            unit.chunk_terms.extend(sorted.iter().map(|p| p.0));
            unit.chunk_tfs.extend(sorted.iter().map(|p| p.1));
            unit.chunk_term_starts.push(unit.chunk_terms.len() as u32);
            unit.chunk_lens.push(len);
        }
        unit
    }

    pub fn chunks(&self) -> usize {
        self.chunk_lens.len()
    }

    /// Whether every table agrees with every other, as [`Unit::compile`] makes them: what a
    /// cached unit must pass before a build merges it.
    pub fn is_consistent(&self, dims: usize, format: VectorFormat) -> bool {
        let n = self.chunks();
        let starts_ok = self.chunk_term_starts.len() == n + 1
            && self.chunk_term_starts.first() == Some(&0)
            && self.chunk_term_starts.windows(2).all(|w| w[0] <= w[1])
            && self.chunk_term_starts.last().is_some_and(|&end| end as usize == self.chunk_terms.len());
        let vectors_ok = match (&self.vectors, format) {
            (UnitVectors::F32(v), VectorFormat::F32) => v.len() == n * dims,
            (UnitVectors::I8 { values, scales }, VectorFormat::I8) => values.len() == n * dims && scales.len() == n,
            _ => false,
        };
        let facets: usize = self.facet_counts.iter().map(|&n| n as usize).sum();
        let facets_ok = self.facet_counts.len() == n
            && match (&self.facet_vectors, format) {
                (UnitVectors::F32(v), VectorFormat::F32) => v.len() == facets * dims,
                (UnitVectors::I8 { values, scales }, VectorFormat::I8) => {
                    values.len() == facets * dims && scales.len() == facets
                }
                _ => false,
            };
        starts_ok
            && vectors_ok
            && facets_ok
            && self.chunk_tfs.len() == self.chunk_terms.len()
            && self.chunk_terms.iter().all(|&t| (t as usize) < self.terms.len())
            && self.titles.len() == n
            && self.blocks.iter().map(|b| b.chunks as usize).sum::<usize>() == n
    }

    pub fn warnings(&self, file: &str) -> impl Iterator<Item = Diagnostic> + '_ {
        let file = file.to_string();
        self.warnings.iter().map(move |w| w.to_diagnostic(&file))
    }
}

/// The persona's name, if `chunk` is the entity that introduces the persona: its `Name:` line.
fn persona_name(chunk: &Chunk) -> Option<String> {
    const INTRODUCTIONS: &[&str] = &["/basics", "/cv", "/profile", "/about", "/personal_info", "/persona", "/me"];
    if !INTRODUCTIONS.contains(&chunk.path.as_str()) {
        return None;
    }
    chunk.text.lines().find_map(|l| l.strip_prefix("Name: ")).map(|n| n.trim().to_string()).filter(|n| !n.is_empty())
}

fn pack_blocks(chunks: &[&Chunk]) -> Vec<UnitBlock> {
    let mut groups: Vec<Vec<ChunkRecord>> = Vec::new();
    let mut bytes = 0;
    for chunk in chunks {
        let size = chunk.text.len() + chunk.id.len() * 2 + chunk.title.len() + 64;
        if groups.is_empty() || (bytes > 0 && bytes + size > TEXT_BLOCK_BYTES) {
            groups.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        groups.last_mut().expect("a group was just pushed").push(ChunkRecord {
            id: chunk.id.clone(),
            doc: chunk.doc.clone(),
            path: chunk.path.clone(),
            title: chunk.title.clone(),
            section: chunk.section.clone(),
            tags: chunk.tags.clone(),
            visibility: chunk.visibility,
            text: chunk.text.clone(),
        });
    }
    groups
        .into_iter()
        .map(|chunks| {
            let count = chunks.len() as u32;
            let block = TextBlock { chunks };
            let plain = rkyv::to_bytes::<rancor::Error>(&block).expect("serialising into memory cannot fail");
            let z = format::compress::zstd_compress(&plain);
            let (stored, compression) = if format::compress::worth_it(plain.len(), z.len()) {
                (z, Compression::Zstd)
            } else {
                (plain.to_vec(), Compression::None)
            };
            UnitBlock {
                stored,
                compression,
                plain_len: plain.len() as u32,
                plain_sha256: Sha256::digest(&plain).into(),
                chunks: count,
            }
        })
        .collect()
}

fn store_vectors(vectors: &[Vec<f32>], format: VectorFormat) -> UnitVectors {
    match format {
        VectorFormat::F32 => UnitVectors::F32(vectors.iter().flatten().copied().collect()),
        VectorFormat::I8 => {
            let mut values = Vec::with_capacity(vectors.iter().map(Vec::len).sum());
            let mut scales = Vec::with_capacity(vectors.len());
            for v in vectors {
                let (q, scale) = format::embed::quantize(v);
                values.extend_from_slice(&q);
                scales.push(scale);
            }
            UnitVectors::I8 { values, scales }
        }
    }
}

impl From<&Diagnostic> for CachedDiagnostic {
    fn from(d: &Diagnostic) -> Self {
        let label = |l: &Label| (l.file.clone(), l.pos.line as u32, l.pos.col as u32, l.message.clone());
        CachedDiagnostic {
            code: d.code.to_string(),
            message: d.message.clone(),
            labels: std::iter::once(&d.primary).chain(&d.secondary).map(label).collect(),
            hint: d.hint.clone(),
        }
    }
}

impl CachedDiagnostic {
    fn to_diagnostic(&self, file: &str) -> Diagnostic {
        let label = |(f, line, col, message): &(String, u32, u32, String)| Label {
            file: f.clone(),
            pos: Pos { line: *line as usize, col: *col as usize },
            message: message.clone(),
        };
        let mut labels = self.labels.iter().map(label);
        let primary = labels.next().unwrap_or_else(|| Label { file: file.to_string(), ..Default::default() });
        Diagnostic {
            severity: Severity::Warning,
            code: self.code.clone().into(),
            message: self.message.clone(),
            primary,
            secondary: labels.collect(),
            hint: self.hint.clone(),
        }
    }
}

/// The folder of cached units for one build configuration.
#[derive(Debug)]
pub struct UnitCache {
    dir: PathBuf,
    /// Everything besides the file that decides a unit's content.
    config: [u8; 32],
    dims: usize,
    format: VectorFormat,
}

impl UnitCache {
    /// `fingerprint` names the embedder (`dims` its vectors' size); audience, vector format
    /// and facets change what a unit holds.
    pub fn new(
        dir: &Path,
        fingerprint: &[u8; 32],
        dims: usize,
        audience: &str,
        vectors: VectorFormat,
        facets: bool,
    ) -> UnitCache {
        let config = Sha256::new()
            .chain_update(fingerprint)
            .chain_update((dims as u64).to_le_bytes())
            .chain_update(audience.as_bytes())
            .chain_update([0, vectors as u8, u8::from(facets)])
            .chain_update(CHUNKER_VERSION.to_le_bytes())
            .chain_update(UNIT_VERSION.to_le_bytes())
            .finalize()
            .into();
        UnitCache { dir: dir.to_path_buf(), config, dims, format: vectors }
    }

    fn entry_path(&self, rel: &str, sha256: &[u8; 32]) -> PathBuf {
        let key = Sha256::new()
            .chain_update(self.config)
            .chain_update(rel.as_bytes())
            .chain_update([0])
            .chain_update(sha256)
            .finalize();
        let hex = format::text::hex(&key[..16]);
        self.dir.join(format!("{hex}.unit"))
    }

    /// A cached unit, or `None` when absent or damaged (a damaged entry is just a miss).
    pub fn get(&self, rel: &str, sha256: &[u8; 32]) -> Option<Unit> {
        let path = self.entry_path(rel, sha256);
        let payload = crate::read_checked_entry(&path)?;
        let unit = rkyv::from_bytes::<Unit, rancor::Error>(&payload).ok()?;
        if !unit.is_consistent(self.dims, self.format) {
            return None;
        }
        // A used entry is young again, so `prune` keeps it.
        let _ =
            std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Some(unit)
    }

    /// Remove units no build has used for `max_age` (the files' previous versions, files since
    /// deleted), so the cache does not grow with every edit. Failures are only logged.
    pub fn prune(&self, max_age: std::time::Duration) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let now = std::time::SystemTime::now();
        for entry in entries.flatten() {
            let path = entry.path();
            let stale = path.extension().is_some_and(|e| e == "unit")
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > max_age));
            if stale && let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("could not prune build cache entry {}: {e}", path.display());
            }
        }
    }

    /// Store a unit atomically; failures only cost speed, so they are logged, not raised.
    pub fn put(&self, rel: &str, sha256: &[u8; 32], unit: &Unit) {
        let path = self.entry_path(rel, sha256);
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let bytes = rkyv::to_bytes::<rancor::Error>(unit).map_err(std::io::Error::other)?;
            crate::write_replacing(&path, &crate::checked_entry(&bytes))
        })();
        if let Err(e) = result {
            tracing::warn!("could not write build cache entry {}: {e}", path.display());
        }
    }
}
