//! Hybrid retrieval: BM25 over chunk text plus dense cosine, fused by weighted sum.
//!
//! The fusion weights come from the artifact (`format::profiles` sets them at build time);
//! EVALUATION.md records how each value was chosen.

use super::mapped::native_f32;
use super::scoring::{score_rows_f32, score_rows_i8};
use format::ArchivedDenseVectors;
use format::ArchivedIndex;
use format::analyze::Analyzer;

/// The fusion parameters of one query: the artifact's, or an override for tuning runs.
pub type Params = format::FusionParams;

/// Which retrievers a query uses; `Hybrid` unless a client asks otherwise (evaluation
/// compares all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hybrid,
    Bm25,
    Dense,
}

/// `params` with one retriever switched off, as `mode` asks.
pub fn for_mode(params: Params, mode: Mode) -> Params {
    match mode {
        Mode::Hybrid => params,
        Mode::Bm25 => Params { dense_weight: 0.0, bm25_weight: 1.0, bm25_weight_full: 1.0, ..params },
        Mode::Dense => Params { dense_weight: 1.0, bm25_weight: 0.0, bm25_weight_full: 0.0, ..params },
    }
}

/// The override in `LORE_RETRIEVAL_PARAMS` (`k1,b,dense_weight,bm25_weight,bm25_weight_full`),
/// which exists for tuning runs on training data.
pub fn params_from_env() -> Result<Option<Params>, String> {
    let Ok(text) = std::env::var("LORE_RETRIEVAL_PARAMS") else { return Ok(None) };
    let v: Vec<f32> = text
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("LORE_RETRIEVAL_PARAMS: {e}"))?;
    match v.as_slice() {
        [k1, b, dense_weight, bm25_weight, bm25_weight_full] => Ok(Some(Params {
            k1: *k1,
            b: *b,
            dense_weight: *dense_weight,
            bm25_weight: *bm25_weight,
            bm25_weight_full: *bm25_weight_full,
        })),
        _ => Err("LORE_RETRIEVAL_PARAMS takes five numbers: k1,b,dense_weight,bm25_weight,bm25_weight_full".into()),
    }
}

/// One scored chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub chunk: u32,
    pub score: f32,
}

/// Ranked results plus the signals topic detection needs.
#[derive(Debug, Clone)]
pub struct Ranking {
    pub hits: Vec<Scored>,
    /// Best dense similarity over all chunks.
    pub top_dense: f32,
    /// Best dense similarity over the artifact's background (off-topic) questions.
    pub top_background: f32,
    /// Mean of the three best chunk similarities.
    pub top3_dense: f32,
    /// Mean of the three best background similarities.
    pub top3_background: f32,
    /// Mean of the three best similarities to the probe questions (questions this knowledge
    /// base answers).
    pub top3_probe: f32,
    /// Best similarity to a probe question.
    pub top_probe: f32,
    /// Share of the question's analysed terms that occur in the knowledge base, weighted by idf.
    pub term_coverage: f32,
    /// Best raw BM25 score.
    pub bm25_max: f32,
}

fn mean_top3(values: impl Iterator<Item = f32>) -> f32 {
    let mut best = [f32::MIN; 3];
    let mut n = 0;
    for v in values {
        n += 1;
        if v > best[2] {
            best[2] = v;
            best.sort_by(|a, b| b.total_cmp(a));
        }
    }
    let k = n.min(3);
    if k == 0 { 0.0 } else { best[..k].iter().sum::<f32>() / k as f32 }
}

/// Similarity of `qvec` to every row of `vectors`, appended to `out`.
fn score_table(vectors: &ArchivedDenseVectors, dims: usize, qvec: &[f32], out: &mut Vec<f32>) {
    match vectors {
        ArchivedDenseVectors::F32(v) => score_rows_f32(native_f32(v), dims, qvec, out),
        ArchivedDenseVectors::I8 { values, scales } => {
            score_rows_i8(values.as_slice(), native_f32(scales), dims, qvec, out)
        }
    }
}

