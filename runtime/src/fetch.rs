//! Artifacts named by URL: `lore serve https://HOST/PATH#sha256=HEX` downloads into a
//! content-addressed cache (`CACHE/sha256/HEX.lore`), checks the digest before the file is
//! ever mapped, and reuses the cached file on restart (hashed again first). Plain `http://` is
//! used for loopback addresses only, unless `LORE_REGISTRY_INSECURE` is set.
//!
//! `oci://REGISTRY/REPO@sha256:DIGEST` and `oci://REGISTRY/REPO:TAG` (resolved to a digest,
//! which is logged) fetch the artifact layer of a manifest published by `lorec publish`. The
//! manifest is cached too (`CACHE/oci/HEX.json`, checked against its digest), so a restart by
//! digest needs no registry; the layer shares the `sha256/` cache with `https://`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}: give the artifact's digest as URL#sha256=HEX (64 hex digits); nothing unverified is served")]
    NoDigest(String),
    #[error("{0}: plain http is only used for loopback addresses; use https, or set LORE_REGISTRY_INSECURE")]
    Insecure(String),
    #[error("{url}: digest mismatch: expected sha256:{expected}, the download is sha256:{found}; nothing was kept")]
    Mismatch { url: String, expected: String, found: String },
    #[error("{url}: {message}")]
    Download { url: String, message: String },
    #[error("cache {path}: {source}")]
    Cache { path: String, source: std::io::Error },
    #[cfg(feature = "oci")]
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    #[error("{0}: this lore was built without OCI support (the `oci` feature); use https://URL#sha256=HEX or a path")]
    Unsupported(String),
}

impl FetchError {
    /// Whether the fault is in what the caller wrote (a bad reference, a digest that does not
    /// match, something that is not a lore artifact) rather than in the network or the disk.
    pub fn is_bad_input(&self) -> bool {
        match self {
            FetchError::NoDigest(_)
            | FetchError::Insecure(_)
            | FetchError::Mismatch { .. }
            | FetchError::Unsupported(_) => true,
            FetchError::Download { .. } | FetchError::Cache { .. } => false,
            #[cfg(feature = "oci")]
            FetchError::Oci(e) => matches!(
                e,
                oci::OciError::Reference(_)
                    | oci::OciError::Insecure(_)
                    | oci::OciError::Mismatch { .. }
                    | oci::OciError::NotAnArtifact { .. }
                    | oci::OciError::NotFound { .. }
            ),
        }
    }
}

/// Whether `text` names an artifact by URL rather than by path.
pub fn is_url(text: &str) -> bool {
    text.starts_with("https://") || text.starts_with("http://") || text.starts_with("oci://")
}

/// The default cache: `$XDG_CACHE_HOME/lore`, else `~/.cache/lore`, else the temp folder's.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("lore")
}

/// Create `dir` and its missing parents readable by this user only (0700): the default cache
/// may sit in a shared temporary folder. Folders that exist keep their permissions.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format::text::hex(&hasher.finalize()))
}

