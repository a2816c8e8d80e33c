//! The engine: one opened artifact, ready to answer. Synchronous (no async runtime): the memory
//! map, the authenticated index, text blocks decrypted on first use, retrieval and scoring.
//! Everything above it (which engine answers, over which transport) lives in other layers.

pub mod mapped;
pub mod retrieval;
pub mod scoring;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use format::analyze::Analyzer;
use format::embed::ModelRef;
use format::seal::{Key, Sealer};
use format::{ArchivedCompression, ArchivedIndex, Compression, ContainerError, Header, OpenedContainer, SectionKind};
use mapped::{BlockView, FileStamp, IndexView, LoadMode, MappedFile, ModelView};
use retrieval::{Mode, Params};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot open the artifact: {0}")]
    Read(#[from] format::fsio::ReadError),
    #[error(
        "{path}: {reason}; it can no longer be served from this process (replace artifacts by renaming a new file over them, as lorec does)"
    )]
    ArtifactChanged { path: String, reason: String },
    #[error(
        "{path} is not sealed (built with --no-encrypt) and --require-sealed (LORE_REQUIRE_SEALED) refuses such artifacts"
    )]
    Unsealed { path: String },
    #[error("{path}: {error}")]
    Container { path: String, error: ContainerError },
    #[error(
        "{path}: this artifact embeds questions with {embedder}, which this lore was built without (hint: build lore with `--features {feature}`)"
    )]
    EmbedderMissing { path: String, embedder: String, feature: &'static str },
    #[error("the embedder failed: {0}")]
    Embed(String),
    #[error("{path}: the {section} section is malformed: {message}")]
    Malformed { path: String, section: &'static str, message: String },
}

/// Above this many chunks a query scans long enough (about 100 µs at 4,096 int8 rows; 2 ms at
/// 100k, BENCHMARKS.md) to belong on the blocking pool rather than an async worker.
pub const QUICK_QUERY_MAX_CHUNKS: usize = 4096;

/// Serves queries from one artifact. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    path: String,
    /// The artifact file: header, index and text blocks are read from it.
    file: Arc<MappedFile>,
    /// The embedder: this file's model section, or an identical one already checked in
    /// another engine (see [`Engine::open_reusing`]).
    model: Arc<Model>,
    header: Header,
    header_digest: [u8; 32],
    /// The source files, from the header (format v1, v2) or the sealed sources section (v3).
    sources: Vec<format::SourceFile>,
    /// The artifact's persona section (format v6, from the knowledge base's `persona.yaml`).
    persona: Option<format::Persona>,
    sealer: Option<Sealer>,
    index: IndexView,
    texts_range: std::ops::Range<usize>,
    texts_encrypted: bool,
    texts: Vec<OnceLock<BlockView>>,
    analyzer: Analyzer,
    /// Overrides the artifact's fusion parameters (tuning runs only).
    params: Option<Params>,
}

/// How to answer one question.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryOptions {
    pub k: usize,
    /// Return hits even when the question is off topic.
    pub include_off_topic: bool,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    /// The document the hit came from; passages of one document share it.
    pub doc: String,
    pub source: String,
    pub path: String,
    pub title: String,
    pub section: String,
    pub tags: Vec<String>,
    pub text: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRef {
    pub version: String,
    pub build_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicSignals {
    /// The question has one of the artifact's addressing terms (speaks to the persona).
    pub addressed: bool,
    pub top3_similarity: f32,
    pub top3_background: f32,
    pub top3_probe: f32,
    pub top_probe: f32,
    pub term_coverage: f32,
    pub bm25_max: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub q: String,
    pub on_topic: bool,
    pub hits: Vec<Hit>,
    /// The best dense similarity, which `on_topic` compares with the artifact's threshold.
    pub top_similarity: f32,
    /// The best similarity to the artifact's background of generic, off-topic questions.
    pub background_similarity: f32,
    /// The signals behind `on_topic`.
    pub topic: TopicSignals,
    pub artifact: ArtifactRef,
    pub took_us: u64,
}

fn read_fusion(f: &format::ArchivedFusionParams) -> Params {
    Params {
        k1: f.k1.to_native(),
        b: f.b.to_native(),
        dense_weight: f.dense_weight.to_native(),
        bm25_weight: f.bm25_weight.to_native(),
        bm25_weight_full: f.bm25_weight_full.to_native(),
    }
}

/// What names a model section's contents: the same format, striping, length and plaintext
/// digest mean the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelIdentity {
    format_version: u32,
    stripe_len: u64,
    plain_len: u64,
    plain_sha256: [u8; 32],
}