/// Dense similarity of `qvec` to every chunk, read in place from the index: each chunk's own
/// vector (`whole`), and the best of that and its facets' (`best`, format v5), which ranks.
fn dense_scores(index: &ArchivedIndex, qvec: &[f32], whole: &mut Vec<f32>, best: &mut Vec<f32>) {
    let n = index.chunks.len();
    let dims = index.dims.to_native() as usize;
    if dims == 0 || dims != qvec.len() {
        whole.resize(n, 0.0);
        best.resize(n, 0.0);
        return;
    }
    score_table(&index.vectors, dims, qvec, whole);
    whole.resize(n, 0.0);
    best.extend_from_slice(whole);
    let w = index.facet_weight.to_native();
    if index.facet_chunks.is_empty() || w == 0.0 {
        return;
    }
    let mut facets = Vec::with_capacity(index.facet_chunks.len());
    score_table(&index.facet_vectors, dims, qvec, &mut facets);
    // The engine checked at open that every facet names an existing chunk.
    for (chunk, score) in index.facet_chunks.iter().zip(facets) {
        if let Some(b) = best.get_mut(chunk.to_native() as usize) {
            *b = b.max(score);
        }
    }
    for (b, w0) in best.iter_mut().zip(whole.iter()) {
        *b = (1.0 - w) * w0 + w * *b;
    }
}

/// The `k` best (score, chunk) pairs, best first; ties go to the lower chunk number. One pass
/// with a min-heap of size `k`, so ranking costs O(n log k), not a sort of every chunk.
fn top_k(k: usize, scores: impl Iterator<Item = f32>) -> Vec<(f32, u32)> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    #[derive(PartialEq)]
    struct Entry(f32, u32);
    impl Eq for Entry {}
    impl PartialOrd for Entry {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Entry {
        // Greater = better: higher score, then lower chunk number.
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
        }
    }
    if k == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::with_capacity(k + 1);
    for (i, score) in scores.enumerate() {
        let entry = Entry(score, i as u32);
        if heap.len() < k {
            heap.push(Reverse(entry));
        } else if heap.peek().is_some_and(|worst| entry > worst.0) {
            heap.pop();
            heap.push(Reverse(entry));
        }
    }
    let mut best: Vec<(f32, u32)> = heap.into_iter().map(|Reverse(e)| (e.0, e.1)).collect();
    best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    best
}

/// Score every chunk and keep the best `k`.
pub fn rank(
    index: &ArchivedIndex,
    analyzer: &Analyzer,
    question: &str,
    qvec: &[f32],
    k: usize,
    params: &Params,
) -> Ranking {
    let n = index.chunks.len();
    let dims = index.dims.to_native() as usize;
    let (mut whole, mut dense) = (Vec::with_capacity(n), Vec::with_capacity(n));
    dense_scores(index, qvec, &mut whole, &mut dense);
    // Topic detection reads whole-chunk similarities, the scale its thresholds were set on.
    let top_dense = if n == 0 { 0.0 } else { whole.iter().copied().fold(f32::MIN, f32::max) };

    let Bm25 { scores: bm25, coverage: lexical, term_coverage } = bm25_scores(index, analyzer, question, params);
    let bm25_max = bm25.iter().copied().fold(0.0f32, f32::max);
    let bm25_weight = params.bm25_weight + (params.bm25_weight_full - params.bm25_weight) * lexical;
    let inv_max = if bm25_max > 0.0 { 1.0 / bm25_max } else { 0.0 };
    let hits = top_k(k.min(n), (0..n).map(|i| params.dense_weight * dense[i] + bm25_weight * bm25[i] * inv_max))
        .into_iter()
        .map(|(score, c)| Scored { chunk: c, score })
        .collect();

    // Background and probe questions go through the same SIMD row loop as the chunks.
    let similarities = |rows: &[f32]| {
        let mut out = Vec::new();
        if dims == qvec.len() && dims > 0 {
            score_rows_f32(rows, dims, qvec, &mut out);
        }
        out
    };
    let bg = similarities(native_f32(&index.calibration.background));
    let top_background = bg.iter().copied().fold(0.0f32, f32::max);
    let top3_dense = mean_top3(whole.iter().copied());
    let top3_background = mean_top3(bg.iter().copied());
    let probes = similarities(native_f32(&index.calibration.probes));
    let top_probe = probes.iter().copied().fold(0.0f32, f32::max);
    let top3_probe = mean_top3(probes.into_iter());
    Ranking {
        hits,
        top_dense,
        top_background,
        top3_dense,
        top3_background,
        top3_probe,
        top_probe,
        term_coverage,
        bm25_max,
    }
}

