//! BERT WordPiece tokenisation, as Hugging Face `tokenizers` does it for `BertNormalizer` +
//! `BertPreTokenizer` + `WordPiece`, so that query-time ids match the model's training.
//!
//! Checked against ids produced by the Python `tokenizers` library in
//! `format/tests/data/potion_reference.json`.

use unicode_normalization::UnicodeNormalization;

/// Normalisation and splitting options, mirroring `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct WordPieceConfig<'a> {
    pub lowercase: bool,
    pub strip_accents: bool,
    pub continuing_prefix: &'a str,
    pub max_input_chars_per_word: usize,
    pub unk_id: u32,
}

/// Tokenise `text` into vocabulary ids, looking pieces up with `lookup`. No special tokens.
pub fn tokenize(text: &str, cfg: &WordPieceConfig<'_>, lookup: impl Fn(&str) -> Option<u32>) -> Vec<u32> {
    let normalized = normalize(text, cfg);
    let mut ids = Vec::new();
    let mut piece = String::new();
    for word in pre_tokenize(&normalized) {
        word_piece(word, cfg, &lookup, &mut piece, &mut ids);
    }
    ids
}

fn word_piece(
    word: &str,
    cfg: &WordPieceConfig<'_>,
    lookup: &impl Fn(&str) -> Option<u32>,
    piece: &mut String,
    ids: &mut Vec<u32>,
) {
    if word.chars().count() > cfg.max_input_chars_per_word {
        ids.push(cfg.unk_id);
        return;
    }
    let mark = ids.len();
    let mut start = 0;
    while start < word.len() {
        let mut end = word.len();
        let mut found = None;
        while start < end {
            piece.clear();
            if start > 0 {
                piece.push_str(cfg.continuing_prefix);
            }
            piece.push_str(&word[start..end]);
            if let Some(id) = lookup(piece) {
                found = Some(id);
                break;
            }
            // Step back one whole character.
            end = word[..end].char_indices().next_back().map_or(start, |(i, _)| i);
        }
        match found {
            Some(id) => {
                ids.push(id);
                start = end;
            }
            None => {
                ids.truncate(mark);
                ids.push(cfg.unk_id);
                return;
            }
        }
    }
}

/// `BertNormalizer`: clean control characters, pad CJK ideographs, strip accents, lowercase.
pub fn normalize(text: &str, cfg: &WordPieceConfig<'_>) -> String {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_chinese_char(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else if is_bert_whitespace(c) {
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    let stripped: String =
        if cfg.strip_accents { cleaned.nfd().filter(|&c| !is_nonspacing_mark(c)).collect() } else { cleaned };
    // Per character, like `tokenizers`: `str::to_lowercase` would apply the final-sigma rule.
    if cfg.lowercase { stripped.chars().flat_map(char::to_lowercase).collect() } else { stripped }
}