/// A checked model section and the question embedder built from it. Engines whose artifacts
/// carry the same model section share one: a swap to a rebuilt knowledge base with the same
/// embedder neither hashes the model again nor loads a transformer again.
#[derive(Debug)]
pub struct Model {
    view: ModelView,
    questions: QuestionEmbedder,
    identity: ModelIdentity,
}

/// How this engine turns questions into vectors.
enum QuestionEmbedder {
    /// Pool rows of the static table in the mapped model section.
    Static,
    /// Ask the OpenAI-compatible API the chunks were embedded with; answers are cached.
    #[cfg(feature = "openai")]
    OpenAi(Box<embed_openai::QueryCache>),
    /// Run the transformer stored in the model section.
    #[cfg(feature = "minilm")]
    MiniLm(Box<embed_minilm::MiniLm>),
}

impl std::fmt::Debug for QuestionEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuestionEmbedder::Static => f.write_str("Static"),
            #[cfg(feature = "openai")]
            QuestionEmbedder::OpenAi(_) => f.write_str("OpenAi"),
            #[cfg(feature = "minilm")]
            QuestionEmbedder::MiniLm(_) => f.write_str("MiniLm"),
        }
    }
}

impl QuestionEmbedder {
    /// Pick the embedder the model section asks for; `Err((embedder, feature))` when this
    /// build lacks it.
    fn for_model(model: ModelRef<'_>, info: &format::EmbedderInfo) -> Result<QuestionEmbedder, (String, &'static str)> {
        match model {
            ModelRef::Static(_) => Ok(QuestionEmbedder::Static),
            #[cfg(feature = "minilm")]
            ModelRef::Transformer(parts) => embed_minilm::MiniLm::from_parts(
                parts.config_json.as_bytes(),
                parts.tokenizer_json.as_bytes(),
                parts.weights.as_slice(),
            )
            .map(|m| QuestionEmbedder::MiniLm(Box::new(m)))
            .map_err(|e| (format!("the transformer model {} ({e})", info.id), "minilm")),
            #[cfg(not(feature = "minilm"))]
            ModelRef::Transformer(_) => Err((format!("the transformer model {}", info.id), "minilm")),
            #[cfg(feature = "openai")]
            ModelRef::Remote(remote) => {
                let config = embed_openai::Config::from_env(remote.model.as_str());
                embed_openai::Client::new(config)
                    .map(|c| QuestionEmbedder::OpenAi(Box::new(embed_openai::QueryCache::new(c))))
                    .map_err(|e| (format!("openai:{} ({e})", remote.model), "openai"))
            }
            #[cfg(not(feature = "openai"))]
            ModelRef::Remote(remote) => Err((format!("openai:{}", remote.model), "openai")),
        }
    }
}

impl Engine {
    /// Map and check an artifact: structure, key, and the authenticated index. Texts are only
    /// decrypted when a hit needs them.
    pub fn open(path: &Path, key: Option<&Key>) -> Result<Engine, EngineError> {
        Engine::open_with(path, key, LoadMode::Map)
    }

    /// [`Engine::open`], holding the file's bytes as `mode` says.
    pub fn open_with(path: &Path, key: Option<&Key>, mode: LoadMode) -> Result<Engine, EngineError> {
        Engine::open_reusing(path, key, mode, None)
    }

