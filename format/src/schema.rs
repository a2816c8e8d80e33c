//! The archived types stored in an artifact. Every field here is part of the on-disk format:
//! changing one means bumping [`crate::FORMAT_VERSION`] and adding a golden artifact.

use rkyv::{Archive, Deserialize, Serialize};

/// The hasher of every map an artifact stores: fixed (SipHash with zero keys), so that how a
/// map is filled, not the process's random seed, decides its iteration order, which is the
/// order rkyv archives it in.
pub type FixedState = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// Strings to ids (a tokenizer vocabulary, BM25 terms), as stored in an artifact. The archived
/// form is rkyv's `ArchivedHashMap`, whatever the hasher used to build it.
pub type IdMap = std::collections::HashMap<String, u32, FixedState>;

/// `map` refilled in id order into a table of exactly its size: equal contents then give an
/// equal iteration order and so equal archived bytes, however the map was first filled (read
/// from `tokenizer.json`, or back from the build cache).
pub fn canonical_ids(map: IdMap) -> IdMap {
    let mut entries: Vec<(String, u32)> = map.into_iter().collect();
    entries.sort_unstable_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = IdMap::with_capacity_and_hasher(entries.len(), FixedState::default());
    out.extend(entries);
    out
}

/// Plaintext metadata that opens every artifact, readable without the key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Header {
    /// The user's own version label (semver, build number, git sha...).
    pub artifact_version: String,
    /// 128 random bits in hex, unique per build.
    pub build_id: String,
    /// Seconds since the Unix epoch when the build finished.
    pub created_unix: u64,
    /// The compiler that wrote the file, e.g. `lorec 0.1.0`.
    pub compiler: String,
    /// Which entities were compiled in: `public` or `internal`.
    pub audience: String,
    pub embedder: EmbedderInfo,
    pub cipher: Cipher,
    /// Format v1 and v2 list the sources here, in plain sight; since v3 this is empty and the
    /// list is in the sealed [`SectionKind::Sources`] section.
    pub sources: Vec<SourceFile>,
    pub sections: Vec<Section>,
    pub counts: Counts,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EmbedderInfo {
    /// `static` (Model2Vec), `transformer` (BERT-family sentence-transformers) or `openai`
    /// (an OpenAI-compatible embeddings API).
    pub kind: String,
    /// Model name, e.g. `minishlab/potion-base-8M`.
    pub id: String,
    pub dims: u32,
    pub vocab_size: u32,
    /// SHA-256 of the model weights file the table was taken from (zero for remote models).
    pub weights_sha256: [u8; 32],
}

/// What the model section holds: everything the runtime needs to embed a question the way
/// the chunks were embedded.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum EmbedderModel {
    /// A Model2Vec static table, used in place.
    Static(ModelTable),
    /// A BERT-family sentence-transformers model, loaded by runtimes built with `minilm`.
    Transformer(TransformerParts),
    /// An OpenAI-compatible API, called by runtimes built with `openai`.
    Remote(RemoteEmbedder),
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TransformerParts {
    pub config_json: String,
    pub tokenizer_json: String,
    /// `model.safetensors` as shipped.
    pub weights: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RemoteEmbedder {
    /// `openai`.
    pub provider: String,
    pub model: String,
    pub dims: u32,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// Built with `--no-encrypt`: every section is plaintext.
    None,
    /// AES-256-GCM under a per-build key derived with HKDF-SHA256 from the user's key and `salt`.
    Aes256Gcm { key_id: [u8; 8], salt: [u8; 16] },
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SourceFile {
    /// Path relative to the knowledge-base root, `/`-separated.
    pub path: String,
    pub sha256: [u8; 32],
    pub bytes: u64,
}

/// Who answers: the persona section's content (format v6 and later, when the knowledge base
/// has a `persona.yaml`). Every field but the name is optional.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Persona {
    pub name: String,
    /// A short self-description, in the persona's own words.
    pub description: Option<String>,
    /// Voice and tone, for the LLM's system prompt.
    pub voice: Option<String>,
    /// What to do when answering.
    pub rules_do: Vec<String>,
    /// What never to do.
    pub rules_dont: Vec<String>,
    /// Said instead of an answer to an off-topic question.
    pub refusal: Option<String>,
    /// Suggested opening questions for a chat page.
    pub openers: Vec<String>,
}

/// The sources section's content (format v3 and later).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct SourceList {
    pub sources: Vec<SourceFile>,
    /// One [`withheld_digest`] per source file the audience left out entirely (not named, so
    /// that `lorec verify --sources` can still recognise the file as part of the build).
    pub withheld: Vec<[u8; 32]>,
}