/// `BertPreTokenizer`: split on whitespace, and make every punctuation character its own word.
pub fn pre_tokenize(text: &str) -> impl Iterator<Item = &str> {
    text.split(char::is_whitespace).flat_map(|word| {
        let mut pieces = Vec::new();
        let mut start = 0;
        for (i, c) in word.char_indices() {
            if is_punctuation(c) {
                if start < i {
                    pieces.push(&word[start..i]);
                }
                pieces.push(&word[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        if start < word.len() {
            pieces.push(&word[start..]);
        }
        pieces
    })
}

fn is_bert_whitespace(c: char) -> bool {
    c.is_whitespace()
}

/// Unicode general category C (other), except the whitespace BERT keeps.
fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    let cp = c as u32;
    // Cc
    cp < 0x20 || (0x7f..=0x9f).contains(&cp)
        // Cf
        || matches!(cp, 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2 | 0x180e
            | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff
            | 0xfff9..=0xfffb | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f)
        // Co
        || matches!(cp, 0xe000..=0xf8ff | 0xf0000..=0xffffd | 0x100000..=0x10fffd)
        // Cn: noncharacters
        || matches!(cp, 0xfdd0..=0xfdef) || (cp & 0xfffe) == 0xfffe
}

fn is_chinese_char(c: char) -> bool {
    matches!(c as u32, 0x4e00..=0x9fff | 0x3400..=0x4dbf | 0x20000..=0x2a6df | 0x2a700..=0x2b73f
        | 0x2b740..=0x2b81f | 0x2b820..=0x2ceaf | 0xf900..=0xfaff | 0x2f800..=0x2fa1f)
}

/// Unicode general category Mn for the scripts that carry accents after NFD.
fn is_nonspacing_mark(c: char) -> bool {
    matches!(c as u32, 0x300..=0x36f | 0x483..=0x487 | 0x591..=0x5bd | 0x5bf | 0x5c1..=0x5c2
        | 0x5c4..=0x5c5 | 0x5c7 | 0x610..=0x61a | 0x64b..=0x65f | 0x670 | 0x6d6..=0x6dc
        | 0x6df..=0x6e4 | 0x6e7..=0x6e8 | 0x6ea..=0x6ed | 0x900..=0x902 | 0x93a | 0x93c
        | 0x941..=0x948 | 0x94d | 0x951..=0x957 | 0x962..=0x963 | 0xe31 | 0xe34..=0xe3a
        | 0xe47..=0xe4e | 0x1ab0..=0x1abd | 0x1dc0..=0x1dff | 0x20d0..=0x20dc | 0x20e1
        | 0x20e5..=0x20f0 | 0x302a..=0x302d | 0x3099..=0x309a | 0xfe00..=0xfe0f | 0xfe20..=0xfe2f)
}

/// ASCII punctuation (as BERT counts it, including `$+<=>^`|~`) and Unicode category P.
fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    matches!(c as u32, 0xa1 | 0xa7 | 0xab | 0xb6..=0xb7 | 0xbb | 0xbf | 0x37e | 0x387
        | 0x55a..=0x55f | 0x589..=0x58a | 0x5be | 0x5c0 | 0x5c3 | 0x5c6 | 0x5f3..=0x5f4
        | 0x609..=0x60a | 0x60c..=0x60d | 0x61b | 0x61d..=0x61f | 0x66a..=0x66d | 0x6d4
        | 0x964..=0x965 | 0x970 | 0xe4f | 0xe5a..=0xe5b | 0x10fb | 0x1360..=0x1368
        | 0x2010..=0x2027 | 0x2030..=0x2043 | 0x2045..=0x2051 | 0x2053..=0x205e
        | 0x207d..=0x207e | 0x208d..=0x208e | 0x2308..=0x230b | 0x2329..=0x232a
        | 0x2768..=0x2775 | 0x27c5..=0x27c6 | 0x27e6..=0x27ef | 0x2983..=0x2998
        | 0x29d8..=0x29db | 0x29fc..=0x29fd | 0x2cf9..=0x2cfc | 0x2cfe..=0x2cff | 0x2e00..=0x2e2e
        | 0x2e30..=0x2e4f | 0x3001..=0x3003 | 0x3008..=0x3011 | 0x3014..=0x301f | 0x3030 | 0x303d
        | 0x30a0 | 0x30fb | 0xfe10..=0xfe19 | 0xfe30..=0xfe52 | 0xfe54..=0xfe61 | 0xfe63 | 0xfe68
        | 0xfe6a..=0xfe6b | 0xff01..=0xff03 | 0xff05..=0xff0a | 0xff0c..=0xff0f | 0xff1a..=0xff1b
        | 0xff1f..=0xff20 | 0xff3b..=0xff3d | 0xff3f | 0xff5b | 0xff5d | 0xff5f..=0xff65)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WordPieceConfig<'static> {
        WordPieceConfig {
            lowercase: true,
            strip_accents: true,
            continuing_prefix: "##",
            max_input_chars_per_word: 100,
            unk_id: 0,
        }
    }

    #[test]
    fn normalises_like_bert() {
        assert_eq!(normalize("Café\tMÜLLER\u{200b}!", &cfg()), "cafe muller!");
        assert_eq!(normalize("東京", &cfg()), " 東  京 ");
    }

    #[test]
    fn splits_punctuation_into_words() {
        let words: Vec<_> = pre_tokenize("don't  e-mail (x)").collect();
        assert_eq!(words, ["don", "'", "t", "e", "-", "mail", "(", "x", ")"]);
    }

    #[test]
    fn greedy_longest_match_with_unknown_words() {
        let vocab = ["un", "##aff", "##able", "aff"];
        let lookup = |p: &str| vocab.iter().position(|v| *v == p).map(|i| i as u32 + 1);
        assert_eq!(tokenize("unaffable", &cfg(), lookup), [1, 2, 3]);
        assert_eq!(tokenize("unaffable zzz aff", &cfg(), lookup), [1, 2, 3, 0, 4]);
    }
}
