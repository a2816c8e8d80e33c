//! The answer without an LLM: from each of the best chunks, the lines that share most words
//! with the question, under the chunk's title and its citation number. Offline, microseconds.

use crate::engine::Hit;

/// Chunks an extractive answer quotes.
const QUOTED_CHUNKS: usize = 3;
/// Lines quoted from one chunk.
const LINES_PER_CHUNK: usize = 2;
/// Longest quoted line, in characters.
const MAX_LINE_CHARS: usize = 280;

const STOP: &[&str] = &[
    "the", "and", "you", "your", "yours", "what", "which", "who", "whom", "how", "why", "when", "where", "are", "was",
    "were", "did", "does", "have", "has", "had", "for", "with", "about", "that", "this", "there", "from", "into",
    "any", "can", "could", "would", "should", "tell", "me", "do", "is", "of", "in", "on", "at", "to", "a", "an", "or",
];

fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|w| !STOP.contains(&w.as_str()))
        .collect()
}

/// Two words match when equal or when they share their first five letters ("robots", "robotics").
fn matches(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let prefix = |w: &str| w.char_indices().nth(5).map_or(w.len(), |(i, _)| i);
    a.chars().count() >= 5 && b.chars().count() >= 5 && a[..prefix(a)] == b[..prefix(b)]
}

fn shorten(line: &str) -> String {
    let line = line.trim();
    if line.chars().count() <= MAX_LINE_CHARS {
        return line.to_string();
    }
    let cut: String = line.chars().take(MAX_LINE_CHARS).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{cut}…")
}

/// The answer text and the citation numbers (1-based positions in `hits`) it uses.
pub fn answer(question: &str, hits: &[Hit]) -> (String, Vec<usize>) {
    let wanted = terms(question);
    let mut out = String::new();
    let mut used = Vec::new();
    for (i, hit) in hits.iter().take(QUOTED_CHUNKS).enumerate() {
        // The first line repeats the title; tags are metadata.
        let lines: Vec<&str> =
            hit.text.lines().skip(1).map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("Tags:")).collect();
        let mut scored: Vec<(usize, usize)> = lines
            .iter()
            .enumerate()
            .map(|(at, line)| {
                let words = terms(line);
                let score = wanted.iter().filter(|w| words.iter().any(|x| matches(w, x))).count();
                (score, at)
            })
            .collect();
        // Best lines first, earlier lines first among equals; then back to reading order.
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut picked: Vec<usize> = scored.iter().take(LINES_PER_CHUNK).map(|&(_, at)| at).collect();
        picked.sort_unstable();
        let quoted: Vec<String> = picked.iter().map(|&at| shorten(lines[at])).collect();
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&format!("{} [{}]", hit.title.trim(), i + 1));
        if quoted.is_empty() {
            // A chunk that is its title alone (a list item, a short fact).
            let body = shorten(hit.text.lines().next().unwrap_or(""));
            if body != hit.title.trim() {
                out.push_str(&format!("\n{body}"));
            }
        }
        for line in quoted {
            out.push_str(&format!("\n{line}"));
        }
        used.push(i + 1);
    }
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(title: &str, text: &str) -> Hit {
        Hit {
            id: format!("kb.yaml#/{title}"),
            doc: String::new(),
            source: "kb.yaml".into(),
            path: "/x".into(),
            title: title.into(),
            section: String::new(),
            tags: vec![],
            text: text.into(),
            score: 1.0,
        }
    }

    #[test]
    fn the_lines_that_answer_are_quoted_under_their_titles() {
        let hits = [
            hit(
                "Verdant Robotics",
                "Work experience: Verdant Robotics\nRole: Robotics engineer\nHighlights: built vineyard robots that prune vines\nLocation: Lisbon\nTags: robots",
            ),
            hit("Hobbies", "Hobbies\nCello, cold-water swimming"),
        ];
        let (text, used) = answer("What kind of robots do you build?", &hits);
        assert_eq!(used, [1, 2]);
        assert_eq!(
            text,
            "Verdant Robotics [1]\nRole: Robotics engineer\nHighlights: built vineyard robots that prune vines\n\nHobbies [2]\nCello, cold-water swimming"
        );
    }

    #[test]
    fn long_lines_are_cut_at_a_word() {
        let long = format!("Summary: {}", "word ".repeat(100));
        let (text, _) = answer("summary", &[hit("T", &format!("T\n{long}"))]);
        assert!(text.ends_with('…') && text.chars().count() < 300, "{text}");
    }
}