    /// [`Engine::open_with`], taking `reuse`'s model when this artifact's model section is the
    /// same (same digest in its header, which the sealed units authenticate): those bytes were
    /// already checked against that digest, so the new file's copy is not read at all.
    pub fn open_reusing(
        path: &Path,
        key: Option<&Key>,
        mode: LoadMode,
        reuse: Option<&Engine>,
    ) -> Result<Engine, EngineError> {
        let display = path.display().to_string();
        let file = MappedFile::open(path, mode)?;
        let container_err = |error| EngineError::Container { path: display.clone(), error };
        let malformed = |section, message| EngineError::Malformed { path: display.clone(), section, message };
        let (
            header,
            header_digest,
            sealer,
            index,
            sources,
            persona,
            model_range,
            texts_range,
            texts_encrypted,
            (reused, identity),
        ) = {
            let c = OpenedContainer::open(file.bytes()).map_err(container_err)?;
            let sealer = c.sealer(key).map_err(container_err)?;
            let model = c.section(SectionKind::Model);
            if model.encrypted || model.compression != Compression::None {
                return Err(malformed("model", "must be stored plain for zero-copy access".into()));
            }
            let identity = ModelIdentity {
                format_version: c.format_version,
                stripe_len: model.stripe_len,
                plain_len: model.plain_len,
                plain_sha256: model.plain_sha256,
            };
            let reused = reuse.filter(|e| e.model.identity == identity).map(|e| e.model.clone());
            // The model is used in place, so its bytes are checked against the header's digest
            // before anything trusts them, while the index stripes decrypt; the sealed stripes
            // are read once and their pages leave the resident set as each is done.
            let check_model = reused.is_none();
            let (model_checked, index) = rayon::join(
                || if check_model { c.check_plain_section(SectionKind::Model) } else { Ok(()) },
                || c.open_section_with(sealer.as_ref(), SectionKind::Index, &|range| file.release(range)),
            );
            let index = index.map_err(container_err)?;
            model_checked.map_err(container_err)?;
            let sources = c.sources(sealer.as_ref()).map_err(container_err)?.sources;
            let persona = c.persona(sealer.as_ref()).map_err(container_err)?;
            let range = |kind| {
                let s = c.section(kind);
                s.offset as usize..(s.offset + s.stored_len) as usize
            };
            let texts_encrypted = c.section(SectionKind::Texts).encrypted;
            (
                c.header.clone(),
                c.header_digest,
                sealer,
                index,
                sources,
                persona,
                range(SectionKind::Model),
                range(SectionKind::Texts),
                texts_encrypted,
                (reused, identity),
            )
        };
        let file = Arc::new(file);
        let model = match reused {
            Some(model) => model,
            None => {
                let view = ModelView::new(file.clone(), model_range, identity.format_version)
                    .map_err(|e| malformed("model", e))?;
                let questions =
                    QuestionEmbedder::for_model(view.model(), &header.embedder).map_err(|(embedder, feature)| {
                        EngineError::EmbedderMissing { path: display.clone(), embedder, feature }
                    })?;
                Arc::new(Model { view, questions, identity })
            }
        };
        let index = format::upgrade_index(index, identity.format_version).map_err(|e| malformed("index", e))?;
        let index = IndexView::new(index).map_err(|e| malformed("index", e))?;
        let n_blocks = index.index().blocks.len();
        let engine = Engine {
            path: display,
            file,
            model,
            header,
            header_digest,
            sources,
            persona,
            sealer,
            index,
            texts_range,
            texts_encrypted,
            texts: (0..n_blocks).map(|_| OnceLock::new()).collect(),
            analyzer: Analyzer::default(),
            params: None,
        };
        engine.check_consistency()?;
        Ok(engine)
    }

