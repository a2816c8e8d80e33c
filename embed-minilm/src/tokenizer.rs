//! The BERT tokenizer described by a Hugging Face `tokenizer.json`, on lore's own WordPiece.
//!
//! Hugging Face `tokenizers` first cuts the raw text on its added tokens (`[CLS]`, `[SEP]`,
//! `[MASK]`, ...), then normalises, pre-tokenises and WordPiece-splits the pieces between them,
//! and finally wraps the ids in `[CLS] ... [SEP]`. This does the same, with
//! [`format::wordpiece::tokenize`] for the middle part.

use format::tokenizer_json::TokenizerJson;
use format::wordpiece;

use crate::Error;

/// A WordPiece tokenizer with the special tokens a BERT encoder expects.
pub(crate) struct Tokenizer {
    /// The vocabulary and WordPiece settings.
    tok: TokenizerJson,
    cls_id: u32,
    sep_id: u32,
    /// Added tokens matched in the raw text, longest first (leftmost-longest, as `tokenizers`).
    added: Vec<(String, u32)>,
}

impl Tokenizer {
    /// Parse `tokenizer.json`; `part` names it in errors.
    pub(crate) fn from_json(bytes: &[u8], part: &str) -> Result<Tokenizer, Error> {
        let invalid = |message: String| Error::Invalid { part: part.to_owned(), message };
        let tok = TokenizerJson::parse(bytes).map_err(invalid)?;
        let id_of = |token: &str, what: &str| {
            tok.vocab
                .get(token)
                .copied()
                .ok_or_else(|| invalid(format!("{what} token {token:?} is not in model.vocab")))
        };
        let cls_id = id_of("[CLS]", "classifier")?;
        let sep_id = id_of("[SEP]", "separator")?;
        let mut added = Vec::new();
        for token in &tok.added_tokens {
            let flags = [
                ("normalized", token.normalized),
                ("lstrip", token.lstrip),
                ("rstrip", token.rstrip),
                ("single_word", token.single_word),
            ];
            if let Some((flag, _)) = flags.iter().find(|(_, set)| *set) {
                return Err(invalid(format!("added token {:?} sets {flag}, which is not supported", token.content)));
            }
            if !token.content.is_empty() {
                added.push((token.content.clone(), token.id));
            }
        }
        added.sort_by_key(|(token, _)| std::cmp::Reverse(token.len()));
        Ok(Tokenizer { tok, cls_id, sep_id, added })
    }

    /// `[CLS] pieces… [SEP]`, keeping the first `max_len - 2` pieces.
    pub(crate) fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        let cfg = self.tok.config();
        let lookup = |piece: &str| self.tok.vocab.get(piece).copied();
        let budget = max_len.saturating_sub(2);
        let mut ids = vec![self.cls_id];
        let mut rest = text;
        while !rest.is_empty() && ids.len() <= budget {
            let (before, special, after) = self.split_added(rest);
            ids.extend(wordpiece::tokenize(before, &cfg, lookup));
            ids.extend(special);
            rest = after;
        }
        ids.truncate(budget + 1);
        ids.push(self.sep_id);
        ids
    }

    /// The text before the leftmost (then longest) added token, its id, and the text after.
    fn split_added<'t>(&self, text: &'t str) -> (&'t str, Option<u32>, &'t str) {
        for (start, _) in text.char_indices() {
            let tail = &text[start..];
            if let Some((token, id)) = self.added.iter().find(|(token, _)| tail.starts_with(token.as_str())) {
                return (&text[..start], Some(*id), &tail[token.len()..]);
            }
        }
        (text, None, "")
    }

    pub(crate) fn vocab_len(&self) -> usize {
        self.tok.vocab.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(extra: &str) -> Tokenizer {
        let json = format!(
            r###"{{
              "added_tokens": [
                {{"id": 0, "content": "[PAD]", "normalized": false, "lstrip": false, "rstrip": false, "single_word": false}},
                {{"id": 1, "content": "[UNK]", "normalized": false}},
                {{"id": 2, "content": "[CLS]", "normalized": false}},
                {{"id": 3, "content": "[SEP]", "normalized": false}},
                {{"id": 4, "content": "[MASK]", "normalized": false}}
              ],
              "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                              "strip_accents": null, "lowercase": true}},
              "pre_tokenizer": {{"type": "BertPreTokenizer"}},
              "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                         "max_input_chars_per_word": 100{extra},
                         "vocab": {{"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4,
                                    "cafe": 5, "un": 6, "##aff": 7, "##able": 8, "?": 9, "[": 10}}}}
            }}"###
        );
        Tokenizer::from_json(json.as_bytes(), "tokenizer.json").expect("valid tokenizer")
    }

    #[test]
    fn wraps_in_cls_and_sep() {
        let t = tokenizer("");
        assert_eq!(t.encode("CAFÉ unaffable?", 256), [2, 5, 6, 7, 8, 9, 3]);
        assert_eq!(t.encode("", 256), [2, 3]);
        assert_eq!(t.encode("zzz", 256), [2, 1, 3]);
    }

    #[test]
    fn truncates_to_max_len_including_specials() {
        let t = tokenizer("");
        assert_eq!(t.encode("cafe cafe cafe cafe", 4), [2, 5, 5, 3]);
        assert_eq!(t.encode("unaffable", 3), [2, 6, 3]);
        assert_eq!(t.encode("[MASK] cafe", 3), [2, 4, 3]);
    }

    #[test]
    fn added_tokens_match_in_the_raw_text() {
        let t = tokenizer("");
        assert_eq!(t.encode("cafe[MASK]?[SEP]", 256), [2, 5, 4, 9, 3, 3]);
        // Case-sensitive, before lowercasing: `[mask]` is ordinary text.
        assert_eq!(t.encode("[mask]", 256), [2, 10, 1, 1, 3]);
    }

    #[test]
    fn rejects_other_tokenizers_with_the_part_name() {
        let err = Tokenizer::from_json(br#"{"model": {"type": "BPE"}}"#, "x/tokenizer.json").err().expect("an error");
        assert_eq!(err.to_string(), "x/tokenizer.json: unsupported tokenizer model \"BPE\"; expected WordPiece (BERT)");
        let err = Tokenizer::from_json(b"{", "tokenizer.json").err().expect("an error");
        assert!(err.to_string().starts_with("tokenizer.json: not valid JSON"), "{err}");
    }
}
