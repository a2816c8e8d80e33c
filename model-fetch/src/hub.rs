//! A Hugging Face hub repository into the hub's own cache layout, so a model fetched here is
//! found by Python's `huggingface_hub` and by `hf-hub`, and one they fetched is found here:
//!
//! ```text
//! $HF_HUB_CACHE/models--ORG--NAME/blobs/<etag>                  the bytes, named by their ETag
//!                                 snapshots/<commit>/<file>     -> ../../blobs/<etag>
//!                                 refs/<revision>               the commit the revision named
//! ```
//!
//! The protocol is the hub's: `HEAD {endpoint}/{repo}/resolve/{revision}/{file}` without
//! following redirects tells the commit (`X-Repo-Commit`) and the blob's ETag (`X-Linked-Etag`
//! for large files, which is their SHA-256), then a GET fetches it. Blobs whose ETag is a
//! SHA-256 are checked against it; every blob is checked against its announced size.
//!
//! Why not the `hf-hub` crate: its 1.0 pulls reqwest 0.13, tokio and the Xet storage client,
//! and its older releases ureq 2, a second HTTP stack beside the ureq 3 lorec already has,
//! for the two requests per file this needs.

use std::path::{Path, PathBuf};

use crate::{FetchError, http, io_error};

/// The hub's address, its cache, and how to ask it.
#[derive(Clone)]
pub struct Hub {
    /// `HF_ENDPOINT`, else `https://huggingface.co`.
    pub endpoint: String,
    /// The hub cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`);
    /// `None` when the environment names none of these folders.
    pub cache: Option<PathBuf>,
    /// `HF_TOKEN` (else the token file `huggingface-cli login` writes), for gated or private
    /// repositories; sent only to the endpoint, never logged.
    token: Option<String>,
    /// `HF_HUB_OFFLINE`: only the cache is read.
    pub offline: bool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("endpoint", &self.endpoint)
            .field("cache", &self.cache)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .finish()
    }
}

/// What a HEAD of one file told.
struct FileMeta {
    commit: String,
    etag: String,
    size: Option<u64>,
    /// Where the bytes are: the resolve URL itself, or where it redirected to.
    location: String,
}

