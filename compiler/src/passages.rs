//! Splitting long chunk texts into overlapping passages at sentence boundaries, so that each
//! passage stays within what the embedder pools well and BM25 length normalisation stays fair.

use crate::chunk::Chunk;

/// A chunk's text is split once it is longer than this many bytes.
pub const MAX_PASSAGE_BYTES: usize = 1800;
/// Sentences repeated at the start of the next passage.
pub const OVERLAP_SENTENCES: usize = 1;

/// Replace every over-long chunk by passages `…/passages/N`. Each passage keeps the chunk's
/// `doc`, title and metadata, and starts with the title line so it reads on its own.
pub fn split_long(chunks: Vec<Chunk>) -> Vec<Chunk> {
    let mut out = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        if chunk.text.len() <= MAX_PASSAGE_BYTES {
            out.push(chunk);
            continue;
        }
        let (head, body) = match chunk.text.split_once('\n') {
            Some((h, b)) => (h.to_string(), b.to_string()),
            None => (chunk.title.clone(), chunk.text.clone()),
        };
        let sentences = sentences(&body);
        let budget = MAX_PASSAGE_BYTES.saturating_sub(head.len() + 1).max(200);
        let mut start = 0;
        let mut n = 0;
        while start < sentences.len() {
            let mut end = start;
            let mut len = 0;
            while end < sentences.len() && (end == start || len + sentences[end].len() <= budget) {
                len += sentences[end].len();
                end += 1;
            }
            let text = format!("{head}\n{}", sentences[start..end].concat().trim());
            out.push(Chunk {
                id: format!("{}/passages/{n}", chunk.id),
                path: format!("{}/passages/{n}", chunk.path.trim_end_matches('/')),
                text,
                // A passage is prose already: one vector each.
                facets: Vec::new(),
                ..chunk.clone()
            });
            n += 1;
            if end >= sentences.len() {
                break;
            }
            start = if end - start > OVERLAP_SENTENCES { end - OVERLAP_SENTENCES } else { end };
        }
    }
    out
}

/// Sentences with their trailing whitespace. A sentence ends at `.`, `!` or `?` followed by
/// whitespace and an uppercase letter, digit or opening bracket, or at a blank line; this
/// keeps "e.g. the" and "3.5 mg" together.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let boundary = if matches!(c, '.' | '!' | '?') {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | '”' | '’') {
                j += 1;
            }
            let mut k = j;
            while k < chars.len() && chars[k].1.is_whitespace() {
                k += 1;
            }
            (k > j
                && (k == chars.len() || chars[k].1.is_uppercase() || chars[k].1.is_ascii_digit() || chars[k].1 == '('))
                .then_some(k)
        } else if c == '\n' && chars.get(i + 1).is_some_and(|n| n.1 == '\n') {
            Some(i + 2)
        } else {
            None
        };
        if let Some(k) = boundary {
            let end = chars.get(k).map_or(text.len(), |c| c.0);
            if end > start {
                out.push(&text[start..end]);
            }
            start = end;
            i = k;
            continue;
        }
        let _ = at;
        i += 1;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Pos;
    use format::Visibility;

    #[test]
    fn sentence_boundaries() {
        let s = sentences("Dose was 3.5 mg, e.g. daily. It worked! Did it? (Yes.) 12 cases.");
        assert_eq!(s, ["Dose was 3.5 mg, e.g. daily. ", "It worked! ", "Did it? ", "(Yes.) ", "12 cases."]);
    }

    #[test]
    fn long_texts_become_overlapping_passages() {
        let body: String = (0..60).map(|i| format!("Sentence number {i} talks about tides and lamps. ")).collect();
        let chunk = Chunk {
            id: "c.jsonl#/d1".into(),
            doc: "d1".into(),
            path: "/d1".into(),
            title: "T".into(),
            section: String::new(),
            tags: vec![],
            visibility: Visibility::Public,
            text: format!("T\n{body}"),
            facets: Vec::new(),
            pos: Pos::default(),
        };
        let parts = split_long(vec![chunk]);
        assert!(parts.len() >= 2);
        assert_eq!(parts[1].id, "c.jsonl#/d1/passages/1");
        assert!(parts.iter().all(|p| p.doc == "d1" && p.text.starts_with("T\n") && p.text.len() <= MAX_PASSAGE_BYTES));
        // Consecutive passages share a sentence.
        let body = parts[0].text.split_once('\n').expect("title line").1;
        let last_of_first = sentences(body).last().expect("a sentence").trim().to_string();
        assert!(parts[1].text.contains(&last_of_first));
    }
}