    /// Cross-field checks the type system cannot make: tables that match the chunk count,
    /// postings and references that point inside their tables.
    fn check_consistency(&self) -> Result<(), EngineError> {
        let index = self.index();
        let bad = |message: String| EngineError::Malformed { path: self.path.clone(), section: "index", message };
        let n = index.chunks.len();
        let dims = index.dims.to_native() as usize;
        let vectors_ok = match &index.vectors {
            format::ArchivedDenseVectors::F32(v) => v.len() == n * dims,
            format::ArchivedDenseVectors::I8 { values, scales } => values.len() == n * dims && scales.len() == n,
        };
        let f = index.facet_chunks.len();
        let facets_ok = match &index.facet_vectors {
            format::ArchivedDenseVectors::F32(v) => v.len() == f * dims,
            format::ArchivedDenseVectors::I8 { values, scales } => values.len() == f * dims && scales.len() == f,
        };
        if dims != self.header.embedder.dims as usize
            || !vectors_ok
            || !facets_ok
            || !index.calibration.background.len().is_multiple_of(dims.max(1))
        {
            return Err(bad("vector tables do not match the chunk count and model dimensions".into()));
        }
        let postings = index.posting_chunks.len();
        if index.chunk_lens.len() != n
            || index.term_starts.len() != index.terms.len() + 1
            || index.posting_tfs.len() != postings
            || index.term_starts.iter().any(|s| s.to_native() as usize > postings)
            || index.term_starts.windows(2).any(|w| w[0].to_native() > w[1].to_native())
        {
            return Err(bad("BM25 tables do not match".into()));
        }
        if index.posting_chunks.iter().any(|c| c.to_native() as usize >= n) {
            return Err(bad("a posting names a chunk that does not exist".into()));
        }
        if !(0.0..=1.0).contains(&index.facet_weight.to_native()) {
            return Err(bad("the facet weight lies outside 0 to 1".into()));
        }
        if index.facet_chunks.iter().any(|c| c.to_native() as usize >= n) {
            return Err(bad("a facet names a chunk that does not exist".into()));
        }
        if let ModelRef::Static(table) = self.model.view.model()
            && (table.dims() != dims || !table.rows_consistent())
        {
            return Err(EngineError::Malformed {
                path: self.path.clone(),
                section: "model",
                message: "the embedding table does not match its dimensions".into(),
            });
        }
        let texts_len = self.texts_range.len() as u64;
        if index.blocks.iter().any(|b| {
            b.offset.to_native().checked_add(u64::from(b.stored_len.to_native())).is_none_or(|end| end > texts_len)
        }) {
            return Err(bad("a text block lies outside the texts section".into()));
        }
        if index.chunks.iter().any(|c| {
            c.block.to_native() as usize >= index.blocks.len() || c.source.to_native() as usize >= self.sources.len()
        }) {
            return Err(bad("a chunk names a missing text block or source".into()));
        }
        Ok(())
    }