struct Bm25 {
    /// One score per chunk (zero where no question term occurs).
    scores: Vec<f32>,
    /// The largest share of the question's idf mass that one chunk contains.
    coverage: f32,
    /// The share of the question's idf mass (every occurrence) found anywhere in the
    /// knowledge base, for topic detection.
    term_coverage: f32,
}

fn bm25_scores(index: &ArchivedIndex, analyzer: &Analyzer, question: &str, params: &Params) -> Bm25 {
    let n_chunks = index.chunks.len();
    let mut scores = vec![0f32; n_chunks];
    let mut matched = vec![0f32; n_chunks];
    let mut total_idf = 0.0f32;
    let n = n_chunks as f32;
    let avg = index.avg_chunk_len.to_native().max(1.0);
    let mut seen: Vec<u32> = Vec::new();
    let (mut found_anywhere, mut total_anywhere) = (0.0f32, 0.0f32);
    // One pass over the question serves both BM25 and the topic signal.
    analyzer.for_each_term(question, |term| {
        let id = index.terms.get(term).map(|t| t.to_native());
        let df = id
            .and_then(|id| {
                let id = id as usize;
                Some(index.term_starts.get(id + 1)?.to_native() - index.term_starts.get(id)?.to_native())
            })
            .unwrap_or(0) as f32;
        // An unseen term weighs as much as the rarest possible one.
        let weight = (1.0 + (n - df.max(1.0) + 0.5) / (df.max(1.0) + 0.5)).ln();
        total_anywhere += weight;
        if df > 0.0 {
            found_anywhere += weight;
        }
        let Some(id) = id else {
            // A word the knowledge base never uses weighs like the rarest one.
            total_idf += (1.0 + (n - 1.0 + 0.5) / 1.5).ln();
            return;
        };
        if seen.contains(&id) {
            return;
        }
        seen.push(id);
        let (Some(start), Some(end)) = (index.term_starts.get(id as usize), index.term_starts.get(id as usize + 1))
        else {
            return;
        };
        let range = start.to_native() as usize..end.to_native() as usize;
        let (Some(chunks), Some(tfs)) = (index.posting_chunks.get(range.clone()), index.posting_tfs.get(range)) else {
            return;
        };
        let df = chunks.len() as f32;
        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        total_idf += idf;
        let k1 = params.k1;
        for (chunk, tf) in chunks.iter().zip(tfs) {
            let c = chunk.to_native() as usize;
            let tf = f32::from(tf.to_native());
            let len = index.chunk_lens.get(c).map_or(avg, |l| l.to_native() as f32);
            if let (Some(score), Some(m)) = (scores.get_mut(c), matched.get_mut(c)) {
                *score += idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - params.b + params.b * len / avg));
                *m += idf;
            }
        }
    });
    let best = matched.iter().copied().fold(0.0f32, f32::max);
    Bm25 {
        scores,
        coverage: if total_idf > 0.0 { best / total_idf } else { 0.0 },
        term_coverage: if total_anywhere > 0.0 { found_anywhere / total_anywhere } else { 0.0 },
    }
}

/// A question is on topic when something in the knowledge base is related at all, and it is
/// closer to this knowledge base than to the artifact's generic background questions, with
/// lexical coverage counted in. Thresholds come from the artifact; EVALUATION.md has the method.
pub fn on_topic(index: &ArchivedIndex, ranking: &Ranking, addressed: bool) -> bool {
    let c = &index.calibration;
    let pw = c.probe_weight.to_native();
    let closeness = (1.0 - pw) * ranking.top3_dense + pw * ranking.top3_probe;
    let margin = closeness - ranking.top3_background + c.coverage_weight.to_native() * ranking.term_coverage;
    // A question not put to the persona must use the knowledge base's own words, or be that
    // much closer to it: "Who is the CEO of Microsoft?" is neither; "night baker" is the first.
    let unaddressed = if addressed { 0.0 } else { c.unaddressed_margin.to_native() * (1.0 - ranking.term_coverage) };
    let needed = c.min_margin.to_native() + unaddressed;
    ranking.top_dense >= c.min_similarity.to_native() && margin >= needed
}

