//! Loading a Model2Vec model directory (`tokenizer.json`, `model.safetensors`, `config.json`)
//! into the [`ModelTable`] that gets stored in every artifact.

use std::path::Path;

use format::tokenizer_json::TokenizerJson;
use format::{EmbedderModel, ModelTable, TableRows};
use half::f16;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// A loaded model: its table and where it came from.
#[derive(Debug)]
pub struct Model {
    pub id: String,
    pub weights_sha256: [u8; 32],
    /// SHA-256 of `tokenizer.json` and `config.json`, which shape vectors too.
    pub settings_sha256: [u8; 32],
    /// Always `EmbedderModel::Static`: kept in the model section's own type so the section
    /// serialises straight from here, without copying the table.
    section: EmbedderModel,
}

impl Model {
    pub fn table(&self) -> &ModelTable {
        match &self.section {
            EmbedderModel::Static(table) => table,
            _ => unreachable!("`load` only ever builds a static table"),
        }
    }

    /// The model section to store in an artifact.
    pub fn section(&self) -> &EmbedderModel {
        &self.section
    }

    /// Keep the table's rows as int8 from now on, for embedding and in the artifact.
    pub fn quantize_rows(&mut self) {
        if let EmbedderModel::Static(table) = &mut self.section {
            table.quantize_rows();
        }
    }

    /// Names this model for caches: weights, tokenizer and config, and whether the rows are
    /// stored as f32 or int8 (the vectors differ).
    pub fn fingerprint(&self) -> [u8; 32] {
        let rows: &[u8] = match &self.table().rows {
            TableRows::F32(_) => b"rows:f32",
            TableRows::I8 { .. } => b"rows:i8",
        };
        Sha256::new()
            .chain_update(self.weights_sha256)
            .chain_update(self.settings_sha256)
            .chain_update(rows)
            .finalize()
            .into()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|error| ModelError::Io { path: path.display().to_string(), error })
}

fn invalid(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Invalid { path: path.display().to_string(), message: message.into() }
}

/// What the loader reads of a Model2Vec `config.json`: whether vectors are L2-normalised.
#[derive(serde::Deserialize)]
struct ModelConfig {
    normalize: Option<bool>,
}

/// Load a Model2Vec model (BERT WordPiece tokenizer, f32 or f16 embeddings, optional
/// per-token `weights` and `mapping` tensors) from a local directory.
pub fn load(dir: &Path) -> Result<Model, ModelError> {
    let tok_path = dir.join("tokenizer.json");
    let tok_bytes = read(&tok_path)?;
    let tok = TokenizerJson::parse(&tok_bytes).map_err(|m| invalid(&tok_path, m))?;
    let vocab = format::canonical_ids(tok.vocab);
    let mut lengths: Vec<usize> = vocab.keys().map(|k| k.chars().count()).collect();
    lengths.sort_unstable();
    let median = lengths.get(lengths.len() / 2).copied().unwrap_or(1);

    let cfg_path = dir.join("config.json");
    let cfg_bytes = std::fs::read(&cfg_path).ok();
    let normalize = cfg_bytes
        .as_ref()
        .and_then(|bytes| serde_json::from_slice::<ModelConfig>(bytes).ok())
        .and_then(|c| c.normalize)
        .unwrap_or(true);
    // Vectors depend on the tokenizer and the config as much as on the weights.
    let settings_sha256: [u8; 32] = Sha256::new()
        .chain_update(&tok_bytes)
        .chain_update([0])
        .chain_update(cfg_bytes.as_deref().unwrap_or(b"absent"))
        .finalize()
        .into();

    let st_path = dir.join("model.safetensors");
    let bytes = read(&st_path)?;
    let weights_sha256: [u8; 32] = Sha256::digest(&bytes).into();
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| invalid(&st_path, e.to_string()))?;
    let emb = tensors
        .tensor("embeddings")
        .or_else(|_| tensors.tensor("0"))
        .map_err(|_| invalid(&st_path, "no `embeddings` tensor"))?;
    let [rows, dims] = emb.shape()[..] else {
        return Err(invalid(&st_path, "the embeddings tensor is not 2-D"));
    };
    let token_weights =
        tensors.tensor("weights").ok().map(|t| to_f32(&t)).transpose().map_err(|m| invalid(&st_path, m))?;
    let mapping = tensors.tensor("mapping").ok().map(|t| to_i64(&t)).transpose().map_err(|m| invalid(&st_path, m))?;
    let vocab_size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
    let mut embeddings = vec![0f32; vocab_size * dims];
    for id in 0..vocab_size {
        let row = match &mapping {
            Some(m) => m.get(id).and_then(|&r| usize::try_from(r).ok()).unwrap_or(id),
            None => id,
        };
        if row >= rows {
            if mapping.is_some() || id < rows {
                return Err(invalid(&st_path, format!("token {id} maps to row {row} of {rows}")));
            }
            continue;
        }
        let scale = token_weights.as_ref().and_then(|w| w.get(id).copied()).unwrap_or(1.0);
        let dst = &mut embeddings[id * dims..(id + 1) * dims];
        read_f32_into(&emb, row * dims, dst).map_err(|m| invalid(&st_path, m))?;
        if scale != 1.0 {
            dst.iter_mut().for_each(|x| *x *= scale);
        }
    }
    Ok(Model {
        id: model_id(dir),
        weights_sha256,
        settings_sha256,
        section: EmbedderModel::Static(ModelTable {
            vocab,
            unk_id: tok.unk_id,
            continuing_prefix: tok.continuing_prefix,
            max_input_chars_per_word: tok.max_input_chars_per_word as u32,
            lowercase: tok.lowercase,
            strip_accents: tok.strip_accents,
            max_tokens: 512,
            truncate_chars: (512 * median) as u32,
            normalize,
            dims: dims as u32,
            rows: TableRows::F32(embeddings),
        }),
    })
}