/// What a [`SourceList`] keeps of a source file it does not name: a digest of its path and
/// content digest, which confirms a file someone already has but names none.
pub fn withheld_digest(path: &str, sha256: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::new()
        .chain_update(b"lore withheld source v1\0")
        .chain_update(path.as_bytes())
        .chain_update([0])
        .chain_update(sha256)
        .finalize()
        .into()
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// What embeds questions ([`EmbedderModel`]): for static models, the embedding table and
    /// tokenizer vocabulary. Public.
    Model,
    /// Chunk metadata, BM25 postings, dense vectors, calibration ([`Index`]).
    Index,
    /// Chunk texts in independently sealed blocks, opened only for returned hits.
    Texts,
    /// Since format v3: the source files ([`SourceList`]), sealed like the index, so a public
    /// artifact does not show its file names, sizes and digests to someone without the key.
    Sources,
    /// Since format v6, optional: the knowledge base's `persona.yaml` ([`Persona`]), sealed.
    Persona,
}

impl SectionKind {
    /// The number mixed into nonces and associated data for this section.
    pub fn tag(self) -> u32 {
        match self {
            SectionKind::Model => 1,
            SectionKind::Index => 2,
            SectionKind::Texts => 3,
            SectionKind::Sources => 4,
            SectionKind::Persona => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Model => "model",
            SectionKind::Index => "index",
            SectionKind::Texts => "texts",
            SectionKind::Sources => "sources",
            SectionKind::Persona => "persona",
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Section {
    pub kind: SectionKind,
    /// Absolute file offset; a multiple of [`crate::container::SECTION_ALIGN`].
    pub offset: u64,
    /// Bytes on disk, including every GCM tag.
    pub stored_len: u64,
    /// Bytes after decryption and decompression (for `Texts`, summed over its blocks).
    pub plain_len: u64,
    /// SHA-256 of the plaintext (for `Texts`, of its blocks' plaintexts concatenated in order).
    pub plain_sha256: [u8; 32],
    pub compression: Compression,
    pub encrypted: bool,
    /// For a sealed single-plaintext section: the plaintext is sealed in stripes of this many
    /// bytes (the last may be shorter), stripe `i` as unit `i`, so they open in parallel.
    /// Zero means one unit.
    pub stripe_len: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub chunks: u32,
    pub terms: u32,
    pub text_blocks: u32,
}

/// Everything the runtime needs to turn a question into a vector, without the original model
/// files: a BERT WordPiece vocabulary and one embedding row per token.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ModelTable {
    pub vocab: IdMap,
    pub unk_id: u32,
    pub continuing_prefix: String,
    pub max_input_chars_per_word: u32,
    pub lowercase: bool,
    pub strip_accents: bool,
    /// Tokens beyond this many are ignored when pooling.
    pub max_tokens: u32,
    /// Text is cut to this many characters before tokenising (`max_tokens` × the median
    /// token length, as Model2Vec does).
    pub truncate_chars: u32,
    /// L2-normalise pooled vectors.
    pub normalize: bool,
    pub dims: u32,
    /// One row of `dims` per token id, row-major.
    pub rows: TableRows,
}

/// The embedding table's rows.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum TableRows {
    F32(Vec<f32>),
    /// Symmetric int8 with one scale per row (`value × scale`): a quarter of the bytes; the
    /// quality cost is measured in EVALUATION.md.
    I8 {
        values: Vec<i8>,
        scales: Vec<f32>,
    },
}

impl TableRows {
    /// Values stored (rows × dims).
    pub fn len(&self) -> usize {
        match self {
            TableRows::F32(v) => v.len(),
            TableRows::I8 { values, .. } => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ArchivedTableRows {
    /// Values stored (rows × dims).
    pub fn len(&self) -> usize {
        match self {
            ArchivedTableRows::F32(v) => v.len(),
            ArchivedTableRows::I8 { values, .. } => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether there is one scale per row of `dims`.
    pub fn is_consistent(&self, dims: usize) -> bool {
        match self {
            ArchivedTableRows::F32(v) => v.len().is_multiple_of(dims.max(1)),
            ArchivedTableRows::I8 { values, scales } => {
                values.len().is_multiple_of(dims.max(1)) && scales.len() * dims == values.len()
            }
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Internal,
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Internal => "internal",
            Visibility::Private => "private",
        }
    }
}

/// Where a chunk lives; everything else about it is in its text block, opened only when the
/// chunk is a hit.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    /// Index into [`Header::sources`].
    pub source: u32,
    /// Text block, and the chunk's slot in that block's [`TextBlock::chunks`].
    pub block: u32,
    pub slot: u32,
}

/// One block of the `Texts` section: the full records of consecutive chunks.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TextBlock {
    pub chunks: Vec<ChunkRecord>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    /// Stable id: `source#/yaml/path`.
    pub id: String,
    /// The document the chunk came from (passages of one document share it).
    pub doc: String,
    /// JSON-pointer-style path of the entity inside its source.
    pub path: String,
    pub title: String,
    pub section: String,
    pub tags: Vec<String>,
    pub visibility: Visibility,
    pub text: String,
}

/// A sealed, possibly compressed `TextBlock` inside the `Texts` section.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Offset from the start of the `Texts` section.
    pub offset: u64,
    pub stored_len: u32,
    pub plain_len: u32,
    pub compression: Compression,
}

/// The chunk vectors, unit length before quantisation.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum DenseVectors {
    /// `chunks × dims` f32.
    F32(Vec<f32>),
    /// `chunks × dims` symmetric int8 with one scale per chunk: `v ≈ scale × q`.
    I8 { values: Vec<i8>, scales: Vec<f32> },
}

/// Most probe questions an artifact carries.
pub const MAX_PROBES: usize = 4096;

/// How strongly a question must match before it counts as on topic; see EVALUATION.md.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Embeddings of generic off-topic questions, `background_len × dims`.
    pub background: Vec<f32>,
    /// Embeddings of questions generated from this knowledge base's own chunk titles
    /// (at most [`MAX_PROBES`]), `probes × dims`: on-topic questions in a visitor's phrasing.
    pub probes: Vec<f32>,
    /// Minimum best-chunk similarity for a question to be on topic.
    pub min_similarity: f32,
    /// A question is on topic when `(1 − probe_weight) × mean of its 3 best chunk
    /// similarities + probe_weight × mean of its 3 best probe similarities − mean of its 3 best
    /// background similarities + coverage_weight × idf-weighted share of its terms found in
    /// the knowledge base` reaches this.
    pub min_margin: f32,
    pub probe_weight: f32,
    pub coverage_weight: f32,
    /// Words that show a question speaks to the persona (second-person words for persona
    /// knowledge bases; empty for document collections). Analysed as the runtime analyses a
    /// question's words: lowercased, not stemmed.
    pub address_terms: Vec<String>,
    /// What a question with none of `address_terms` adds to `min_margin`, scaled by the share
    /// of its terms the knowledge base lacks (`× (1 − coverage)`): a question not put to the
    /// persona must use the knowledge base's own words or be closer to it (format v4).
    pub unaddressed_margin: f32,
}

/// How the runtime fuses BM25 and dense scores for this artifact; see `crate::profiles`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct FusionParams {
    /// BM25 term-frequency saturation.
    pub k1: f32,
    /// BM25 length normalisation.
    pub b: f32,
    /// Weight of the dense cosine similarity.
    pub dense_weight: f32,
    /// Weight of the BM25 score (divided by the question's best BM25 score) when the best
    /// lexical match holds none of the question's idf mass...
    pub bm25_weight: f32,
    /// ...and when it holds all of it; interpolated in between. Questions whose words all
    /// appear in one chunk lean on BM25; paraphrases lean on dense similarity.
    pub bm25_weight_full: f32,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Index {
    pub chunks: Vec<ChunkRef>,
    pub blocks: Vec<BlockRef>,
    /// BM25 vocabulary: analysed term → term id.
    pub terms: IdMap,
    /// `posting_chunks[term_starts[t]..term_starts[t + 1]]` lists the chunks containing term
    /// `t`, in increasing order; `posting_tfs` holds the matching term frequencies (capped).
    pub term_starts: Vec<u32>,
    pub posting_chunks: Vec<u32>,
    pub posting_tfs: Vec<u16>,
    /// Analysed length of each chunk, in terms.
    pub chunk_lens: Vec<u32>,
    pub avg_chunk_len: f32,
    pub dims: u32,
    pub vectors: DenseVectors,
    /// More vectors per entity (format v5): row `f` of `facet_vectors` embeds one field of
    /// chunk `facet_chunks[f]` under the chunk's first line. Rows of one chunk are adjacent
    /// and chunks appear in increasing order (readers do not rely on it). A chunk's dense similarity is the best of its
    /// own row and its facet rows.
    pub facet_chunks: Vec<u32>,
    pub facet_vectors: DenseVectors,
    /// How far a chunk's dense similarity moves from its own row's towards the best of its
    /// facet rows: `(1 − w) × own + w × max(own, best facet)`.
    pub facet_weight: f32,
    pub calibration: Calibration,
    pub fusion: FusionParams,
}

/// The index as format version 4 stored it: no facet vectors. Read through [`upgrade_index`].
pub mod v4 {
    use rkyv::{Archive, Deserialize, Serialize};

