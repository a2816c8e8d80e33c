//! `tokenizer.json`, the Hugging Face tokenizer description, read into one typed struct for
//! both of its readers: the Model2Vec loader in `lorec` and the MiniLM encoder. lore reads the
//! BERT kind (`BertNormalizer`, `BertPreTokenizer`, `WordPiece`) that [`crate::wordpiece`]
//! implements, and refuses any other, naming it.

use serde::Deserialize;

use crate::schema::IdMap;
use crate::wordpiece::WordPieceConfig;

/// What lore reads of a BERT WordPiece `tokenizer.json`.
#[derive(Debug)]
pub struct TokenizerJson {
    /// Pieces to ids (`model.vocab`), continuing pieces with their prefix.
    pub vocab: IdMap,
    /// The id of `model.unk_token`.
    pub unk_id: u32,
    pub continuing_prefix: String,
    pub max_input_chars_per_word: usize,
    pub lowercase: bool,
    pub strip_accents: bool,
    /// Tokens matched in the raw text before normalising (`[CLS]`, `[SEP]`, `[MASK]`, ...).
    pub added_tokens: Vec<AddedToken>,
}

/// One entry of `added_tokens`. The flags are read so that a reader that does not honour
/// them can refuse the tokenizer instead of splitting text differently.
#[derive(Debug, Clone, Deserialize)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    #[serde(default)]
    pub normalized: bool,
    #[serde(default)]
    pub lstrip: bool,
    #[serde(default)]
    pub rstrip: bool,
    #[serde(default)]
    pub single_word: bool,
}

/// The `type` of each part, read on its own first: another kind of tokenizer is then named in
/// the error, instead of failing on its vocabulary's different shape.
#[derive(Deserialize)]
struct Kinds {
    model: Option<Kind>,
    normalizer: Option<Kind>,
    pre_tokenizer: Option<Kind>,
}

#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl Kind {
    /// The part's type as `tokenizer.json` spells it, quoted, or `null`.
    fn shown(part: Option<&Kind>) -> String {
        match part.and_then(|k| k.kind.as_deref()) {
            Some(kind) => format!("{kind:?}"),
            None => "null".to_owned(),
        }
    }

    fn is(part: Option<&Kind>, kind: &str) -> bool {
        part.and_then(|k| k.kind.as_deref()) == Some(kind)
    }
}

/// The parts lore reads, once the kinds are known to be BERT's. Absent settings and `null`
/// take the defaults of Hugging Face `tokenizers`.
#[derive(Deserialize)]
struct Raw {
    model: RawModel,
    normalizer: RawNormalizer,
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
}

#[derive(Deserialize)]
struct RawModel {
    vocab: Option<IdMap>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    max_input_chars_per_word: Option<usize>,
}

#[derive(Deserialize)]
struct RawNormalizer {
    clean_text: Option<bool>,
    handle_chinese_chars: Option<bool>,
    lowercase: Option<bool>,
    strip_accents: Option<bool>,
}

