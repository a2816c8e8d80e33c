//! lore artifacts as OCI artifacts, the convention of ORAS and Helm charts: one layer of
//! media type [`LAYER_MEDIA_TYPE`] holding the sealed file, the empty config, an
//! `artifactType` and annotations. Push, resolve a tag, pull by digest and move a tag, over
//! `oci-client` (the ORAS project's client), behind a synchronous API for `lorec` and `lore`.
//!
//! Plain HTTP is used for registries on loopback addresses (as Docker does for 127.0.0.1) and
//! elsewhere only when the caller says `insecure`. Credentials come from
//! `LORE_REGISTRY_USERNAME`/`LORE_REGISTRY_PASSWORD`, else from `docker login`'s or Podman's
//! auth file; they are never printed.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

/// The media type of the one layer: a sealed lore artifact, byte for byte.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.lore.artifact.v1";
/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.lore.knowledge.v1";
/// The OCI empty descriptor's media type and content, used as the config.
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_CONFIG: &[u8] = b"{}";
/// Attempts for a transient failure (connection error, 429, 5xx), with doubling backoff.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "{0}: not an OCI reference; write oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST"
    )]
    Reference(String),
    #[error(
        "{0}: plain http is only used for loopback registries; use an https registry, or --insecure (LORE_REGISTRY_INSECURE)"
    )]
    Insecure(String),
    #[error("{reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("{reference}: not found in the registry ({message})")]
    NotFound { reference: String, message: String },
    #[error(
        "{reference}: the registry refused the credentials ({message}); set LORE_REGISTRY_USERNAME and LORE_REGISTRY_PASSWORD or run `docker login`"
    )]
    Unauthorized { reference: String, message: String },
    #[error("{reference}: digest mismatch: expected {expected}, the registry sent {found}; nothing was kept")]
    Mismatch { reference: String, expected: String, found: String },
    #[error("{reference}: after the push the tag names {found}, not {expected}: another publisher moved it meanwhile")]
    Moved { reference: String, expected: String, found: String },
    #[error("{reference}: not a lore artifact (artifactType {found:?}, layers {layers:?})")]
    NotAnArtifact { reference: String, found: Option<String>, layers: Vec<String> },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// A parsed `oci://REGISTRY/REPOSITORY(:TAG|@sha256:HEX)`.
#[derive(Debug, Clone, PartialEq)]
pub struct OciRef {
    reference: Reference,
}

impl OciRef {
    /// Parse `text`, with or without the `oci://` scheme. The registry must be explicit
    /// (no implicit Docker Hub) and so must the tag or digest (no implicit `latest`).
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let bad = || OciError::Reference(text.to_string());
        let rest = text.strip_prefix("oci://").unwrap_or(text);
        let (host, path) = rest.split_once('/').ok_or_else(bad)?;
        let explicit_host = host.contains('.') || host.contains(':') || host == "localhost";
        let last = path.rsplit('/').next().unwrap_or(path);
        if !explicit_host || path.is_empty() || !(last.contains(':') || last.contains('@')) {
            return Err(bad());
        }
        let reference = Reference::from_str(rest).map_err(|_| bad())?;
        if reference.registry() != host {
            return Err(bad());
        }
        Ok(Self { reference })
    }

    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    pub fn repository(&self) -> &str {
        self.reference.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.reference.tag()
    }

    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// The same repository at `tag`.
    pub fn at_tag(&self, tag: &str) -> Self {
        let reference = Reference::with_tag(self.registry().into(), self.repository().into(), tag.into());
        Self { reference }
    }

    /// Whether the registry is on a loopback address, where plain HTTP is used.
    pub fn is_loopback(&self) -> bool {
        let host = self.registry();
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}/{}", self.registry(), self.repository())?;
        if let Some(tag) = self.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = self.digest() {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// What a push left in the registry.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `sha256:…` of the manifest: what `lore serve oci://…@DIGEST` takes.
    pub manifest_digest: String,
    /// `sha256:…` of the layer: the artifact file itself.
    pub layer_digest: String,
}

/// A manifest fetched and checked against its digest.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub layer_digest: String,
    pub layer_size: u64,
}

/// A client for one registry, with its credentials and its own small async runtime.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("auth", &self.auth).finish_non_exhaustive()
    }
}

