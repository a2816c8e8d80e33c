//! Sentence embeddings with sentence-transformers/all-MiniLM-L6-v2 in pure Rust on candle (CPU).
//!
//! [`MiniLm::embed`] does what `SentenceTransformer("all-MiniLM-L6-v2").encode(texts,
//! normalize_embeddings=True)` does: BERT WordPiece tokenisation (lore's own
//! [`format::wordpiece`], not the `tokenizers` crate), truncation to 256 word pieces including
//! `[CLS]` and `[SEP]`, the 6-layer BERT encoder, mean pooling over the attention mask and L2
//! normalisation. `tests/reference.rs` checks it against vectors from the Python library.
//!
//! Texts are sorted by length and embedded in batches of at most [`BATCH_TEXTS`] texts and
//! [`BATCH_TOKENS`] padded word pieces; each batch is padded to its longest text, with the
//! padding masked out of attention and pooling. A single question is a batch of one, unpadded.
//!
//! candle's matrix products use `RAYON_NUM_THREADS` threads (default: one per physical core).
//! On a 2-core machine `RAYON_NUM_THREADS=1` embedded a question faster (≈ 7.5 ms against
//! ≈ 10 ms), and it is the better setting for a server that answers questions concurrently.
//!
//! No candle type appears in this API, so the candle version can change freely.

#![forbid(unsafe_code)]

mod tokenizer;

use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct};

use crate::tokenizer::Tokenizer;

/// Longest input in word pieces, `[CLS]` and `[SEP]` included: sentence-transformers'
/// `max_seq_length` for all-MiniLM-L6-v2 (`sentence_bert_config.json`). Longer texts are cut.
pub const MAX_SEQ_LEN: usize = 256;

/// Most texts per forward pass in [`MiniLm::embed`].
pub const BATCH_TEXTS: usize = 32;

/// Most word pieces per forward pass (texts × longest text), padding included, unless a single
/// text is longer. On one core, short questions ran ≈ 4 ms each eight at a time against ≈ 7.5 ms
/// alone; texts of ~100 pieces gained nothing measurable from batching, so batches stay small.
pub const BATCH_TOKENS: usize = 512;

/// Why a model could not be loaded or could not embed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A part (`config.json`, `tokenizer.json` or `model.safetensors`, or its path) is not
    /// what a sentence-transformers BERT model directory holds.
    #[error("{part}: {message}")]
    Invalid { part: String, message: String },
    /// The forward pass failed (a bug or an out-of-memory condition, not bad input).
    #[error("MiniLM inference failed: {0}")]
    Inference(String),
}

/// A loaded all-MiniLM-L6-v2 (or any BERT sentence-transformer with mean pooling), ready to
/// embed. `Send + Sync`: share one behind an `Arc` across threads.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    dims: usize,
    max_seq_len: usize,
}

impl fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiniLm")
            .field("dims", &self.dims)
            .field("vocab", &self.tokenizer.vocab_len())
            .field("max_seq_len", &self.max_seq_len)
            .finish_non_exhaustive()
    }
}

