//! The build pipeline: check every source, embed what changed, build the indexes, calibrate
//! topic detection, and lay out the artifact.
//!
//! [`check`] is its own step (the CLI reports its diagnostics before building); [`build`] then
//! runs the stages in order, one module each: `units` embeds and compiles the files that
//! changed, `calibrate` picks the fusion profile and calibrates topic detection, `merge` joins
//! the units into one index, and `sections` serialises and hashes the sections and fixes the
//! header.

mod calibrate;
mod check;
mod merge;
mod sections;
mod units;

use std::path::Path;

use format::seal::Key;
use format::{Counts, Visibility};

pub use self::calibrate::{
    ADDRESS_TERMS, FACET_WEIGHT, TOPIC_CONTEXTUAL, TOPIC_CONTEXTUAL_DOCUMENTS, TOPIC_MIN_SIMILARITY, TOPIC_STATIC,
    TOPIC_STATIC_DOCUMENTS, TopicRule, auto_profile,
};
pub use self::check::{Checked, Compiled, check};
use crate::embedder::{Embedder, EmbedderError, EmbeddingCache};
use crate::unit::UnitCache;
pub use crate::unit::VectorFormat;

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

/// Turn a clean check into artifact bytes. The caller has already refused checks with errors.
pub fn build(checked: &Checked, opts: &BuildOptions<'_>) -> Result<Built, EmbedderError> {
    let embedder = opts.embedder;
    let dims = embedder.dims();
    let mut vectors_cache = EmbeddingCache::open(opts.embedding_cache, &embedder.fingerprint(), dims);
    let mut phase = Phase::start();
    let fresh_units = units::compile_changed(checked, opts, &mut vectors_cache)?;
    phase.done("compile units");
    let units = units::in_source_order(checked, &fresh_units);
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
    let calibration = calibrate::calibrate(embedder, &mut vectors_cache, &titles, &names, persona)?;
    vectors_cache.save();
    phase.done("calibration");
    let encrypt = opts.key.is_some();
    let source_list = sections::source_list(checked, &units);
    let facet_weight = if opts.facets { FACET_WEIGHT } else { 0.0 };
    let merged = merge::merge(&units, opts.vectors, dims, encrypt, calibration, fusion, facet_weight);
    phase.done("merge");
    let index = &merged.index;
    let chunks = index.chunks.len();
    let counts =
        Counts { chunks: chunks as u32, terms: index.terms.len() as u32, text_blocks: index.blocks.len() as u32 };
    let plans = sections::plans(merged, &source_list, checked.persona.as_ref(), embedder, encrypt);
    phase.done("hash");
    let header = sections::header(&plans, opts, counts);
    let container = format::Container::layout(header, plans);
    phase.done("layout");
    Ok(Built { container, chunks, embedding_cache_hits: vectors_cache.hits })
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
