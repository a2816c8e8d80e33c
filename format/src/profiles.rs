//! Retrieval profiles: the one place fusion weights are set. lorec writes the chosen profile
//! into each artifact, so the runtime ranks the way the artifact was tuned for.
//! EVALUATION.md records how each number was chosen.

use crate::schema::FusionParams;

/// Persona knowledge bases (entities from YAML and JSON Resume) with a static embedder.
/// Paraphrased questions share few words with their answers, so dense similarity leads and
/// BM25 breaks ties. Chosen on the persona development sets (`eval/persona/`).
pub const PERSONA: FusionParams =
    FusionParams { k1: 1.2, b: 0.75, dense_weight: 1.0, bm25_weight: 0.15, bm25_weight_full: 0.15 };

/// Persona knowledge bases with a contextual embedder (minilm, openai), which lorec picks in
/// place of [`PERSONA`]: BM25 counts only as far as one chunk holds the question's words.
/// Chosen on the v2 persona dev split with all-MiniLM-L6-v2 and facets (EVALUATION.md).
pub const PERSONA_CONTEXTUAL: FusionParams =
    FusionParams { k1: 1.2, b: 0.75, dense_weight: 1.0, bm25_weight: 0.0, bm25_weight_full: 0.15 };

/// Document collections (JSON Lines, Markdown). Questions reuse the documents' vocabulary,
/// so BM25 weighs more the more of the question one passage covers. Tuned on the SciFact
/// train split only (`cargo xtask eval scifact --tune`).
pub const DOCUMENTS: FusionParams =
    FusionParams { k1: 1.2, b: 0.4, dense_weight: 1.0, bm25_weight: 0.3, bm25_weight_full: 2.0 };

/// Profile names as the CLI spells them.
pub fn by_name(name: &str) -> Option<FusionParams> {
    match name {
        "persona" => Some(PERSONA),
        "documents" => Some(DOCUMENTS),
        _ => None,
    }
}