    /// Use other fusion parameters than the artifact's (tuning runs; see
    /// `retrieval::params_from_env`).
    pub fn with_params(mut self, params: Option<Params>) -> Engine {
        self.params = params;
        self
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn header_digest(&self) -> [u8; 32] {
        self.header_digest
    }

    /// The source files the artifact was built from.
    pub fn persona(&self) -> Option<&format::Persona> {
        self.persona.as_ref()
    }

    pub fn sources(&self) -> &[format::SourceFile] {
        &self.sources
    }

    /// Whether the artifact can still be served: `Err` once the mapped file was changed in
    /// place (see [`MappedFile::changed`]); readiness probes report it.
    pub fn check_intact(&self) -> Result<(), EngineError> {
        let model_file = self.model.view.file();
        let reason = self.file.changed().or_else(|| {
            // A model shared from an earlier artifact lives in that file's map.
            if std::ptr::eq(model_file, &*self.file) { None } else { model_file.changed() }
        });
        match reason {
            None => Ok(()),
            Some(reason) => Err(EngineError::ArtifactChanged { path: self.path.clone(), reason }),
        }
    }

    /// The opened file as it was when opened: the registry compares it with what the path
    /// names now to notice a replaced artifact.
    pub fn file_stamp(&self) -> FileStamp {
        self.file.stamp()
    }

    /// The artifact's path, as it was opened.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether a query may hold its thread longer than an async worker should be held (about
    /// 100 µs): questions embedded by a transformer or a remote API, or a table of more than
    /// [`QUICK_QUERY_MAX_CHUNKS`] chunks to scan.
    pub fn may_block(&self) -> bool {
        !matches!(self.model.questions, QuestionEmbedder::Static) || self.index().chunks.len() > QUICK_QUERY_MAX_CHUNKS
    }

    fn index(&self) -> &ArchivedIndex {
        self.index.index()
    }

    /// Embed a question the way the artifact's chunks were embedded.
    fn embed_question(&self, question: &str) -> Result<Vec<f32>, EngineError> {
        match (&self.model.questions, self.model.view.model()) {
            (QuestionEmbedder::Static, ModelRef::Static(table)) => Ok(format::embed::embed(table, question)),
            #[cfg(feature = "openai")]
            (QuestionEmbedder::OpenAi(cache), _) => {
                cache.embed_one(question).map_err(|e| EngineError::Embed(e.to_string()))
            }
            #[cfg(feature = "minilm")]
            (QuestionEmbedder::MiniLm(model), _) => model
                .embed(&[question])
                .map_err(|e| EngineError::Embed(e.to_string()))?
                .pop()
                .ok_or_else(|| EngineError::Embed("the model returned no vector".into())),
            _ => Err(EngineError::Embed("the embedder does not match the model section".into())),
        }
    }

    /// Answer one question with up to `k` hits.
    pub fn query(&self, question: &str, k: usize) -> Result<Answer, EngineError> {
        self.query_with(question, QueryOptions { k, include_off_topic: false, mode: Mode::Hybrid })
    }

    /// Answer with explicit options.
    pub fn query_with(&self, question: &str, opts: QueryOptions) -> Result<Answer, EngineError> {
        let QueryOptions { k, include_off_topic, mode } = opts;
        let started = Instant::now();
        // One fstat: reading a mapped file truncated under us would kill the process (SIGBUS).
        self.check_intact()?;
        let qvec = self.embed_question(question)?;
        let index = self.index();
        let ranking = retrieval::rank(
            index,
            &self.analyzer,
            question,
            &qvec,
            k,
            &retrieval::for_mode(self.params.unwrap_or_else(|| read_fusion(&index.fusion)), mode),
        );
        let addressed = retrieval::addressed(index, question);
        let on_topic = retrieval::on_topic(index, &ranking, addressed);
        let mut hits = Vec::new();
        if on_topic || include_off_topic {
            for scored in &ranking.hits {
                let chunk = &index.chunks[scored.chunk as usize];
                let record = self.record(chunk)?;
                hits.push(Hit {
                    id: record.id.to_string(),
                    doc: record.doc.to_string(),
                    source: self.sources[chunk.source.to_native() as usize].path.clone(),
                    path: record.path.to_string(),
                    title: record.title.to_string(),
                    section: record.section.to_string(),
                    tags: record.tags.iter().map(|t| t.to_string()).collect(),
                    text: record.text.to_string(),
                    score: scored.score,
                });
            }
        }
        Ok(Answer {
            q: question.to_string(),
            on_topic,
            hits,
            top_similarity: ranking.top_dense,
            background_similarity: ranking.top_background,
            topic: TopicSignals {
                addressed,
                top3_similarity: ranking.top3_dense,
                top3_background: ranking.top3_background,
                top3_probe: ranking.top3_probe,
                top_probe: ranking.top_probe,
                term_coverage: ranking.term_coverage,
                bm25_max: ranking.bm25_max,
            },
            artifact: ArtifactRef {
                version: self.header.artifact_version.clone(),
                build_id: self.header.build_id.clone(),
            },
            took_us: started.elapsed().as_micros() as u64,
        })
    }

    /// Visit the first `limit` chunks in artifact order as (section, title, text) until `visit`
    /// returns false: what the chat layer reads to derive a persona from the knowledge base.
    pub fn visit_chunks(
        &self,
        limit: usize,
        visit: &mut dyn FnMut(&str, &str, &str) -> bool,
    ) -> Result<(), EngineError> {
        self.check_intact()?;
        for chunk in self.index().chunks.iter().take(limit) {
            let record = self.record(chunk)?;
            if !visit(record.section.as_str(), record.title.as_str(), record.text.as_str()) {
                break;
            }
        }
        Ok(())
    }

    /// The full record of a chunk, from its (lazily opened) text block.
    fn record(&self, chunk: &format::ArchivedChunkRef) -> Result<&format::ArchivedChunkRecord, EngineError> {
        let block = self.block(chunk.block.to_native() as usize)?;
        block.block().chunks.get(chunk.slot.to_native() as usize).ok_or_else(|| EngineError::Malformed {
            path: self.path.clone(),
            section: "texts",
            message: format!("block {} has no slot {}", chunk.block.to_native(), chunk.slot.to_native()),
        })
    }

    fn block(&self, block_no: usize) -> Result<&BlockView, EngineError> {
        if let Some(b) = self.texts[block_no].get() {
            return Ok(b);
        }
        let r = &self.index().blocks[block_no];
        let raw = &self.file.bytes()[self.texts_range.clone()];
        let start = r.offset.to_native() as usize;
        let sealed = &raw[start..start + r.stored_len.to_native() as usize];
        let compression = match r.compression {
            ArchivedCompression::None => Compression::None,
            ArchivedCompression::Zstd => Compression::Zstd,
        };
        let plain = format::container::open_unit(
            self.sealer.as_ref(),
            SectionKind::Texts,
            block_no as u64,
            sealed,
            self.texts_encrypted,
            compression,
            r.plain_len.to_native() as usize,
        )
        .map_err(|error| EngineError::Container { path: self.path.clone(), error })?;
        let view = BlockView::new(plain).map_err(|message| EngineError::Malformed {
            path: self.path.clone(),
            section: "texts",
            message,
        })?;
        Ok(self.texts[block_no].get_or_init(|| view))
    }
}

#[cfg(test)]
mod tests {
    use format::container::SectionPlan;
    use format::{
        BlockRef, Calibration, Cipher, Compression, Counts, DenseVectors, EmbedderInfo, EmbedderModel, Header, Index,
        ModelTable, SectionKind, TableRows,
    };
    use rkyv::rancor;