/// A prepared table as the model cache stores it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CachedModel {
    weights_sha256: [u8; 32],
    settings_sha256: [u8; 32],
    section: EmbedderModel,
}

/// Bump when `load` or the table layout changes, so stale prepared tables miss.
const MODEL_CACHE_VERSION: u32 = 2;

/// The model's display name: its folder's, or potion's hub id.
fn model_id(dir: &Path) -> String {
    let id = model_fetch::model_name(dir);
    if id == "potion-base-8M" { "minishlab/potion-base-8M".to_string() } else { id }
}

/// [`load`], then int8 rows when `quantize`, through a cache in `cache_dir` of the prepared
/// table. The key is the model files' identity on disk (canonical path, size, modification
/// time, inode), as make and git judge files, so a rebuild skips reading, hashing, converting
/// and quantising tens of megabytes of weights. A damaged entry is a miss.
pub fn load_prepared(dir: &Path, quantize: bool, cache_dir: Option<&Path>) -> Result<Model, ModelError> {
    let prepare = || {
        let mut model = load(dir)?;
        if quantize {
            model.quantize_rows();
        }
        Ok(model)
    };
    let Some((cache, key)) = cache_dir.zip(identity(dir, quantize)) else {
        return prepare();
    };
    let entry = cache.join(format!("model-{key}.bin"));
    if let Some(payload) = crate::read_checked_entry(&entry)
        && let Ok(mut cached) = rkyv::from_bytes::<CachedModel, rkyv::rancor::Error>(&payload)
        && let EmbedderModel::Static(table) = &mut cached.section
        && format::embed::TokenTable::rows_consistent(&*table)
    {
        // Read back in table order; refilled as a fresh load fills it, so the artifact's bytes
        // do not depend on whether the model came from the cache.
        table.vocab = format::canonical_ids(std::mem::take(&mut table.vocab));
        return Ok(Model {
            id: model_id(dir),
            weights_sha256: cached.weights_sha256,
            settings_sha256: cached.settings_sha256,
            section: cached.section,
        });
    }
    let model = prepare()?;
    // A file that changed while it was read must not be cached under its old identity.
    if identity(dir, quantize).as_ref() != Some(&key) {
        return Ok(model);
    }
    let cached = CachedModel {
        weights_sha256: model.weights_sha256,
        settings_sha256: model.settings_sha256,
        section: model.section,
    };
    if let Ok(bytes) = rkyv::to_bytes::<rkyv::rancor::Error>(&cached) {
        let written =
            std::fs::create_dir_all(cache).and_then(|()| crate::write_replacing(&entry, &crate::checked_entry(&bytes)));
        if let Err(e) = written {
            tracing::warn!("could not cache the prepared model in {}: {e}", entry.display());
        }
    }
    Ok(Model {
        id: model.id,
        weights_sha256: cached.weights_sha256,
        settings_sha256: cached.settings_sha256,
        section: cached.section,
    })
}

