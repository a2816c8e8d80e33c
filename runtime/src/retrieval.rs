//! Hybrid retrieval: BM25 over chunk text plus dense cosine, fused by weighted sum.
//!
//! The fusion weights come from the artifact (`format::profiles` sets them at build time);
//! EVALUATION.md records how each value was chosen.

use std::collections::HashMap;

use format::ArchivedIndex;
use format::analyze::Analyzer;
use format::embed::dot;

use crate::mapped::native_f32;

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
    pub dense: f32,
    pub bm25: f32,
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
    let vectors = native_f32(&index.vectors);
    let mut dense = Vec::with_capacity(n);
    let mut top_dense = f32::MIN;
    if dims == qvec.len() {
        for row in vectors.chunks_exact(dims) {
            let s = dot(row, qvec);
            top_dense = top_dense.max(s);
            dense.push(s);
        }
    }
    dense.resize(n, 0.0);
    if n == 0 {
        top_dense = 0.0;
    }

    let Bm25 { scores: bm25, coverage: lexical } = bm25_scores(index, analyzer, question, params);
    let bm25_max = bm25.values().copied().fold(0.0f32, f32::max);
    let bm25_weight = params.bm25_weight + (params.bm25_weight_full - params.bm25_weight) * lexical;
    let mut scored: Vec<Scored> = (0..n)
        .map(|i| {
            let raw = bm25.get(&(i as u32)).copied().unwrap_or(0.0);
            let norm = if bm25_max > 0.0 { raw / bm25_max } else { 0.0 };
            Scored {
                chunk: i as u32,
                score: params.dense_weight * dense[i] + bm25_weight * norm,
                dense: dense[i],
                bm25: raw,
            }
        })
        .collect();
    let k = k.min(n);
    if k > 0 && k < n {
        scored.select_nth_unstable_by(k - 1, |a, b| b.score.total_cmp(&a.score).then(a.chunk.cmp(&b.chunk)));
        scored.truncate(k);
    }
    scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.chunk.cmp(&b.chunk)));
    scored.truncate(k);
    let background = native_f32(&index.calibration.background);
    let bg: Vec<f32> = if dims == qvec.len() && dims > 0 {
        background.chunks_exact(dims).map(|row| dot(row, qvec)).collect()
    } else {
        Vec::new()
    };
    let top_background = bg.iter().copied().fold(0.0f32, f32::max);
    let top3_dense = mean_top3(dense.iter().copied());
    let top3_background = mean_top3(bg.iter().copied());
    let term_coverage = coverage(index, analyzer, question);
    Ranking { hits: scored, top_dense, top_background, top3_dense, top3_background, term_coverage, bm25_max }
}

fn coverage(index: &ArchivedIndex, analyzer: &Analyzer, question: &str) -> f32 {
    let n = index.chunks.len() as f32;
    let (mut found, mut total) = (0.0f32, 0.0f32);
    analyzer.for_each_term(question, |term| {
        let df = index
            .terms
            .get(term)
            .and_then(|id| {
                let id = id.to_native() as usize;
                Some(index.term_starts.get(id + 1)?.to_native() - index.term_starts.get(id)?.to_native())
            })
            .unwrap_or(0) as f32;
        // An unseen term weighs as much as the rarest possible one.
        let idf = (1.0 + (n - df.max(1.0) + 0.5) / (df.max(1.0) + 0.5)).ln();
        total += idf;
        if df > 0.0 {
            found += idf;
        }
    });
    if total > 0.0 { found / total } else { 0.0 }
}

struct Bm25 {
    scores: HashMap<u32, f32>,
    /// The largest share of the question's idf mass that one chunk contains.
    coverage: f32,
}

fn bm25_scores(index: &ArchivedIndex, analyzer: &Analyzer, question: &str, params: &Params) -> Bm25 {
    let mut scores = HashMap::new();
    let mut matched: HashMap<u32, f32> = HashMap::new();
    let mut total_idf = 0.0f32;
    let n = index.chunks.len() as f32;
    let avg = index.avg_chunk_len.to_native().max(1.0);
    let mut seen: Vec<u32> = Vec::new();
    analyzer.for_each_term(question, |term| {
        let Some(id) = index.terms.get(term).map(|t| t.to_native()) else {
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
        let Some(postings) = index.postings.get(start.to_native() as usize..end.to_native() as usize) else { return };
        let df = postings.len() as f32;
        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        total_idf += idf;
        for p in postings {
            let chunk = p.chunk.to_native();
            let tf = p.tf.to_native() as f32;
            let len = index.chunk_lens.get(chunk as usize).map_or(avg, |l| l.to_native() as f32);
            let s = idf * tf * (params.k1 + 1.0) / (tf + params.k1 * (1.0 - params.b + params.b * len / avg));
            *scores.entry(chunk).or_insert(0.0) += s;
            *matched.entry(chunk).or_insert(0.0) += idf;
        }
    });
    let best = matched.values().copied().fold(0.0f32, f32::max);
    Bm25 { scores, coverage: if total_idf > 0.0 { best / total_idf } else { 0.0 } }
}

/// A question is on topic when something in the knowledge base is related at all, and it is
/// closer to this knowledge base than to the artifact's generic background questions, with
/// lexical coverage counted in. Thresholds come from the artifact; EVALUATION.md has the method.
pub fn on_topic(index: &ArchivedIndex, ranking: &Ranking) -> bool {
    let c = &index.calibration;
    let margin = ranking.top3_dense - ranking.top3_background + c.coverage_weight.to_native() * ranking.term_coverage;
    ranking.top_dense >= c.min_similarity.to_native() && margin >= c.min_margin.to_native()
}
