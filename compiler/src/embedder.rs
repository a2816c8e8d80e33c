//! The document-side embedders: what `lorec build --embedder` chooses between. Each embeds
//! chunk texts in batches and describes, for the artifact, how questions must be embedded.

use std::io::Write as _;
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

/// A document embedder. One exists per build, so variant sizes do not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Embedder {
    /// A Model2Vec static model (potion-base-8M by default).
    Static(Model),
    /// An OpenAI-compatible embeddings API.
    #[cfg(feature = "openai")]
    OpenAi { client: embed_openai::Client, model: String, dims: u32 },
    /// A BERT-family sentence-transformers model (all-MiniLM-L6-v2), stored whole in the
    /// artifact so the runtime can embed questions the same way.
    #[cfg(feature = "minilm")]
    MiniLm { model: embed_minilm::MiniLm, section: EmbedderModel, id: String, sha256: [u8; 32] },
}

impl Embedder {
    /// Resolve `--embedder` (`potion`, `minilm`, `openai:MODEL`) with `--model DIR`. A static
    /// table is stored as int8 rows when `quantize`, and prepared through `cache_dir` if given.
    pub fn from_spec(
        spec: &str,
        model_dir: &Path,
        quantize: bool,
        cache_dir: Option<&Path>,
    ) -> Result<Embedder, EmbedderError> {
        match spec.split_once(':') {
            None if spec == "potion" || spec == "static" => {
                crate::model::load_prepared(model_dir, quantize, cache_dir).map(Embedder::Static).map_err(|e| {
                    EmbedderError::Load(format!("{e} (hint: `lorec fetch-model`, or pass --model DIR or hf:ORG/NAME)"))
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
                    "cannot read {}: {e} (hint: `lorec fetch-model`, or pass --model DIR or hf:ORG/NAME)",
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
        let name = model_fetch::model_name(dir);
        let id = if name == "all-MiniLM-L6-v2" { "sentence-transformers/all-MiniLM-L6-v2".to_string() } else { name };
        let parts = format::TransformerParts {
            config_json: text(config, "config.json")?,
            tokenizer_json: text(tokenizer, "tokenizer.json")?,
            weights,
        };
        Ok(Embedder::MiniLm { model, section: EmbedderModel::Transformer(parts), id, sha256 })
    }

    #[cfg(not(feature = "minilm"))]
    fn minilm(_dir: &Path) -> Result<Embedder, EmbedderError> {
        Err(EmbedderError::NotCompiled("minilm"))
    }

    /// Whether each text's vector depends on its words alone (Model2Vec), not on their
    /// context (a transformer, an API): facets, the fusion profile and the topic rule differ.
    pub fn is_static(&self) -> bool {
        matches!(self, Embedder::Static(_))
    }

    pub fn dims(&self) -> usize {
        match self {
            Embedder::Static(m) => m.table().dims as usize,
            #[cfg(feature = "openai")]
            Embedder::OpenAi { dims, .. } => *dims as usize,
            #[cfg(feature = "minilm")]
            Embedder::MiniLm { model, .. } => model.dims(),
        }
    }

    /// Identifies the model for caches: vectors from different models never mix.
    pub fn fingerprint(&self) -> [u8; 32] {
        match self {
            Embedder::Static(m) => m.fingerprint(),
            #[cfg(feature = "openai")]
            Embedder::OpenAi { client, model, .. } => Sha256::new()
                .chain_update(b"openai\0")
                .chain_update(client.config().base_url.as_bytes())
                .chain_update([0])
                .chain_update(model.as_bytes())
                .finalize()
                .into(),
            #[cfg(feature = "minilm")]
            Embedder::MiniLm { sha256, section, .. } => match section {
                // The tokenizer and config shape the vectors as much as the weights.
                EmbedderModel::Transformer(parts) => Sha256::new()
                    .chain_update(sha256)
                    .chain_update(parts.config_json.as_bytes())
                    .chain_update([0])
                    .chain_update(parts.tokenizer_json.as_bytes())
                    .finalize()
                    .into(),
                _ => *sha256,
            },
        }
    }

    pub fn info(&self) -> EmbedderInfo {
        match self {
            Embedder::Static(m) => EmbedderInfo {
                kind: "static".into(),
                id: m.id.clone(),
                dims: m.table().dims,
                vocab_size: m.table().vocab.len() as u32,
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

    /// What goes into the model section; borrowed where the model is large.
    pub fn model_section(&self) -> std::borrow::Cow<'_, EmbedderModel> {
        use std::borrow::Cow;
        match self {
            Embedder::Static(m) => Cow::Borrowed(m.section()),
            #[cfg(feature = "openai")]
            Embedder::OpenAi { model, dims, .. } => Cow::Owned(EmbedderModel::Remote(format::RemoteEmbedder {
                provider: "openai".into(),
                model: model.clone(),
                dims: *dims,
            })),
            #[cfg(feature = "minilm")]
            Embedder::MiniLm { section, .. } => Cow::Borrowed(section),
        }
    }

    /// Embed `texts`, in order, as unit vectors.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedderError> {
        match self {
            Embedder::Static(m) => Ok(embed_on_all_cores(m.table(), texts)),
            #[cfg(feature = "openai")]
            Embedder::OpenAi { client, .. } => client.embed(texts).map_err(|e| EmbedderError::Embed(e.to_string())),
            #[cfg(feature = "minilm")]
            Embedder::MiniLm { model, .. } => model.embed(texts).map_err(|e| EmbedderError::Embed(e.to_string())),
        }
    }
}

/// Pool `texts` with a static table, spread over the cores (the table is read-only).
fn embed_on_all_cores(table: &format::ModelTable, texts: &[&str]) -> Vec<Vec<f32>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    if workers == 1 || texts.len() < 64 {
        return texts.iter().map(|t| embed(table, t)).collect();
    }
    let per_worker = texts.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = texts
            .chunks(per_worker)
            .map(|part| scope.spawn(move || part.iter().map(|t| embed(table, t)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

/// A text-level cache of vectors keyed by (model fingerprint, SHA-256 of the text), so a
/// rebuild never pays twice for the same text, whichever file it moved to.
///
/// Two append-only files per model: `.keys` (32-byte keys) and `.vecs` (rows of `dims`
/// little-endian f32, in the same order). Opening reads only the keys; a vector is read when
/// asked for, so a large cache costs little to open. Writers append under an exclusive lock,
/// after cutting both files back to their last complete row, so a crashed writer loses
/// entries, never pairs a key with the wrong vector.
#[derive(Debug, Default)]
pub struct EmbeddingCache {
    store: Option<Store>,
    /// Vectors computed in this run, not yet appended.
    fresh: std::collections::HashMap<[u8; 32], Vec<f32>>,
    added: Vec<[u8; 32]>,
    pub hits: usize,
}

#[derive(Debug)]
struct Store {
    keys_path: std::path::PathBuf,
    vecs_path: std::path::PathBuf,
    vecs: Option<std::fs::File>,
    /// Row number and the first bytes of the row's SHA-256, per key.
    rows: std::collections::HashMap<[u8; 32], (u64, [u8; ROW_DIGEST_LEN])>,
    dims: usize,
}

/// A `.keys` entry: the key, then the start of its row's SHA-256, so a damaged row is a miss.
const KEY_LEN: u64 = 32 + ROW_DIGEST_LEN as u64;
const ROW_DIGEST_LEN: usize = 8;

fn row_digest(row: &[u8]) -> [u8; ROW_DIGEST_LEN] {
    Sha256::digest(row)[..ROW_DIGEST_LEN].try_into().expect("8 bytes")
}

impl Store {
    fn row_len(&self) -> u64 {
        self.dims as u64 * 4
    }

    fn read(&self, (row, digest): (u64, [u8; ROW_DIGEST_LEN])) -> Option<Vec<f32>> {
        let file = self.vecs.as_ref()?;
        let mut buf = vec![0u8; self.row_len() as usize];
        read_exact_at(file, &mut buf, row * self.row_len()).ok()?;
        if row_digest(&buf) != digest {
            return None;
        }
        Some(buf.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _};
    let mut file = file;
    file.seek(std::io::SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

impl EmbeddingCache {
    /// Open (or start) the cache for one model in `dir`; `None` disables caching.
    pub fn open(dir: Option<&Path>, fingerprint: &[u8; 32], dims: usize) -> EmbeddingCache {
        let Some(dir) = dir else { return EmbeddingCache::default() };
        let name = format::text::hex(&fingerprint[..16]);
        let keys_path = dir.join(format!("embeddings-{name}-{dims}.v2.keys"));
        let vecs_path = dir.join(format!("embeddings-{name}-{dims}.v2.vecs"));
        let vecs = std::fs::File::open(&vecs_path).ok();
        let keys = if vecs.is_some() { std::fs::read(&keys_path).unwrap_or_default() } else { Vec::new() };
        let mut store = Store { keys_path, vecs_path, vecs, rows: Default::default(), dims };
        let complete_rows =
            store.vecs.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len() / store.row_len().max(1));
        for (row, entry) in keys.chunks_exact(KEY_LEN as usize).enumerate().take(complete_rows as usize) {
            let (key, digest) = entry.split_at(32);
            store.rows.insert(key.try_into().expect("32 bytes"), (row as u64, digest.try_into().expect("8 bytes")));
        }
        EmbeddingCache { store: Some(store), ..Default::default() }
    }

    fn key(fingerprint: &[u8; 32], text: &str) -> [u8; 32] {
        Sha256::new().chain_update(fingerprint).chain_update(text.as_bytes()).finalize().into()
    }

    fn lookup(&self, key: &[u8; 32]) -> Option<Vec<f32>> {
        if let Some(v) = self.fresh.get(key) {
            return Some(v.clone());
        }
        let store = self.store.as_ref()?;
        store.read(*store.rows.get(key)?)
    }

    /// Vectors for `texts`, embedding only the ones not cached, in batches.
    pub fn embed(&mut self, embedder: &Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedderError> {
        let fp = embedder.fingerprint();
        let keys: Vec<[u8; 32]> = texts.iter().map(|t| Self::key(&fp, t)).collect();
        let mut out: Vec<Option<Vec<f32>>> = keys.iter().map(|k| self.lookup(k)).collect();
        let mut missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        self.hits += texts.len() - missing.len();
        let mut seen = std::collections::HashSet::new();
        missing.retain(|&i| seen.insert(keys[i]));
        if !missing.is_empty() {
            let batch: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
            let vectors = embedder.embed_batch(&batch)?;
            if vectors.len() != batch.len() {
                return Err(EmbedderError::Embed(format!("{} vectors for {} texts", vectors.len(), batch.len())));
            }
            for (i, v) in missing.into_iter().zip(vectors) {
                if self.fresh.insert(keys[i], v).is_none() {
                    self.added.push(keys[i]);
                }
            }
        }
        Ok(keys.iter().zip(out.iter_mut()).map(|(k, v)| v.take().unwrap_or_else(|| self.fresh[k].clone())).collect())
    }

    /// Append what this run embedded; failures only cost speed next time.
    pub fn save(&self) {
        let Some(store) = &self.store else { return };
        if self.added.is_empty() {
            return;
        }
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = store.keys_path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let open = |path: &Path| std::fs::OpenOptions::new().create(true).append(true).open(path);
            let keys = open(&store.keys_path)?;
            keys.lock()?;
            let vecs = open(&store.vecs_path)?;
            let complete = (keys.metadata()?.len() / KEY_LEN).min(vecs.metadata()?.len() / store.row_len().max(1));
            keys.set_len(complete * KEY_LEN)?;
            vecs.set_len(complete * store.row_len())?;
            let mut rows = Vec::with_capacity(self.added.len() * store.row_len() as usize);
            let mut row_keys = Vec::with_capacity(self.added.len() * KEY_LEN as usize);
            for key in &self.added {
                let vector = &self.fresh[key];
                // A provider that answers with other dimensions is an error elsewhere; here it
                // must only never misalign rows.
                if vector.len() == store.dims {
                    let row: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    row_keys.extend_from_slice(key);
                    row_keys.extend_from_slice(&row_digest(&row));
                    rows.extend_from_slice(&row);
                }
            }
            (&vecs).write_all(&rows)?;
            (&keys).write_all(&row_keys)?;
            keys.unlock()
        })();
        if let Err(e) = result {
            tracing::warn!("could not append to the embedding cache {}: {e}", store.keys_path.display());
        }
    }
}