impl Registry {
    /// A client for `reference`'s registry: plain HTTP on loopback or when `insecure`.
    pub fn new(reference: &OciRef, insecure: bool) -> Result<Self, OciError> {
        install_crypto_provider();
        let protocol = if reference.is_loopback() || insecure {
            ClientProtocol::HttpsExcept(vec![reference.registry().to_string()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            use_monolithic_push: true,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("lore/", env!("CARGO_PKG_VERSION")),
            platform_resolver: None,
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| registry_error(reference, &e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| OciError::Io { path: "the OCI client's runtime".into(), source })?;
        Ok(Self { client, auth: credentials(reference.registry()), runtime })
    }

    /// Run `make()`'s future to completion on this client's runtime, from a thread of its own
    /// so that callers inside another runtime (the server's hot swap) can use it too; transient
    /// failures are retried with backoff.
    fn run<T: Send, F: Future<Output = Result<T, OciDistributionError>>>(
        &self,
        reference: &OciRef,
        make: impl Fn() -> F + Sync,
    ) -> Result<T, OciError> {
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match self.runtime.block_on(make()) {
                        Ok(value) => return Ok(value),
                        Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                            tracing::warn!(reference = %reference, attempt, error = %e, "registry request failed; retrying");
                            std::thread::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1));
                        }
                        Err(e) => return Err(classify(reference, &e, attempt)),
                    }
                }
            });
            worker.join().unwrap_or_else(|_| {
                Err(OciError::Registry { reference: reference.to_string(), message: "the OCI client panicked".into() })
            })
        })
    }

    /// Push `artifact` as the one layer of a new manifest tagged `reference`'s tag; returns
    /// the manifest digest, checked against what the registry reports for the tag.
    pub fn push(
        &self,
        reference: &OciRef,
        artifact: Vec<u8>,
        title: &str,
        annotations: BTreeMap<String, String>,
    ) -> Result<Pushed, OciError> {
        let Some(tag) = reference.tag() else {
            return Err(OciError::Reference(format!("{reference} (publish needs a tag)")));
        };
        let layer = ImageLayer::new(
            artifact,
            LAYER_MEDIA_TYPE.to_string(),
            Some(BTreeMap::from([("org.opencontainers.image.title".to_string(), title.to_string())])),
        );
        let config = Config::new(EMPTY_CONFIG.to_vec(), EMPTY_MEDIA_TYPE.to_string(), None);
        let mut manifest =
            OciImageManifest::build(std::slice::from_ref(&layer), &config, Some(annotations).filter(|a| !a.is_empty()));
        manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_string());
        manifest.artifact_type = Some(ARTIFACT_TYPE.to_string());
        let layer_digest = manifest.layers[0].digest.clone();
        let body = serde_json::to_vec(&manifest).map_err(|e| registry_error(reference, &e))?;
        let manifest_digest = sha256_digest(&body);
        let target = reference.at_tag(tag);
        let content_type = http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE);
        self.run(reference, || async {
            self.client.store_auth_if_needed(target.registry(), &self.auth).await;
            let image = &target.reference;
            self.client.push_blob(image, layer.data.clone(), &layer_digest).await?;
            self.client.push_blob(image, config.data.clone(), &manifest.config.digest).await?;
            self.client.push_manifest_raw(image, body.clone(), content_type.clone()).await
        })?;
        let reported = self.resolve(&target)?;
        if reported != manifest_digest {
            return Err(OciError::Moved { reference: target.to_string(), expected: manifest_digest, found: reported });
        }
        Ok(Pushed { manifest_digest, layer_digest })
    }

    /// The manifest digest `reference` names now: its own digest, or its tag's, as the
    /// registry reports it.
    pub fn resolve(&self, reference: &OciRef) -> Result<String, OciError> {
        self.run(reference, || self.client.fetch_manifest_digest(&reference.reference, &self.auth))
    }

    /// The manifest `reference` names, checked against its digest, and its artifact layer.
    pub fn fetch_manifest(&self, reference: &OciRef) -> Result<Fetched, OciError> {
        let (manifest, manifest_digest) = self.run(reference, || {
            self.client.pull_manifest_raw(&reference.reference, &self.auth, &[OCI_IMAGE_MEDIA_TYPE])
        })?;
        if let Some(expected) = reference.digest()
            && sha256_digest(&manifest) != expected
        {
            return Err(OciError::Mismatch {
                reference: reference.to_string(),
                expected: expected.to_string(),
                found: sha256_digest(&manifest),
            });
        }
        let (layer_digest, layer_size) = artifact_layer(reference, &manifest)?;
        Ok(Fetched { manifest_digest, manifest: manifest.to_vec(), layer_digest, layer_size })
    }

    /// Download the artifact layer of `fetched` into `dest` through a temporary file beside
    /// it, checking size and SHA-256 before the rename; nothing unverified is left behind.
    pub fn download_layer(&self, reference: &OciRef, fetched: &Fetched, dest: &Path) -> Result<(), OciError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let tmp = format::fsio::unique_temp(
            dir,
            &dest.file_name().map_or_else(|| "artifact".into(), |n| n.to_string_lossy()),
        );
        let result = self.download_to(reference, fetched, &tmp).and_then(|()| {
            std::fs::rename(&tmp, dest).map_err(|source| OciError::Io { path: dest.display().to_string(), source })
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn download_to(&self, reference: &OciRef, fetched: &Fetched, tmp: &Path) -> Result<(), OciError> {
        let io = |source| OciError::Io { path: tmp.display().to_string(), source };
        let descriptor = oci_client::manifest::OciDescriptor {
            media_type: LAYER_MEDIA_TYPE.to_string(),
            digest: fetched.layer_digest.clone(),
            size: i64::try_from(fetched.layer_size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let found = self.run(reference, || async {
            // A name no one else uses (a retry starts over); never through a planted link.
            let _ = std::fs::remove_file(tmp);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(tmp)?;
            let mut stream = self.client.pull_blob_stream(&reference.reference, &descriptor).await?;
            let mut hasher = Sha256::new();
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                // The client checks the digest as the stream ends and reports a mismatch as an
                // I/O error around its DigestError: unwrap it, so it is reported as one.
                let chunk = chunk.map_err(|e| {
                    if e.get_ref().is_some_and(|inner| inner.is::<DigestError>()) {
                        match e.into_inner().map(|inner| inner.downcast::<DigestError>()) {
                            Some(Ok(digest)) => OciDistributionError::DigestError(*digest),
                            _ => OciDistributionError::GenericError(Some("the download failed".into())),
                        }
                    } else {
                        OciDistributionError::IoError(e)
                    }
                })?;
                written += chunk.len() as u64;
                if written > fetched.layer_size {
                    break;
                }
                hasher.update(&chunk);
                file.write_all(&chunk)?;
            }
            file.sync_all()?;
            Ok((written, format!("sha256:{}", format::text::hex(&hasher.finalize()))))
        });
        let (written, digest) = found.map_err(|e| match e {
            OciError::Registry { message, .. } if message.contains("No such file") => {
                io(std::io::Error::new(std::io::ErrorKind::NotFound, message))
            }
            other => other,
        })?;
        if written != fetched.layer_size || digest != fetched.layer_digest {
            return Err(OciError::Mismatch {
                reference: reference.to_string(),
                expected: format!("{} ({} bytes)", fetched.layer_digest, fetched.layer_size),
                found: if written == fetched.layer_size { digest } else { format!("{written} bytes") },
            });
        }
        Ok(())
    }

    /// Point `tag` of `source`'s repository at the manifest `source` names (a tag or a
    /// digest), refusing manifests that are not lore artifacts. Returns the manifest digest
    /// and the digest the tag held before, if any.
    pub fn tag(&self, source: &OciRef, tag: &str) -> Result<(String, Option<String>), OciError> {
        let fetched = self.fetch_manifest(source)?;
        let target = source.at_tag(tag);
        let previous = match self.resolve(&target) {
            Ok(digest) => Some(digest),
            Err(OciError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let content_type = http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE);
        self.run(&target, || {
            self.client.push_manifest_raw(&target.reference, fetched.manifest.clone(), content_type.clone())
        })?;
        let now = self.resolve(&target)?;
        if now != fetched.manifest_digest {
            return Err(OciError::Moved {
                reference: target.to_string(),
                expected: fetched.manifest_digest,
                found: now,
            });
        }
        Ok((now, previous))
    }
}

/// The one lore layer of an image manifest, or an error naming what the manifest holds.
pub fn artifact_layer(reference: &OciRef, manifest: &[u8]) -> Result<(String, u64), OciError> {
    let parsed: OciImageManifest = serde_json::from_slice(manifest).map_err(|e| OciError::Registry {
        reference: reference.to_string(),
        message: format!("the manifest is not an OCI image manifest: {e}"),
    })?;
    let not_ours = || OciError::NotAnArtifact {
        reference: reference.to_string(),
        found: parsed.artifact_type.clone(),
        layers: parsed.layers.iter().map(|l| l.media_type.clone()).collect(),
    };
    let mut layers = parsed.layers.iter().filter(|l| l.media_type == LAYER_MEDIA_TYPE);
    let (Some(layer), None) = (layers.next(), layers.next()) else {
        return Err(not_ours());
    };
    let digest_ok = layer
        .digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let size = u64::try_from(layer.size).ok().filter(|_| digest_ok).ok_or_else(not_ours)?;
    if size > MAX_LAYER_BYTES {
        return Err(OciError::Registry {
            reference: reference.to_string(),
            message: format!("the manifest announces a layer of {size} bytes, over lore's limit of {MAX_LAYER_BYTES}"),
        });
    }
    Ok((layer.digest.clone(), size))
}

/// The largest layer lore downloads: a registry announcing more is refused before a byte is
/// written (the digest is only known at the end, so the size is what bounds the disk used).
pub const MAX_LAYER_BYTES: u64 = 16 << 30;

/// The OCI content digest of `bytes`: `sha256:` and lowercase hex.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", format::text::hex(&Sha256::digest(bytes)))
}

/// rustls needs one process-wide crypto provider; ring is the one already in the tree (ureq).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn is_transient(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::RequestError(e) => e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
        OciDistributionError::ServerError { code, .. } => *code == 429 || *code >= 500,
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|e| matches!(e.code, OciErrorCode::Toomanyrequests))
        }
        _ => false,
    }
}