    use super::{BlockRef, Calibration, ChunkRef, DenseVectors, FusionParams, IdMap};

    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Index {
        pub chunks: Vec<ChunkRef>,
        pub blocks: Vec<BlockRef>,
        pub terms: IdMap,
        pub term_starts: Vec<u32>,
        pub posting_chunks: Vec<u32>,
        pub posting_tfs: Vec<u16>,
        pub chunk_lens: Vec<u32>,
        pub avg_chunk_len: f32,
        pub dims: u32,
        pub vectors: DenseVectors,
        pub calibration: Calibration,
        pub fusion: FusionParams,
    }

    impl From<Index> for super::Index {
        /// A v4 index reads as a v5 one without facets: one vector per chunk, as it was built.
        fn from(i: Index) -> super::Index {
            let facet_vectors = match &i.vectors {
                DenseVectors::F32(_) => DenseVectors::F32(Vec::new()),
                DenseVectors::I8 { .. } => DenseVectors::I8 { values: Vec::new(), scales: Vec::new() },
            };
            super::Index {
                chunks: i.chunks,
                blocks: i.blocks,
                terms: i.terms,
                term_starts: i.term_starts,
                posting_chunks: i.posting_chunks,
                posting_tfs: i.posting_tfs,
                chunk_lens: i.chunk_lens,
                avg_chunk_len: i.avg_chunk_len,
                dims: i.dims,
                vectors: i.vectors,
                facet_chunks: Vec::new(),
                facet_vectors,
                facet_weight: 0.0,
                calibration: i.calibration,
                fusion: i.fusion,
            }
        }
    }
}

/// The index as format versions 1 to 3 stored it: a calibration without the addressing terms.
/// Read through [`upgrade_index`].
pub mod v3 {
    use rkyv::{Archive, Deserialize, Serialize};

