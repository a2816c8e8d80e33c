//! The document-side embedders: what `lorec build --embedder` chooses between. Each embeds
//! chunk texts in batches and describes, for the artifact, how questions must be embedded.

use std::path::Path;

use format::embed::embed;
use format::{EmbedderInfo, EmbedderModel};
use sha2::{Digest, Sha256};

use crate::model::Model;

#[derive(Debug, thiserror::Error)]
pub enum EmbedderError {
    #[error("{0}")]
    Load(String),
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error("unknown embedder `{0}`; use potion, minilm or openai:MODEL")]
    Unknown(String),
    #[error("the `{0}` embedder is not compiled into this lorec (rebuild with `--features {0}`)")]
    NotCompiled(&'static str),
}

/// A document embedder.
#[derive(Debug)]
pub enum Embedder {
    /// A Model2Vec static model (potion-base-8M by default).
    Static(Model),
    /// An OpenAI-compatible embeddings API.
    #[cfg(feature = "openai")]
    OpenAi { client: embed_openai::Client, model: String, dims: u32 },
    /// A BERT-family sentence-transformers model (all-MiniLM-L6-v2), stored whole in the
    /// artifact so the runtime can embed questions the same way.
    #[cfg(feature = "minilm")]
    MiniLm { model: embed_minilm::MiniLm, parts: format::TransformerParts, id: String, sha256: [u8; 32] },
}

impl Embedder {
    /// Resolve `--embedder` (`potion`, `minilm`, `openai:MODEL`) with `--model DIR`.
    pub fn from_spec(spec: &str, model_dir: &Path) -> Result<Embedder, EmbedderError> {
        match spec.split_once(':') {
            None if spec == "potion" || spec == "static" => {
                crate::model::load(model_dir).map(Embedder::Static).map_err(|e| {
                    EmbedderError::Load(format!("{e} (hint: `cargo xtask fetch-model`, or pass --model DIR)"))
                })
            }
            None if spec == "minilm" => Self::minilm(model_dir),
            Some(("openai", model)) if !model.is_empty() => Self::openai(model),
            _ => Err(EmbedderError::Unknown(spec.to_string())),
        }
    }

    #[cfg(feature = "openai")]
    fn openai(model: &str) -> Result<Embedder, EmbedderError> {
        let client = embed_openai::Client::new(embed_openai::Config::from_env(model))
            .map_err(|e| EmbedderError::Load(e.to_string()))?;
        // One probe call learns the dimensions before anything is laid out.
        let probe = client.embed(&["dimension probe"]).map_err(|e| EmbedderError::Embed(e.to_string()))?;
        let dims = probe.first().map_or(0, Vec::len) as u32;
        Ok(Embedder::OpenAi { client, model: model.to_string(), dims })
    }

    #[cfg(not(feature = "openai"))]
    fn openai(_model: &str) -> Result<Embedder, EmbedderError> {
        Err(EmbedderError::NotCompiled("openai"))
    }