fn classify(reference: &OciRef, error: &OciDistributionError, attempts: u32) -> OciError {
    let reference_text = reference.to_string();
    let message = {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            let inner_text = inner.to_string();
            if !text.contains(&inner_text) {
                text = format!("{text}: {inner_text}");
            }
            source = inner.source();
        }
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if attempts > 1 { format!("{text} (after {attempts} attempts)") } else { text }
    };
    match error {
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
            OciError::Unauthorized { reference: reference_text, message }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => {
            OciError::NotFound { reference: reference_text, message }
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            OciError::NotFound { reference: reference_text, message }
        }
        OciDistributionError::ServerError { code: 401 | 403, .. } => {
            OciError::Unauthorized { reference: reference_text, message }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes = envelope.errors.iter().map(|e| &e.code);
            let (mut not_found, mut denied) = (false, false);
            for code in codes {
                not_found |= matches!(
                    code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                );
                denied |= matches!(code, OciErrorCode::Unauthorized | OciErrorCode::Denied);
            }
            if denied {
                OciError::Unauthorized { reference: reference_text, message }
            } else if not_found {
                OciError::NotFound { reference: reference_text, message }
            } else {
                OciError::Registry { reference: reference_text, message }
            }
        }
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            OciError::Mismatch { reference: reference_text, expected: expected.clone(), found: actual.clone() }
        }
        OciDistributionError::DigestError(_) => OciError::Mismatch {
            reference: reference_text,
            expected: reference.digest().unwrap_or("the digest the registry announced").to_string(),
            found: message,
        },
        _ => OciError::Registry { reference: reference_text, message },
    }
}