/// The model files' identity on disk, as hex; `None` when a file cannot be examined.
fn identity(dir: &Path, quantize: bool) -> Option<String> {
    let mut hasher = Sha256::new().chain_update(MODEL_CACHE_VERSION.to_le_bytes()).chain_update([u8::from(quantize)]);
    hasher.update(dir.canonicalize().ok()?.to_string_lossy().as_bytes());
    for name in ["tokenizer.json", "model.safetensors", "config.json"] {
        hasher.update(name.as_bytes());
        match std::fs::metadata(dir.join(name)) {
            Ok(meta) => {
                hasher.update(meta.len().to_le_bytes());
                let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
                hasher.update(modified.as_nanos().to_le_bytes());
                #[cfg(unix)]
                {
                    // The change time moves on every write, even one that restores the mtime.
                    use std::os::unix::fs::MetadataExt as _;
                    hasher.update(meta.ino().to_le_bytes());
                    hasher.update(meta.dev().to_le_bytes());
                    hasher.update(meta.ctime().to_le_bytes());
                    hasher.update(meta.ctime_nsec().to_le_bytes());
                }
            }
            Err(_) if name == "config.json" => hasher.update(b"absent"),
            Err(_) => return None,
        }
    }
    Some(format::text::hex(&hasher.finalize()[..16]))
}

/// Convert `dst.len()` elements of a float tensor, from element `start`, to f32, without an
/// intermediate copy of the whole tensor.
fn read_f32_into(tensor: &TensorView<'_>, start: usize, dst: &mut [f32]) -> Result<(), String> {
    let width = match tensor.dtype() {
        Dtype::F16 => 2,
        Dtype::F32 => 4,
        Dtype::F64 => 8,
        other => return Err(format!("unsupported tensor dtype {other}")),
    };
    let bytes = tensor
        .data()
        .get(start * width..(start + dst.len()) * width)
        .ok_or_else(|| format!("element {start} lies outside the tensor"))?;
    for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(width)) {
        *d = match width {
            2 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
            4 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            _ => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        };
    }
    Ok(())
}

/// A whole float tensor (the per-token `weights`) as f32.
fn to_f32(tensor: &TensorView<'_>) -> Result<Vec<f32>, String> {
    let mut out = vec![0.0; tensor.shape().iter().product()];
    read_f32_into(tensor, 0, &mut out)?;
    Ok(out)
}

/// A whole integer tensor (the token-to-row `mapping`) as i64.
fn to_i64(tensor: &TensorView<'_>) -> Result<Vec<i64>, String> {
    let data = tensor.data();
    match tensor.dtype() {
        Dtype::I32 => {
            Ok(data.chunks_exact(4).map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect())
        }
        Dtype::I64 => Ok(data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()),
        other => Err(format!("unsupported mapping dtype {other}")),
    }
}

#[cfg(test)]
mod tests {
    use format::embed::{TokenTable, embed, token_ids};
    use format::wordpiece::tokenize;