impl MiniLm {
    /// From a sentence-transformers directory (`config.json`, `tokenizer.json`,
    /// `model.safetensors`). Errors name the file.
    pub fn from_dir(dir: &Path) -> Result<MiniLm, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => Ok((path.display().to_string(), bytes)),
                Err(source) => Err(Error::Io { path, source }),
            }
        };
        let (config_name, config) = read("config.json")?;
        let (tokenizer_name, tokenizer) = read("tokenizer.json")?;
        let (weights_name, weights) = read("model.safetensors")?;
        MiniLm::load((&config_name, &config), (&tokenizer_name, &tokenizer), (&weights_name, &weights))
    }

    /// From in-memory parts, e.g. a model stored inside an artifact. The weights are copied,
    /// so the slices need not outlive the model. Errors name the part.
    pub fn from_parts(config_json: &[u8], tokenizer_json: &[u8], safetensors: &[u8]) -> Result<MiniLm, Error> {
        MiniLm::load(
            ("config.json", config_json),
            ("tokenizer.json", tokenizer_json),
            ("model.safetensors", safetensors),
        )
    }

    fn load(config: (&str, &[u8]), tokenizer: (&str, &[u8]), weights: (&str, &[u8])) -> Result<MiniLm, Error> {
        let invalid = |part: &str, message: String| Error::Invalid { part: part.to_owned(), message };
        let cfg: Config =
            serde_json::from_slice(config.1).map_err(|e| invalid(config.0, format!("not a BERT config: {e}")))?;
        if cfg.model_type.as_deref().is_some_and(|t| t != "bert") {
            return Err(invalid(config.0, format!("model_type {:?} is not \"bert\"", cfg.model_type)));
        }
        if cfg.hidden_act != HiddenAct::Gelu {
            return Err(invalid(config.0, format!("hidden_act {:?} is not \"gelu\"", cfg.hidden_act)));
        }
        if cfg.hidden_size == 0 || cfg.hidden_size.checked_rem(cfg.num_attention_heads) != Some(0) {
            return Err(invalid(config.0, "hidden_size is not a positive multiple of num_attention_heads".to_owned()));
        }
        let tokenizer = Tokenizer::from_json(tokenizer.1, tokenizer.0)?;
        let vb = VarBuilder::from_slice_safetensors(weights.1, DType::F32, &Device::Cpu)
            .map_err(|e| invalid(weights.0, format!("not a safetensors file: {e}")))?;
        let model =
            BertModel::load(vb, &cfg).map_err(|e| invalid(weights.0, format!("does not match {}: {e}", config.0)))?;
        Ok(MiniLm {
            model,
            tokenizer,
            dims: cfg.hidden_size,
            max_seq_len: MAX_SEQ_LEN.min(cfg.max_position_embeddings),
        })
    }

    /// Embedding width: 384 for all-MiniLM-L6-v2.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The ids the encoder sees for `text`: `[CLS]`, at most 254 word pieces, `[SEP]`.
    pub fn token_ids(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, self.max_seq_len)
    }

    /// One unit-length vector of [`dims`](Self::dims) floats per text, in input order: mean
    /// pooling over the attention mask, then L2 normalisation, like sentence-transformers.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.token_ids(t)).collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        let lens: Vec<usize> = order.iter().map(|&i| ids[i].len()).collect();
        let mut rest = order.as_slice();
        while !rest.is_empty() {
            let take = batch_len(&lens[lens.len() - rest.len()..]);
            let (batch, tail) = rest.split_at(take);
            rest = tail;
            let seqs: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
            let vectors = self.forward(&seqs).map_err(|e| Error::Inference(e.to_string()))?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Encode a batch padded to its longest sequence, then pool and normalise.
    fn forward(&self, seqs: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let padded = seqs.iter().any(|s| s.len() != len);
        let mut input = Vec::with_capacity(seqs.len() * len);
        let mut mask = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            input.extend_from_slice(s);
            input.resize(input.len() + len - s.len(), 0);
            mask.extend(std::iter::repeat_n(1u32, s.len()));
            mask.resize(mask.len() + len - s.len(), 0);
        }
        let input = Tensor::from_vec(input, (seqs.len(), len), &Device::Cpu)?;
        let token_types = input.zeros_like()?;
        let mask = padded.then(|| Tensor::from_vec(mask, (seqs.len(), len), &Device::Cpu)).transpose()?;
        let hidden = self.model.forward(&input, &token_types, mask.as_ref())?;
        let hidden = hidden.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let dims = self.dims;
        Ok(seqs
            .iter()
            .enumerate()
            .map(|(b, s)| {
                let rows = &hidden[b * len * dims..(b * len + s.len()) * dims];
                mean_normalized(rows, dims)
            })
            .collect())
    }
}

/// How many of the remaining texts, with these ascending lengths, go into the next batch.
fn batch_len(sorted_lens: &[usize]) -> usize {
    // Ascending, so the last text taken is the longest of the batch.
    (2..=sorted_lens.len().min(BATCH_TEXTS)).take_while(|&n| n * sorted_lens[n - 1] <= BATCH_TOKENS).last().unwrap_or(1)
}

/// Mean of the `rows` (each `dims` wide), divided by its L2 norm (`max(norm, 1e-12)`, as
/// `torch.nn.functional.normalize`).
fn mean_normalized(rows: &[f32], dims: usize) -> Vec<f32> {
    let mut sum = vec![0f64; dims];
    for row in rows.chunks_exact(dims) {
        for (acc, &x) in sum.iter_mut().zip(row) {
            *acc += f64::from(x);
        }
    }
    let n = (rows.len() / dims).max(1) as f64;
    let norm = sum.iter().map(|x| (x / n) * (x / n)).sum::<f64>().sqrt().max(1e-12);
    sum.iter().map(|x| (x / n / norm) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_averages_then_normalises() {
        let v = mean_normalized(&[1.0, 2.0, 5.0, 6.0], 2);
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7, "{v:?}");
        assert_eq!(mean_normalized(&[0.0, 0.0], 2), [0.0, 0.0]);
    }

    #[test]
    fn batches_are_bounded_by_texts_and_padded_tokens() {
        assert_eq!(batch_len(&[9; 100]), BATCH_TEXTS);
        assert_eq!(batch_len(&[100, 120, 128, 129, 200]), 3);
        assert_eq!(batch_len(&[256, 256]), 2);
        assert_eq!(batch_len(&[300, 300]), 1);
        assert_eq!(batch_len(&[7]), 1);
    }

    #[test]
    fn model_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MiniLm>();
    }

    #[test]
    fn errors_name_the_part() {
        let err = MiniLm::from_parts(b"{}", b"{}", b"").expect_err("an error");
        assert!(err.to_string().starts_with("config.json: not a BERT config"), "{err}");
        let err = MiniLm::from_dir(Path::new("/nonexistent/minilm")).expect_err("an error");
        assert!(err.to_string().starts_with("cannot read /nonexistent/minilm/config.json: "), "{err}");
    }
}