    use super::{Engine, EngineError};

    const DIMS: usize = 2;

    fn serialise<T>(value: &T) -> Vec<u8>
    where
        T: for<'a> rkyv::Serialize<
                rkyv::api::high::HighSerializer<
                    rkyv::util::AlignedVec,
                    rkyv::ser::allocator::ArenaHandle<'a>,
                    rancor::Error,
                >,
            >,
    {
        rkyv::to_bytes::<rancor::Error>(value).expect("serialises").to_vec()
    }

    /// An unsealed artifact whose only text block claims an offset that overflows when its
    /// length is added: the index of a `--no-encrypt` artifact is not authenticated, so anyone
    /// can write one.
    fn artifact_with_block_offset(offset: u64) -> Vec<u8> {
        crafted(offset, &[], 0.0)
    }

    /// An unsealed one-chunk artifact with these facet rows (each the chunk's own vector).
    fn crafted(offset: u64, facet_chunks: &[u32], facet_weight: f32) -> Vec<u8> {
        let model = EmbedderModel::Static(ModelTable {
            vocab: [("[UNK]".to_string(), 0), ("lamp".to_string(), 1)].into_iter().collect(),
            unk_id: 0,
            continuing_prefix: "##".into(),
            max_input_chars_per_word: 100,
            lowercase: true,
            strip_accents: true,
            max_tokens: 512,
            truncate_chars: 2048,
            normalize: true,
            dims: DIMS as u32,
            rows: TableRows::F32(vec![0.0, 0.0, 1.0, 0.0]),
        });
        let index = Index {
            chunks: vec![format::ChunkRef { source: 0, block: 0, slot: 0 }],
            blocks: vec![BlockRef { offset, stored_len: 100, plain_len: 100, compression: Compression::None }],
            terms: Default::default(),
            term_starts: vec![0],
            posting_chunks: Vec::new(),
            posting_tfs: Vec::new(),
            chunk_lens: vec![1],
            avg_chunk_len: 1.0,
            dims: DIMS as u32,
            vectors: DenseVectors::F32(vec![1.0, 0.0]),
            facet_chunks: facet_chunks.to_vec(),
            facet_vectors: DenseVectors::F32(facet_chunks.iter().flat_map(|_| [1.0, 0.0]).collect()),
            facet_weight,
            calibration: Calibration {
                background: vec![0.0, 1.0],
                probes: Vec::new(),
                min_similarity: 0.15,
                min_margin: 0.0,
                probe_weight: 0.5,
                coverage_weight: 0.0,
                address_terms: Vec::new(),
                unaddressed_margin: 0.0,
            },
            fusion: format::profiles::PERSONA,
        };
        let header = Header {
            artifact_version: "crafted".into(),
            build_id: "00".into(),
            created_unix: 0,
            compiler: "test".into(),
            audience: "public".into(),
            embedder: EmbedderInfo {
                kind: "static".into(),
                id: "tiny".into(),
                dims: DIMS as u32,
                vocab_size: 2,
                weights_sha256: [0; 32],
            },
            cipher: Cipher::None,
            sources: Vec::new(),
            sections: Vec::new(),
            counts: Counts { chunks: 1, terms: 0, text_blocks: 1 },
        };
        let plans = vec![
            SectionPlan::whole(SectionKind::Model, serialise(&model), false),
            SectionPlan::whole(SectionKind::Index, serialise(&index), false),
            SectionPlan::whole(SectionKind::Texts, vec![0; 100], false),
            SectionPlan::whole(
                SectionKind::Sources,
                serialise(&format::SourceList {
                    sources: vec![format::SourceFile { path: "a.yaml".into(), sha256: [0; 32], bytes: 1 }],
                    withheld: Vec::new(),
                }),
                false,
            ),
        ];
        format::write_container(header, plans, None)
    }

