//! Tuning stored in the index: the fusion profile a knowledge base gets, and the topic
//! detection calibrated with generic background questions and probes of its own.

use format::Calibration;

use crate::embedder::{Embedder, EmbedderError, EmbeddingCache};

/// The generic questions that calibrate topic detection; see EVALUATION.md.
const BACKGROUND_QUESTIONS: &str = include_str!("../background_questions.txt");

/// Questions any visitor may ask a persona about themselves: probes for persona knowledge
/// bases, so "what are your hobbies?" is on topic even where no chunk title says "hobbies".
const PERSONA_QUESTIONS: &str = include_str!("../persona_questions.txt");

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
pub(super) fn calibrate(
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