    /// Our tokenizer and pooling against ids and vectors produced by the Python `tokenizers`
    /// and `model2vec` libraries (`tests/data/potion_reference.json`).
    #[test]
    fn potion_matches_the_reference_implementation() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("../artifacts/models/potion-base-8M");
        assert!(dir.join("model.safetensors").exists(), "run `cargo xtask fetch-model` first");
        let model = super::load(&dir).expect("model loads");
        let fixture: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("tests/data/potion_reference.json")).expect("fixture"))
                .expect("fixture is JSON");
        assert_eq!(fixture["model_safetensors_sha256"].as_str().map(str::to_string), Some(hex(&model.weights_sha256)));
        let cases = fixture["cases"].as_array().expect("cases");
        assert!(cases.len() >= 40);
        let table = model.table();
        for case in cases {
            let text = case["text"].as_str().expect("text");
            let want: Vec<u32> =
                case["ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect();
            let got = tokenize(text, &table.config(), |p| table.lookup(p));
            assert_eq!(got, want, "token ids differ for {text:?}");
            assert_eq!(token_ids(table, text).len() as u64, case["n_pooled"].as_u64().expect("n_pooled"), "{text:?}");
            let vector = embed(table, text);
            for (i, (a, b)) in vector.iter().zip(case["embedding"].as_array().expect("embedding")).enumerate() {
                let b = b.as_f64().expect("float") as f32;
                assert!((a - b).abs() < 1e-5, "{text:?} dim {i}: {a} vs {b}");
            }
        }
    }

    /// The int8 table (`--vectors int8`, the default) embeds every reference text within a
    /// cosine of 0.999 of the f32 reference vectors, and names itself apart for caches.
    #[test]
    fn int8_rows_stay_close_to_the_reference() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut model = super::load(&root.join("../artifacts/models/potion-base-8M")).expect("model loads");
        let f32_fingerprint = model.fingerprint();
        model.quantize_rows();
        assert!(matches!(model.table().rows, format::TableRows::I8 { .. }));
        assert_ne!(model.fingerprint(), f32_fingerprint);
        let fixture: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("tests/data/potion_reference.json")).expect("fixture"))
                .expect("fixture is JSON");
        for case in fixture["cases"].as_array().expect("cases") {
            let text = case["text"].as_str().expect("text");
            let want: Vec<f32> = case["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|b| b.as_f64().expect("float") as f32)
                .collect();
            if want.iter().all(|&x| x == 0.0) {
                continue;
            }
            let got = embed(model.table(), text);
            let cosine: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum::<f32>()
                / (got.iter().map(|a| a * a).sum::<f32>().sqrt() * want.iter().map(|b| b * b).sum::<f32>().sqrt());
            assert!(cosine > 0.999, "{text:?}: cosine {cosine}");
        }
    }

    use format::text::hex;

    /// f16 embeddings scaled by per-token f32 weights, as Model2Vec stores smaller models, load
    /// exactly: every f16 value but NaN has one f32 equal to it.
    #[test]
    fn f16_embeddings_and_token_weights_load_exactly() {
        use safetensors::Dtype;
        use safetensors::tensor::TensorView;

        let dir = std::env::temp_dir().join(format!("lore-f16-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let tokenizer = r#"{"normalizer": {"type": "BertNormalizer", "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"[UNK]": 0, "a": 1, "b": 2}}}"#;
        std::fs::write(dir.join("tokenizer.json"), tokenizer).expect("write");
        // 1, -2, the smallest subnormal, infinity, 0 and -0.
        let halves: [u16; 6] = [0x3c00, 0xc000, 0x0001, 0x7c00, 0x0000, 0x8000];
        let embeddings: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        let weights: Vec<u8> = [1.0f32, 0.5, 2.0].iter().flat_map(|w| w.to_le_bytes()).collect();
        let file = safetensors::serialize(
            [
                ("embeddings", TensorView::new(Dtype::F16, vec![3, 2], &embeddings).expect("view")),
                ("weights", TensorView::new(Dtype::F32, vec![3], &weights).expect("view")),
            ],
            None,
        )
        .expect("serialise");
        std::fs::write(dir.join("model.safetensors"), file).expect("write");
        let model = super::load(&dir);
        std::fs::remove_dir_all(&dir).expect("clean up");
        let model = model.expect("the model loads");
        let format::TableRows::F32(rows) = &model.table().rows else { panic!("f32 rows") };
        let want = [1.0f32, -2.0, 2f32.powi(-25), f32::INFINITY, 0.0, -0.0];
        assert_eq!(rows.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.map(f32::to_bits));
    }
}