    #[test]
    fn a_text_block_offset_that_overflows_is_refused_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("lore-engine-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("crafted.lore");
        std::fs::write(&path, artifact_with_block_offset(0)).expect("write");
        assert!(Engine::open(&path, None).is_ok(), "the well-formed twin opens");
        std::fs::write(&path, artifact_with_block_offset(u64::MAX - 5)).expect("write");
        let opened = Engine::open(&path, None);
        let _ = std::fs::remove_dir_all(&dir);
        match opened {
            Err(EngineError::Malformed { section: "index", message, .. }) => {
                assert!(message.contains("outside the texts section"), "{message}")
            }
            other => panic!("expected a malformed-index error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn facets_that_name_a_missing_chunk_or_weigh_outside_0_to_1_are_refused() {
        let dir = std::env::temp_dir().join(format!("lore-engine-facets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("crafted.lore");
        let open = |bytes: Vec<u8>| {
            std::fs::write(&path, bytes).expect("write");
            Engine::open(&path, None).map(|_| ())
        };
        let fine = open(crafted(0, &[0, 0], 0.5));
        let missing = open(crafted(0, &[0, 1], 0.5));
        let heavy = open(crafted(0, &[0], 1.5));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(fine.is_ok(), "{fine:?}");
        for (opened, expected) in [(missing, "a facet names a chunk"), (heavy, "facet weight")] {
            match opened {
                Err(EngineError::Malformed { section: "index", message, .. }) => {
                    assert!(message.contains(expected), "{message}")
                }
                other => panic!("expected a malformed-index error, got {other:?}"),
            }
        }
    }
}