/// Whether `question` has one of the artifact's addressing terms (for a persona, a
/// second-person word or a word of the persona's name) as a whole word, ignoring case and a
/// possessive `'s`; curly apostrophes count as straight.
pub fn addressed(index: &ArchivedIndex, question: &str) -> bool {
    has_any_word(question, &index.calibration.address_terms)
}

/// Whether `question` has one of `terms` (lowercase) as a whole word, ignoring case, a
/// possessive `'s`, and curly versus straight apostrophes; without allocating per word.
fn has_any_word<T: AsRef<str>>(question: &str, terms: &[T]) -> bool {
    if terms.is_empty() {
        return false;
    }
    question
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '\u{2019}'))
        .filter(|w| !w.is_empty() && w.len() <= 32)
        .any(|w| {
            // "Richard's" speaks of Richard.
            let w = ["'s", "\u{2019}s", "'S", "\u{2019}S"].iter().find_map(|s| w.strip_suffix(s)).unwrap_or(w);
            terms.iter().any(|t| {
                let lowered = w.chars().flat_map(char::to_lowercase);
                lowered.map(|c| if c == '\u{2019}' { '\'' } else { c }).eq(t.as_ref().chars())
            })
        })
}

#[cfg(test)]
mod tests {
    use super::top_k;

    /// Two chunks along the axes; chunk 1 has a facet along the diagonal-ish `(0.8, 0.6)`.
    fn index_with_facets(facet_weight: f32) -> rkyv::util::AlignedVec {
        use format::{Calibration, DenseVectors, Index};
        let index = Index {
            chunks: vec![format::ChunkRef { source: 0, block: 0, slot: 0 }; 2],
            blocks: Vec::new(),
            terms: Default::default(),
            term_starts: vec![0],
            posting_chunks: Vec::new(),
            posting_tfs: Vec::new(),
            chunk_lens: vec![1, 1],
            avg_chunk_len: 1.0,
            dims: 2,
            vectors: DenseVectors::F32(vec![1.0, 0.0, 0.0, 1.0]),
            facet_chunks: vec![1, 1],
            facet_vectors: DenseVectors::F32(vec![0.8, 0.6, -1.0, 0.0]),
            facet_weight,
            calibration: Calibration {
                background: Vec::new(),
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
        rkyv::to_bytes::<rkyv::rancor::Error>(&index).expect("serialises")
    }

    #[test]
    fn a_chunk_ranks_by_its_own_vector_moved_towards_its_best_facet() {
        let q = [1.0f32, 0.0];
        for (weight, expected) in [(0.0, 0.0), (0.5, 0.4), (1.0, 0.8)] {
            let bytes = index_with_facets(weight);
            let index = rkyv::access::<format::ArchivedIndex, rkyv::rancor::Error>(&bytes).expect("valid");
            let (mut whole, mut best) = (Vec::new(), Vec::new());
            super::dense_scores(index, &q, &mut whole, &mut best);
            assert_eq!(whole, [1.0, 0.0], "topic detection reads the chunks' own vectors");
            assert!((best[0] - 1.0).abs() < 1e-6, "a chunk without facets keeps its own score");
            assert!((best[1] - expected).abs() < 1e-6, "weight {weight}: {best:?}");
        }
    }

    #[test]
    fn a_question_is_addressed_by_whole_words_in_any_case_and_possessive() {
        let terms = ["you", "you're", "richard"];
        let addressed = |q: &str| super::has_any_word(q, &terms);
        assert!(addressed("Where did YOU study?"));
        assert!(addressed("You\u{2019}re a robotics engineer?"));
        assert!(addressed("What is Richard\u{2019}s job?"));
        assert!(!addressed("Who founded Yours Truly Inc? young people"));
        assert!(!addressed("Explain Kubernetes pods"));
    }

    #[test]
    fn top_k_keeps_the_best_in_order_with_stable_ties() {
        let scores = [0.1, 0.9, 0.5, 0.9, -1.0, 0.7];
        assert_eq!(top_k(3, scores.into_iter()), vec![(0.9, 1), (0.9, 3), (0.7, 5)]);
        assert_eq!(top_k(10, scores.into_iter()).len(), 6);
        assert!(top_k(0, scores.into_iter()).is_empty());
    }
}