impl TokenizerJson {
    /// Parse `tokenizer.json`. The message of an error does not name the file: the caller does.
    pub fn parse(bytes: &[u8]) -> Result<TokenizerJson, String> {
        let kinds: Kinds = serde_json::from_slice(bytes).map_err(json_error)?;
        if !Kind::is(kinds.model.as_ref(), "WordPiece") {
            return Err(format!(
                "unsupported tokenizer model {}; expected WordPiece (BERT)",
                Kind::shown(kinds.model.as_ref())
            ));
        }
        if !Kind::is(kinds.normalizer.as_ref(), "BertNormalizer") {
            return Err(format!(
                "unsupported normalizer {}; expected BertNormalizer",
                Kind::shown(kinds.normalizer.as_ref())
            ));
        }
        if kinds.pre_tokenizer.is_some() && !Kind::is(kinds.pre_tokenizer.as_ref(), "BertPreTokenizer") {
            return Err(format!(
                "unsupported pre_tokenizer {}; expected BertPreTokenizer",
                Kind::shown(kinds.pre_tokenizer.as_ref())
            ));
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(json_error)?;
        // lore's normaliser always cleans text and pads CJK ideographs.
        for (flag, value) in
            [("clean_text", raw.normalizer.clean_text), ("handle_chinese_chars", raw.normalizer.handle_chinese_chars)]
        {
            if value == Some(false) {
                return Err(format!("normalizer.{flag} = false is not supported"));
            }
        }
        let vocab = raw.model.vocab.ok_or("model.vocab is missing")?;
        let unk_token = raw.model.unk_token.as_deref().unwrap_or("[UNK]");
        let unk_id =
            *vocab.get(unk_token).ok_or_else(|| format!("unknown token {unk_token:?} is not in model.vocab"))?;
        let lowercase = raw.normalizer.lowercase.unwrap_or(true);
        Ok(TokenizerJson {
            unk_id,
            continuing_prefix: raw.model.continuing_subword_prefix.unwrap_or_else(|| "##".to_owned()),
            max_input_chars_per_word: raw.model.max_input_chars_per_word.unwrap_or(100),
            lowercase,
            // `strip_accents: null` means "follow lowercase", as in BERT's original tokenizer.
            strip_accents: raw.normalizer.strip_accents.unwrap_or(lowercase),
            added_tokens: raw.added_tokens,
            vocab,
        })
    }

    /// The WordPiece settings, for [`crate::wordpiece::tokenize`].
    pub fn config(&self) -> WordPieceConfig<'_> {
        WordPieceConfig {
            lowercase: self.lowercase,
            strip_accents: self.strip_accents,
            continuing_prefix: &self.continuing_prefix,
            max_input_chars_per_word: self.max_input_chars_per_word,
            unk_id: self.unk_id,
        }
    }
}

/// Broken JSON and well-formed JSON of the wrong shape read differently in a message.
fn json_error(e: serde_json::Error) -> String {
    if e.is_data() { format!("unexpected content: {e}") } else { format!("not valid JSON: {e}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERT: &str = r###"{
        "added_tokens": [{"id": 0, "content": "[UNK]", "normalized": false}, {"id": 3, "content": "[CLS]"}],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "strip_accents": null, "lowercase": false},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"[UNK]": 0, "a": 1, "##b": 2, "[CLS]": 3}}
    }"###;

    #[test]
    fn reads_a_bert_tokenizer_with_its_defaults() {
        let t = TokenizerJson::parse(BERT.as_bytes()).expect("parses");
        assert_eq!((t.unk_id, t.vocab.len(), t.vocab["##b"]), (0, 4, 2));
        assert_eq!((t.lowercase, t.strip_accents), (false, false), "strip_accents follows lowercase");
        assert_eq!((t.continuing_prefix.as_str(), t.max_input_chars_per_word), ("##", 100));
        assert_eq!(
            t.added_tokens.iter().map(|a| (a.id, a.content.as_str())).collect::<Vec<_>>(),
            [(0, "[UNK]"), (3, "[CLS]")]
        );
    }

    #[test]
    fn names_what_it_refuses() {
        let refused = |json: &str| TokenizerJson::parse(json.as_bytes()).expect_err("an error");
        // A Unigram vocabulary is a list: the kind is named before its shape matters.
        assert_eq!(
            refused(r#"{"model": {"type": "Unigram", "vocab": [["a", -1.0]]}}"#),
            "unsupported tokenizer model \"Unigram\"; expected WordPiece (BERT)"
        );
        assert_eq!(refused(r#"{}"#), "unsupported tokenizer model null; expected WordPiece (BERT)");
        assert_eq!(
            refused(r#"{"model": {"type": "WordPiece"}, "normalizer": null}"#),
            "unsupported normalizer null; expected BertNormalizer"
        );
        assert_eq!(
            refused(&BERT.replace("\"BertPreTokenizer\"", "\"Whitespace\"")),
            "unsupported pre_tokenizer \"Whitespace\"; expected BertPreTokenizer"
        );
        assert_eq!(
            refused(&BERT.replace("\"clean_text\": true", "\"clean_text\": false")),
            "normalizer.clean_text = false is not supported"
        );
        assert_eq!(
            refused(&BERT.replace("\"unk_token\": \"[UNK]\"", "\"unk_token\": \"<unk>\"")),
            "unknown token \"<unk>\" is not in model.vocab"
        );
        assert!(refused("{").starts_with("not valid JSON"));
        assert!(refused(&BERT.replace("\"a\": 1", "\"a\": -1")).starts_with("unexpected content"));
    }
}