fn registry_error(reference: &OciRef, error: &dyn std::fmt::Display) -> OciError {
    OciError::Registry { reference: reference.to_string(), message: error.to_string() }
}

/// Credentials for `registry`: `LORE_REGISTRY_USERNAME` and `LORE_REGISTRY_PASSWORD`, else
/// the first auth file that has an entry for it (`REGISTRY_AUTH_FILE`, Podman's
/// `$XDG_RUNTIME_DIR/containers/auth.json`, `$DOCKER_CONFIG/config.json`,
/// `~/.docker/config.json`), else anonymous.
pub fn credentials(registry: &str) -> RegistryAuth {
    if let (Ok(user), Ok(password)) = (std::env::var("LORE_REGISTRY_USERNAME"), std::env::var("LORE_REGISTRY_PASSWORD"))
    {
        return RegistryAuth::Basic(user, password);
    }
    for path in auth_files() {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        match auth_from_config(&text, registry) {
            Ok(Some(auth)) => return auth,
            Ok(None) => {}
            Err(why) => tracing::warn!(path = %path.display(), "ignoring the registry auth file: {why}"),
        }
    }
    RegistryAuth::Anonymous
}

fn auth_files() -> Vec<PathBuf> {
    let env = |name| std::env::var_os(name).map(PathBuf::from);
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE"));
    files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    files.extend(env("DOCKER_CONFIG").map(|d| d.join("config.json")));
    files.extend(env("HOME").map(|d| d.join(".docker/config.json")));
    files
}

