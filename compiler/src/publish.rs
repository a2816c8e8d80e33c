//! `lorec publish FILE TARGET`: put a verified artifact where the runtime can fetch it by
//! digest. `file://PATH` copies it atomically; `https://URL` (plain `http://` on loopback
//! only, as Docker does for local registries, or with `--insecure`) PUTs it, as to a presigned
//! object-storage URL, with its SHA-256 in `x-amz-checksum-sha256` for the store to check.
//! Transient failures (connection errors, 429, 5xx) are retried with backoff.
//! `oci://REGISTRY/REPO:TAG` pushes it as an OCI artifact (the `oci` crate) and prints the
//! manifest digest; `lorec promote` moves a tag to a published version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The media type of a lore artifact.
pub const MEDIA_TYPE: &str = "application/vnd.lore.artifact.v1";
const RETRIES: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}: not a publish target; use oci://REGISTRY/REPO:TAG, https://URL or file://PATH")]
    Target(String),
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    #[error("{0}: plain http is only used for loopback addresses; use https, or --insecure")]
    Insecure(String),
    #[error("{target}: {message}")]
    Failed { target: String, message: String },
}

/// Where an artifact goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    File(PathBuf),
    Http(String),
    Oci(oci::OciRef),
}

/// Parse a target; plain http only on loopback unless `insecure`.
pub fn parse_target(text: &str, insecure: bool) -> Result<Target, PublishError> {
    if let Some(path) = text.strip_prefix("file://") {
        if path.is_empty() {
            return Err(PublishError::Target(text.into()));
        }
        return Ok(Target::File(PathBuf::from(path)));
    }
    if text.starts_with("oci://") {
        let reference = oci::OciRef::parse(text)?;
        if reference.tag().is_none() || reference.digest().is_some() {
            return Err(PublishError::Target(format!("{text} (publish to a tag: oci://REGISTRY/REPO:TAG)")));
        }
        return Ok(Target::Oci(reference));
    }
    if text.starts_with("https://") {
        return Ok(Target::Http(text.into()));
    }
    if text.starts_with("http://") {
        return if insecure || format::text::is_loopback_url(text) {
            Ok(Target::Http(text.into()))
        } else {
            Err(PublishError::Insecure(text.into()))
        };
    }
    Err(PublishError::Target(text.into()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::manifest::hex(&Sha256::digest(bytes))
}

/// The OCI annotations of a published artifact: what `lorec versions` records, readable
/// without the key.
pub fn annotations(
    header: &format::Header,
    format_version: u32,
    source_tree_sha256: Option<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([
        ("org.opencontainers.image.created".to_string(), rfc3339(header.created_unix)),
        ("org.opencontainers.image.version".to_string(), header.artifact_version.clone()),
        ("io.lore.build-id".to_string(), header.build_id.clone()),
        ("io.lore.embedder".to_string(), header.embedder.id.clone()),
        ("io.lore.audience".to_string(), header.audience.clone()),
        ("io.lore.format-version".to_string(), format_version.to_string()),
    ]);
    if let Some(hash) = source_tree_sha256 {
        out.insert("io.lore.source-tree-sha256".to_string(), hash);
    }
    out
}

/// `secs` since the epoch as an RFC 3339 UTC timestamp (the OCI `created` annotation).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Push `bytes` to an OCI registry; returns the manifest digest.
pub fn publish_oci(
    bytes: Vec<u8>,
    file_name: &str,
    reference: &oci::OciRef,
    annotations: BTreeMap<String, String>,
    insecure: bool,
) -> Result<oci::Pushed, PublishError> {
    let registry = oci::Registry::new(reference, insecure)?;
    Ok(registry.push(reference, bytes, file_name, annotations)?)
}

/// Publish `bytes` (an artifact already verified by the caller) to a file or https target;
/// returns where it went.
pub fn publish(bytes: &[u8], file_name: &str, target: &Target, shown: &str) -> Result<String, PublishError> {
    let failed = |message: String| PublishError::Failed { target: shown.to_string(), message };
    match target {
        Target::Oci(_) => Err(failed("OCI targets go through publish_oci".into())),
        Target::File(path) => {
            let dest = if path.is_dir() || shown.ends_with('/') { path.join(file_name) } else { path.clone() };
            if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| failed(format!("cannot create {}: {e}", parent.display())))?;
            }
            crate::atomic_write_with(&dest, 0o600, |f| std::io::Write::write_all(f, bytes))
                .map_err(|e| failed(format!("cannot write {}: {e}", dest.display())))?;
            let written =
                std::fs::read(&dest).map_err(|e| failed(format!("cannot read back {}: {e}", dest.display())))?;
            if sha256_hex(&written) != sha256_hex(bytes) {
                return Err(failed(format!("{} does not hold what was written", dest.display())));
            }
            Ok(format!("file://{}", dest.display()))
        }
        Target::Http(url) => {
            let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes));
            let mut config = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(300)))
                .http_status_as_error(false)
                .user_agent(concat!("lorec/", env!("CARGO_PKG_VERSION")));
            if format::text::is_loopback_url(url) {
                config = config.proxy(None);
            }
            let agent: ureq::Agent = config.build().into();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let result = agent
                    .put(url)
                    .header("Content-Type", MEDIA_TYPE)
                    .header("x-amz-checksum-sha256", &checksum)
                    .send(bytes);
                let retry = match result {
                    Ok(mut response) => {
                        let status = response.status().as_u16();
                        if (200..300).contains(&status) {
                            return Ok(url.split(['?', '#']).next().unwrap_or(url).to_string());
                        }
                        let body = response.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
                        let message = format!(
                            "the server answered {status}: {}",
                            body.trim().chars().take(200).collect::<String>()
                        );
                        if status != 429 && status < 500 {
                            return Err(failed(message));
                        }
                        message
                    }
                    Err(e) => e.to_string(),
                };
                if attempt > RETRIES {
                    return Err(failed(format!("{retry} (after {attempt} attempts)")));
                }
                std::thread::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1));
            }
        }
    }
}

/// The artifact file's name, for a `file://` folder target.
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| "artifact.lore".to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_824_000 + 3_723), "2026-11-28T01:02:03Z");
    }

    #[test]
    fn targets_are_parsed_and_plain_http_is_loopback_only() {
        assert_eq!(parse_target("file:///srv/a.lore", false).ok(), Some(Target::File("/srv/a.lore".into())));
        assert!(matches!(parse_target("http://127.0.0.1:9000/b/a.lore", false), Ok(Target::Http(_))));
        assert!(matches!(parse_target("http://localhost/b", false), Ok(Target::Http(_))));
        assert!(matches!(parse_target("http://example.com/b", false), Err(PublishError::Insecure(_))));
        assert!(matches!(parse_target("http://example.com/b", true), Ok(Target::Http(_))));
        assert!(matches!(parse_target("https://example.com/b?sig=x", false), Ok(Target::Http(_))));
        assert!(matches!(parse_target("oci://127.0.0.1:5000/r:t", false), Ok(Target::Oci(_))));
        assert!(matches!(parse_target("oci://registry.example.com/r:t", false), Ok(Target::Oci(_))));
        assert!(matches!(parse_target("oci://127.0.0.1:5000/r", false), Err(PublishError::Oci(_))));
        let pinned = format!("oci://127.0.0.1:5000/r@sha256:{}", "a".repeat(64));
        assert!(matches!(parse_target(&pinned, false), Err(PublishError::Target(_))));
        assert!(matches!(parse_target("s3://bucket/key", false), Err(PublishError::Target(_))));
    }
}