impl Hub {
    /// The hub as its own clients configure it from the environment.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = var("HF_HOME").map(PathBuf::from).or_else(|| Some(crate::user_cache_dir()?.join("huggingface")));
        let cache = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|home| home.join("hub")));
        let token = var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")).or_else(|| {
            let path = var("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join("token")))?;
            std::fs::read_to_string(path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true"));
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".to_string());
        Hub { endpoint: endpoint.trim_end_matches('/').to_string(), cache, token, offline }
    }

    /// A hub at `endpoint` with its cache in `cache`, no token, online.
    pub fn new(endpoint: &str, cache: &Path) -> Self {
        Hub {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache: Some(cache.to_path_buf()),
            token: None,
            offline: false,
        }
    }

    /// The snapshot folder holding `files` of `repo` at `revision`, fetched into the cache as
    /// needed. Offline, or when the hub cannot be reached, a complete cached snapshot of that
    /// revision is used (as the hub's clients do), with a warning in the second case.
    pub fn snapshot(&self, repo: &str, revision: &str, files: &[&str]) -> Result<PathBuf, FetchError> {
        let cache = self.cache.as_deref().ok_or_else(|| {
            FetchError::Invalid(format!(
                "no folder to keep {repo} in: set HF_HOME or HF_HUB_CACHE (neither XDG_CACHE_HOME nor HOME is set)"
            ))
        })?;
        let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
        if self.offline {
            return cached(&folder, revision, files).ok_or_else(|| FetchError::Offline {
                repo: repo.to_string(),
                revision: revision.to_string(),
                cache: cache.to_path_buf(),
            });
        }
        // The first file pins the commit; the rest are asked for at that commit, so a branch
        // moving mid-fetch cannot mix two versions of the model.
        let mut commit: Option<String> = None;
        for file in files {
            let at = commit.as_deref().unwrap_or(revision);
            let meta = match self.head(repo, at, file) {
                Ok(meta) => meta,
                Err(e @ FetchError::Http { .. }) => {
                    if let Some(dir) = cached(&folder, revision, files) {
                        tracing::warn!(repo, revision, error = %e, "the hub cannot be reached; using the cached snapshot");
                        return Ok(dir);
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            self.store(&folder, repo, file, &meta)?;
            commit.get_or_insert(meta.commit);
        }
        let commit = commit.ok_or_else(|| FetchError::Invalid("no model files were asked for".into()))?;
        if revision != commit {
            let refs = folder.join("refs").join(revision);
            write_atomically(&refs, commit.as_bytes())?;
        }
        tracing::info!(repo, revision, commit, "model snapshot ready");
        Ok(folder.join("snapshots").join(commit))
    }

    fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!("{}/{repo}/resolve/{}/{file}", self.endpoint, revision.replace('/', "%2F"))
    }

    fn head(&self, repo: &str, revision: &str, file: &str) -> Result<FileMeta, FetchError> {
        let mut url = self.resolve_url(repo, revision, file);
        let agent = http::agent(&url);
        // Renamed repositories answer with a redirect to the new name and no commit; follow a
        // few of those, never the CDN's, whose answer has no hub headers.
        for _ in 0..5 {
            let mut request = agent.head(&url).config().max_redirects(0).build();
            if let Some(token) = self.token.as_deref().filter(|_| url.starts_with(&self.endpoint)) {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            let response = request.call().map_err(http::transport(&url))?;
            let status = response.status().as_u16();
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let location = header("location").map(|l| http::join(&url, &l));
            match status {
                200..=399 if header("x-repo-commit").is_some() => {
                    let commit = header("x-repo-commit").unwrap_or_default();
                    let etag = header("x-linked-etag").or_else(|| header("etag")).unwrap_or_default();
                    let etag = etag.trim_start_matches("W/").trim_matches('"').to_string();
                    // A redirect's own Content-Length is its (empty) body's, not the file's.
                    let redirected = (300..400).contains(&status);
                    let size = header("x-linked-size")
                        .or_else(|| if redirected { None } else { header("content-length") })
                        .and_then(|s| s.parse().ok());
                    if !is_hex(&commit, 40)
                        || etag.is_empty()
                        || !etag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    {
                        return Err(FetchError::Invalid(format!(
                            "{url}: the answer names no usable commit ({commit:?}) or ETag ({etag:?}); is HF_ENDPOINT a Hugging Face hub?"
                        )));
                    }
                    let location = if redirected { location.unwrap_or_else(|| url.clone()) } else { url.clone() };
                    return Ok(FileMeta { commit, etag, size, location });
                }
                300..=399 => match location {
                    Some(next) => url = next,
                    None => break,
                },
                401 | 403 => {
                    return Err(FetchError::Status {
                        url,
                        status,
                        hint: format!(" ({repo} is gated or private, or does not exist: set HF_TOKEN)"),
                    });
                }
                404 => {
                    return Err(FetchError::Status {
                        url,
                        status,
                        hint: format!(" (no {file} in {repo} at revision {revision})"),
                    });
                }
                200..=299 => {
                    return Err(FetchError::Invalid(format!(
                        "{url}: the answer has no X-Repo-Commit; is HF_ENDPOINT a Hugging Face hub?"
                    )));
                }
                _ => return Err(FetchError::Status { url, status, hint: String::new() }),
            }
        }
        Err(FetchError::Invalid(format!("{url}: too many redirects")))
    }

    /// The blob (downloaded unless the cache has it) and the snapshot's link to it.
    fn store(&self, folder: &Path, repo: &str, file: &str, meta: &FileMeta) -> Result<(), FetchError> {
        let blobs = folder.join("blobs");
        let blob = blobs.join(&meta.etag);
        if !blob.is_file() {
            std::fs::create_dir_all(&blobs).map_err(io_error(&blobs))?;
            let bearer = self.token.as_deref().filter(|_| meta.location.starts_with(&self.endpoint));
            let agent = http::agent(&meta.location);
            let (incoming, sha256, size) = http::download(&agent, &meta.location, bearer, &blobs)?;
            let what = format!("{file} of {repo} at {}", meta.commit);
            if let Some(expected) = meta.size.filter(|&expected| expected != size) {
                return Err(FetchError::Size { what, got: size, expected });
            }
            // Large (LFS) files are named by their SHA-256; small ones by a git blob id.
            if is_hex(&meta.etag, 64) && sha256 != meta.etag {
                return Err(FetchError::Digest { what, got: sha256, expected: meta.etag.clone() });
            }
            incoming.persist(&blob).map_err(|e| io_error(&blob)(e.error))?;
        }
        let link = folder.join("snapshots").join(&meta.commit).join(file);
        let depth = Path::new(file).components().count();
        let target: PathBuf = std::iter::repeat_n("..", depth + 1).collect::<PathBuf>().join("blobs").join(&meta.etag);
        link_atomically(&target, &link)
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The cached snapshot of `revision` when it holds every file.
fn cached(folder: &Path, revision: &str, files: &[&str]) -> Option<PathBuf> {
    let commit = if is_hex(revision, 40) {
        revision.to_string()
    } else {
        std::fs::read_to_string(folder.join("refs").join(revision)).ok()?.trim().to_string()
    };
    if !is_hex(&commit, 40) {
        return None;
    }
    let dir = folder.join("snapshots").join(commit);
    files.iter().all(|f| dir.join(f).is_file()).then_some(dir)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    let mut file = tempfile::Builder::new().prefix(".ref-").tempfile_in(parent).map_err(io_error(parent))?;
    std::io::Write::write_all(&mut file, bytes).map_err(io_error(path))?;
    file.persist(path).map_err(|e| io_error(path)(e.error))?;
    Ok(())
}

/// A symlink made under a temporary name and renamed over `link`, so a reader never sees a
/// missing or half-made one. Where symlinks do not exist, a copy of the blob.
fn link_atomically(target: &Path, link: &Path) -> Result<(), FetchError> {
    let parent = link.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    let temp =
        parent.join(format!(".link-{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""));
    let _ = std::fs::remove_file(&temp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, &temp).map_err(io_error(&temp))?;
    #[cfg(not(unix))]
    std::fs::copy(parent.join(target), &temp).map_err(io_error(&temp))?;
    std::fs::rename(&temp, link).map_err(io_error(link))
}

#[cfg(test)]
mod tests;