/// The entry for `registry` in a Docker/Podman auth file: `auths.REGISTRY.auth` is
/// base64 `user:password`; keys may carry a scheme and a path (`https://host/v1/`).
fn auth_from_config(text: &str, registry: &str) -> Result<Option<RegistryAuth>, String> {
    #[derive(serde::Deserialize)]
    struct AuthFile {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
        identitytoken: Option<String>,
    }
    let file: AuthFile = serde_json::from_str(text).map_err(|e| format!("not JSON of the expected shape: {e}"))?;
    let host_of = |key: &str| -> String {
        let key = key.split_once("://").map_or(key, |(_, rest)| rest);
        key.split('/').next().unwrap_or(key).to_string()
    };
    let Some(entry) = file.auths.iter().find(|(key, _)| host_of(key) == registry).map(|(_, e)| e) else {
        return Ok(None);
    };
    if let Some(token) = &entry.identitytoken {
        return Ok(Some(RegistryAuth::Bearer(token.clone())));
    }
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(RegistryAuth::Basic(user.clone(), password.clone())));
    }
    let Some(encoded) = &entry.auth else { return Ok(None) };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| format!("the entry for {registry} is not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| format!("the entry for {registry} is not UTF-8"))?;
    let (user, password) =
        decoded.split_once(':').ok_or_else(|| format!("the entry for {registry} is not user:password"))?;
    Ok(Some(RegistryAuth::Basic(user.to_string(), password.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_an_explicit_registry_and_a_tag_or_digest() {
        let tagged = OciRef::parse("oci://127.0.0.1:5000/lore/persona:stable").expect("tagged");
        assert_eq!(
            (tagged.registry(), tagged.repository(), tagged.tag()),
            ("127.0.0.1:5000", "lore/persona", Some("stable"))
        );
        assert!(tagged.is_loopback());
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = OciRef::parse(&format!("oci://registry.example.com/kb@{digest}")).expect("pinned");
        assert_eq!(pinned.digest(), Some(digest.as_str()));
        assert!(!pinned.is_loopback());
        assert_eq!(pinned.to_string(), format!("oci://registry.example.com/kb@{digest}"));
        for bad in [
            "oci://persona:stable",
            "oci://127.0.0.1:5000/persona",
            "oci://127.0.0.1:5000/",
            "oci://h.io/a@sha256:xyz",
            "oci://",
        ] {
            assert!(OciRef::parse(bad).is_err(), "{bad} was accepted");
        }
        assert!(OciRef::parse("oci://localhost:5000/a:b").expect("localhost").is_loopback());
    }

    #[test]
    fn auth_files_are_read_the_way_docker_writes_them() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("ci:s3cret");
        let text = format!(r#"{{"auths": {{"https://registry.example.com/v1/": {{"auth": "{encoded}"}}}}}}"#);
        match auth_from_config(&text, "registry.example.com") {
            Ok(Some(RegistryAuth::Basic(user, password))) => {
                assert_eq!((user.as_str(), password.as_str()), ("ci", "s3cret"))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(auth_from_config(&text, "other.example.com"), Ok(None)));
        assert!(auth_from_config(r#"{"auths": {"h.io": {"auth": "!!"}}}"#, "h.io").is_err());
        assert!(matches!(auth_from_config(r#"{"credsStore": "desktop"}"#, "h.io"), Ok(None)));
    }

    #[test]
    fn only_a_manifest_with_one_lore_layer_is_an_artifact() {
        let reference = OciRef::parse("oci://127.0.0.1:5000/kb:v1").expect("reference");
        let layer =
            |media: &str| format!(r#"{{"mediaType": "{media}", "digest": "sha256:{}", "size": 42}}"#, "b".repeat(64));
        let manifest = |layers: &[String]| {
            format!(
                r#"{{"schemaVersion": 2, "config": {{"mediaType": "{EMPTY_MEDIA_TYPE}", "digest": "sha256:{}", "size": 2}}, "layers": [{}]}}"#,
                "c".repeat(64),
                layers.join(",")
            )
        };
        let ours = manifest(&[layer(LAYER_MEDIA_TYPE)]);
        assert_eq!(artifact_layer(&reference, ours.as_bytes()).expect("ours").1, 42);
        let image = manifest(&[layer("application/vnd.oci.image.layer.v1.tar+gzip")]);
        assert!(matches!(artifact_layer(&reference, image.as_bytes()), Err(OciError::NotAnArtifact { .. })));
        let huge = manifest(&[layer(LAYER_MEDIA_TYPE).replace("42", &(MAX_LAYER_BYTES + 1).to_string())]);
        let refused = artifact_layer(&reference, huge.as_bytes()).expect_err("a layer over the limit");
        assert!(refused.to_string().contains("over lore's limit"), "{refused}");
        let two = manifest(&[layer(LAYER_MEDIA_TYPE), layer(LAYER_MEDIA_TYPE)]);
        assert!(matches!(artifact_layer(&reference, two.as_bytes()), Err(OciError::NotAnArtifact { .. })));
        assert!(artifact_layer(&reference, b"not json").is_err());
    }
}