/// The local path to serve: `text` itself when it is a path; for a URL, the verified file in
/// the cache, downloading it when the cache lacks it.
pub fn resolve(text: &str, cache: &Path, insecure: bool) -> Result<PathBuf, FetchError> {
    if !is_url(text) {
        return Ok(PathBuf::from(text));
    }
    if text.starts_with("oci://") {
        #[cfg(feature = "oci")]
        return resolve_oci(text, cache, insecure);
        #[cfg(not(feature = "oci"))]
        return Err(FetchError::Unsupported(text.to_string()));
    }
    let (url, fragment) = text.split_once('#').unwrap_or((text, ""));
    let expected = fragment
        .strip_prefix("sha256=")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| FetchError::NoDigest(text.to_string()))?;
    if url.starts_with("http://") && !insecure && !format::text::is_loopback_url(url) {
        return Err(FetchError::Insecure(url.to_string()));
    }
    let dir = cache.join("sha256");
    let cache_err = |source| FetchError::Cache { path: dir.display().to_string(), source };
    create_private_dir(&dir).map_err(cache_err)?;
    let path = dir.join(format!("{expected}.lore"));
    if path.exists() {
        match file_sha256(&path) {
            Ok(found) if found == expected => {
                tracing::info!(url, digest = %format!("sha256:{expected}"), path = %path.display(), "artifact from the cache");
                return Ok(path);
            }
            _ => {
                tracing::warn!(path = %path.display(), "a cached artifact does not match its name; fetching it again");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    download(url, &expected, &dir, &path)?;
    tracing::info!(url, digest = %format!("sha256:{expected}"), path = %path.display(), "artifact fetched and verified");
    Ok(path)
}

#[cfg(feature = "oci")]
fn resolve_oci(text: &str, cache: &Path, insecure: bool) -> Result<PathBuf, FetchError> {
    let reference = oci::OciRef::parse(text)?;
    let blobs = cache.join("sha256");
    let manifests = cache.join("oci");
    for dir in [&blobs, &manifests] {
        create_private_dir(dir).map_err(|source| FetchError::Cache { path: dir.display().to_string(), source })?;
    }
    if let Some(digest) = reference.digest()
        && let Some(path) = cached_by_manifest(&reference, digest, &manifests, &blobs)
    {
        tracing::info!(reference = %reference, digest, path = %path.display(), "artifact from the cache");
        return Ok(path);
    }
    let registry = oci::Registry::new(&reference, insecure)?;
    let fetched = registry.fetch_manifest(&reference)?;
    if reference.digest().is_none() {
        tracing::info!(reference = %reference, digest = %fetched.manifest_digest, "tag resolved");
    }
    let layer_hex = fetched.layer_digest.trim_start_matches("sha256:");
    let path = blobs.join(format!("{layer_hex}.lore"));
    let cached = path.exists() && file_sha256(&path).is_ok_and(|found| found == layer_hex);
    if !cached {
        registry.download_layer(&reference, &fetched, &path)?;
        tracing::info!(reference = %reference, digest = %fetched.manifest_digest, bytes = fetched.layer_size, path = %path.display(), "artifact fetched and verified");
    } else {
        tracing::info!(reference = %reference, digest = %fetched.manifest_digest, path = %path.display(), "artifact from the cache");
    }
    // Named by the SHA-256 of the bytes themselves (the registry's header may use another
    // algorithm), so a restart by a sha256 digest finds it.
    let manifest_digest = oci::sha256_digest(&fetched.manifest);
    let manifest_path = manifests.join(format!("{}.json", manifest_digest.trim_start_matches("sha256:")));
    if !manifest_path.exists() {
        let tmp = format::fsio::unique_temp(&manifests, "manifest");
        let written = std::fs::write(&tmp, &fetched.manifest).and_then(|()| std::fs::rename(&tmp, &manifest_path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %manifest_path.display(), "cannot cache the manifest ({e}); a restart will ask the registry again");
        }
    }
    Ok(path)
}

#[cfg(feature = "oci")]
/// The cached artifact of manifest `digest`, when both the manifest and its layer are in the
/// cache and match their digests.
fn cached_by_manifest(reference: &oci::OciRef, digest: &str, manifests: &Path, blobs: &Path) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    let manifest = std::fs::read(manifests.join(format!("{hex}.json"))).ok()?;
    if oci::sha256_digest(&manifest) != digest {
        return None;
    }
    let (layer, _) = oci::artifact_layer(reference, &manifest).ok()?;
    let layer_hex = layer.strip_prefix("sha256:")?;
    let path = blobs.join(format!("{layer_hex}.lore"));
    (file_sha256(&path).ok()? == layer_hex).then_some(path)
}

fn download(url: &str, expected: &str, dir: &Path, path: &Path) -> Result<(), FetchError> {
    let failed = |message: String| FetchError::Download { url: url.to_string(), message };
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(600)))
        .http_status_as_error(false)
        .user_agent(concat!("lore/", env!("CARGO_PKG_VERSION")));
    if format::text::is_loopback_url(url) {
        config = config.proxy(None);
    }
    let agent: ureq::Agent = config.build().into();
    let response = agent.get(url).call().map_err(|e| failed(e.to_string()))?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(failed(format!("the server answered {status}")));
    }
    let tmp = format::fsio::unique_temp(dir, expected);
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(|e| failed(format!("cannot write {}: {e}", tmp.display())))?;
        let mut body = response.into_body().into_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = body.read(&mut buf).map_err(|e| failed(format!("the download broke off: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|e| failed(format!("cannot write {}: {e}", tmp.display())))?;
        }
        let found = format::text::hex(&hasher.finalize());
        if found != expected {
            return Err(FetchError::Mismatch { url: url.to_string(), expected: expected.to_string(), found });
        }
        file.sync_all().map_err(|e| failed(format!("cannot write {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(|e| failed(format!("cannot move into the cache: {e}")))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