    #[cfg(feature = "minilm")]
    fn minilm(dir: &Path) -> Result<Embedder, EmbedderError> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| {
                EmbedderError::Load(format!(
                    "cannot read {}: {e} (hint: `cargo xtask fetch-model`, or pass --model DIR)",
                    dir.join(name).display()
                ))
            })
        };
        let (config, tokenizer, weights) = (read("config.json")?, read("tokenizer.json")?, read("model.safetensors")?);
        let model = embed_minilm::MiniLm::from_parts(&config, &tokenizer, &weights)
            .map_err(|e| EmbedderError::Load(e.to_string()))?;
        let text = |bytes: Vec<u8>, name: &str| {
            String::from_utf8(bytes).map_err(|_| EmbedderError::Load(format!("{name} is not UTF-8")))
        };
        let sha256 = Sha256::digest(&weights).into();
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let id = if name == "all-MiniLM-L6-v2" { "sentence-transformers/all-MiniLM-L6-v2".to_string() } else { name };
        let parts = format::TransformerParts {
            config_json: text(config, "config.json")?,
            tokenizer_json: text(tokenizer, "tokenizer.json")?,
            weights,
        };
        Ok(Embedder::MiniLm { model, parts, id, sha256 })
    }

    #[cfg(not(feature = "minilm"))]
    fn minilm(_dir: &Path) -> Result<Embedder, EmbedderError> {
        Err(EmbedderError::NotCompiled("minilm"))
    }

    pub fn dims(&self) -> usize {
        match self {
            Embedder::Static(m) => m.table.dims as usize,
            #[cfg(feature = "openai")]
            Embedder::OpenAi { dims, .. } => *dims as usize,
            #[cfg(feature = "minilm")]
            Embedder::MiniLm { model, .. } => model.dims(),
        }
    }

    /// Identifies the model for caches: vectors from different models never mix.
    pub fn fingerprint(&self) -> [u8; 32] {
        match self {
            Embedder::Static(m) => m.weights_sha256,
            #[cfg(feature = "openai")]
            Embedder::OpenAi { client, model, .. } => Sha256::new()
                .chain_update(b"openai\0")
                .chain_update(client.config().base_url.as_bytes())
                .chain_update([0])
                .chain_update(model.as_bytes())
                .finalize()
                .into(),
            #[cfg(feature = "minilm")]
            Embedder::MiniLm { sha256, .. } => *sha256,
        }
    }

    pub fn info(&self) -> EmbedderInfo {
        match self {
            Embedder::Static(m) => EmbedderInfo {
                kind: "static".into(),
                id: m.id.clone(),
                dims: m.table.dims,
                vocab_size: m.table.vocab.len() as u32,
                weights_sha256: m.weights_sha256,
            },
            #[cfg(feature = "openai")]
            Embedder::OpenAi { model, dims, .. } => EmbedderInfo {
                kind: "openai".into(),
                id: model.clone(),
                dims: *dims,
                vocab_size: 0,
                weights_sha256: [0; 32],
            },
            #[cfg(feature = "minilm")]
            Embedder::MiniLm { model, id, sha256, .. } => EmbedderInfo {
                kind: "transformer".into(),
                id: id.clone(),
                dims: model.dims() as u32,
                vocab_size: 0,
                weights_sha256: *sha256,
            },
        }
    }

    /// What goes into the model section.
    pub fn model_section(&self) -> EmbedderModel {
        match self {
            Embedder::Static(m) => EmbedderModel::Static(m.table.clone()),
            #[cfg(feature = "openai")]
            Embedder::OpenAi { model, dims, .. } => EmbedderModel::Remote(format::RemoteEmbedder {
                provider: "openai".into(),
                model: model.clone(),
                dims: *dims,
            }),
            #[cfg(feature = "minilm")]
            Embedder::MiniLm { parts, .. } => EmbedderModel::Transformer(parts.clone()),
        }
    }

    /// Embed `texts`, in order, as unit vectors.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedderError> {
        match self {
            Embedder::Static(m) => Ok(texts.iter().map(|t| embed(&m.table, t)).collect()),
            #[cfg(feature = "openai")]
            Embedder::OpenAi { client, .. } => client.embed(texts).map_err(|e| EmbedderError::Embed(e.to_string())),
            #[cfg(feature = "minilm")]
            Embedder::MiniLm { model, .. } => model.embed(texts).map_err(|e| EmbedderError::Embed(e.to_string())),
        }
    }
}

/// A text-level cache of vectors keyed by (model fingerprint, SHA-256 of the text), so a
/// rebuild never pays twice for the same text, whichever file it moved to.
#[derive(Debug, Default)]
pub struct EmbeddingCache {
    path: Option<std::path::PathBuf>,
    map: std::collections::HashMap<[u8; 32], Vec<f32>>,
    added: usize,
    pub hits: usize,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CacheFile {
    entries: Vec<([u8; 32], Vec<f32>)>,
}

impl EmbeddingCache {
    /// Open (or start) the cache for one model in `dir`; `None` disables caching.
    pub fn open(dir: Option<&Path>, fingerprint: &[u8; 32]) -> EmbeddingCache {
        let Some(dir) = dir else { return EmbeddingCache::default() };
        let name: String = fingerprint[..8].iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("embeddings-{name}.bin"));
        let map = std::fs::read(&path)
            .ok()
            .and_then(|bytes| {
                let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
                aligned.extend_from_slice(&bytes);
                rkyv::from_bytes::<CacheFile, rkyv::rancor::Error>(&aligned).ok()
            })
            .map(|f| f.entries.into_iter().collect())
            .unwrap_or_default();
        EmbeddingCache { path: Some(path), map, added: 0, hits: 0 }
    }

    fn key(fingerprint: &[u8; 32], text: &str) -> [u8; 32] {
        Sha256::new().chain_update(fingerprint).chain_update(text.as_bytes()).finalize().into()
    }

    /// Vectors for `texts`, embedding only the ones not cached, in batches.
    pub fn embed(&mut self, embedder: &Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedderError> {
        let fp = embedder.fingerprint();
        let keys: Vec<[u8; 32]> = texts.iter().map(|t| Self::key(&fp, t)).collect();
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| !self.map.contains_key(&keys[i])).collect();
        self.hits += texts.len() - missing.len();
        if !missing.is_empty() {
            let batch: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
            let vectors = embedder.embed_batch(&batch)?;
            if vectors.len() != batch.len() {
                return Err(EmbedderError::Embed(format!("{} vectors for {} texts", vectors.len(), batch.len())));
            }
            for (i, v) in missing.into_iter().zip(vectors) {
                self.map.insert(keys[i], v);
                self.added += 1;
            }
        }
        Ok(keys.iter().map(|k| self.map[k].clone()).collect())
    }

    /// Write the cache back if anything was added; failures only cost speed next time.
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        if self.added == 0 {
            return;
        }
        let file = CacheFile { entries: self.map.iter().map(|(k, v)| (*k, v.clone())).collect() };
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&file).map_err(std::io::Error::other)?;
            crate::atomic_write(path, &bytes)
        })();
        if let Err(e) = result {
            tracing::warn!("could not write the embedding cache {}: {e}", path.display());
        }
    }
}