    use super::{BlockRef, ChunkRef, DenseVectors, FusionParams, IdMap};

    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Calibration {
        pub background: Vec<f32>,
        pub probes: Vec<f32>,
        pub min_similarity: f32,
        pub min_margin: f32,
        pub probe_weight: f32,
        pub coverage_weight: f32,
    }

    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Index {
        pub chunks: Vec<ChunkRef>,
        pub blocks: Vec<BlockRef>,
        pub terms: IdMap,
        pub term_starts: Vec<u32>,
        pub posting_chunks: Vec<u32>,
        pub posting_tfs: Vec<u16>,
        pub chunk_lens: Vec<u32>,
        pub avg_chunk_len: f32,
        pub dims: u32,
        pub vectors: DenseVectors,
        pub calibration: Calibration,
        pub fusion: FusionParams,
    }

    impl From<Index> for super::v4::Index {
        /// A v3 index reads as a v4 one whose topic rule has no addressing term.
        fn from(i: Index) -> super::v4::Index {
            let c = i.calibration;
            super::v4::Index {
                chunks: i.chunks,
                blocks: i.blocks,
                terms: i.terms,
                term_starts: i.term_starts,
                posting_chunks: i.posting_chunks,
                posting_tfs: i.posting_tfs,
                chunk_lens: i.chunk_lens,
                avg_chunk_len: i.avg_chunk_len,
                dims: i.dims,
                vectors: i.vectors,
                calibration: super::Calibration {
                    background: c.background,
                    probes: c.probes,
                    min_similarity: c.min_similarity,
                    min_margin: c.min_margin,
                    probe_weight: c.probe_weight,
                    coverage_weight: c.coverage_weight,
                    address_terms: Vec::new(),
                    unaddressed_margin: 0.0,
                },
                fusion: i.fusion,
            }
        }
    }
}

/// The decrypted index section of an artifact written as `format_version`, in the current
/// layout: v5 bytes as they are; older bytes validated, converted and serialised again (a
/// one-time cost at open, for old artifacts only).
pub fn upgrade_index(
    bytes: crate::container::SectionData,
    format_version: u32,
) -> Result<crate::container::SectionData, String> {
    use rkyv::rancor;
    if format_version >= 5 {
        return Ok(bytes);
    }
    let v4: v4::Index = if format_version == 4 {
        let old = rkyv::access::<v4::ArchivedIndex, rancor::Error>(&bytes)
            .map_err(|_| "its bytes are not a valid version 4 index".to_string())?;
        rkyv::deserialize::<v4::Index, rancor::Error>(old)
            .map_err(|e| format!("cannot read the version 4 index: {e}"))?
    } else {
        let old = rkyv::access::<v3::ArchivedIndex, rancor::Error>(&bytes)
            .map_err(|_| "its bytes are not a valid version 3 index".to_string())?;
        rkyv::deserialize::<v3::Index, rancor::Error>(old)
            .map_err(|e| format!("cannot read the version 3 index: {e}"))?
            .into()
    };
    let new: Index = v4.into();
    rkyv::to_bytes::<rancor::Error>(&new).map_err(|e| format!("cannot convert the version {format_version} index: {e}"))
}

/// Types as format version 1 stored them, kept so version 1 artifacts stay readable. Only the
/// model section changed since: v1 tables held f32 rows only.
pub mod v1 {
    use rkyv::{Archive, Deserialize, Serialize};

    use super::{RemoteEmbedder, TransformerParts};

    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub enum EmbedderModel {
        Static(ModelTable),
        Transformer(TransformerParts),
        Remote(RemoteEmbedder),
    }

    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct ModelTable {
        pub vocab: std::collections::HashMap<String, u32>,
        pub unk_id: u32,
        pub continuing_prefix: String,
        pub max_input_chars_per_word: u32,
        pub lowercase: bool,
        pub strip_accents: bool,
        pub max_tokens: u32,
        pub truncate_chars: u32,
        pub normalize: bool,
        pub dims: u32,
        /// `vocab_size × dims` row-major f32.
        pub embeddings: Vec<f32>,
    }
}
