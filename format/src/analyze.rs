//! Text analysis for BM25: the compiler indexes chunks with it and the runtime analyses
//! questions with it, so both must produce the same terms.
//!
//! Lowercase, split on anything that is not a letter or digit, drop English stop words and
//! possessive `s`, then Snowball (Porter 2) stemming.

use rust_stemmers::{Algorithm, Stemmer};

/// Reusable analyser; building the stemmer once keeps per-question cost to the tokenising.
pub struct Analyzer {
    stemmer: Stemmer,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Analyzer(english)")
    }
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer { stemmer: Stemmer::create(Algorithm::English) }
    }
}

impl Analyzer {
    /// Call `sink` with every term of `text`, in order.
    pub fn for_each_term(&self, text: &str, mut sink: impl FnMut(&str)) {
        let mut word = String::new();
        for token in text.split(|c: char| !c.is_alphanumeric()) {
            if token.is_empty() {
                continue;
            }
            word.clear();
            word.extend(token.chars().flat_map(char::to_lowercase));
            if word == "s" || is_stop_word(&word) {
                continue;
            }
            let stem = self.stemmer.stem(&word);
            sink(&stem);
        }
    }

    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_term(text, |t| out.push(t.to_string()));
        out
    }
}

/// A short English list (Lucene's plus question words and pronouns a visitor uses to address
/// the persona), sorted for binary search.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "been", "before", "being",
    "but", "by", "can", "could", "did", "do", "does", "doing", "for", "from", "had", "has", "have", "having", "he",
    "her", "here", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "myself", "no", "not",
    "of", "on", "or", "our", "she", "should", "so", "some", "such", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "those", "to", "too", "us", "very", "was", "we", "were", "what", "when", "where",
    "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself",
];

pub fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn stems_and_drops_stop_words() {
        let a = Analyzer::default();
        assert_eq!(a.terms("What projects are you Building, Stephen's?"), ["project", "build", "stephen"]);
        assert_eq!(a.terms("Ångström 2023–present"), ["ångström", "2023", "present"]);
    }
}
