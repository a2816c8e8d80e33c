//! `lorec publish FILE TARGET`: put a verified artifact where the runtime can fetch it by
//! digest. `file://PATH` copies it atomically; `https://URL` (plain `http://` on loopback
//! only, as Docker does for local registries, or with `--insecure`) PUTs it, as to a presigned
//! object-storage URL, with its SHA-256 in `x-amz-checksum-sha256` for the store to check.
//! Transient failures (connection errors, 429, 5xx) are retried with backoff. OCI registries
//! are not supported yet.

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
    #[error("{0}: not a publish target; use file://PATH or https://URL")]
    Target(String),
    #[error("{0}: OCI registries are not supported yet; publish to https:// or file://")]
    Oci(String),
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
        return Err(PublishError::Oci(text.into()));
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

/// Publish `bytes` (an artifact already verified by the caller); returns where it went.
pub fn publish(bytes: &[u8], file_name: &str, target: &Target, shown: &str) -> Result<String, PublishError> {
    let failed = |message: String| PublishError::Failed { target: shown.to_string(), message };
    match target {
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
    fn targets_are_parsed_and_plain_http_is_loopback_only() {
        assert_eq!(parse_target("file:///srv/a.lore", false).ok(), Some(Target::File("/srv/a.lore".into())));
        assert!(matches!(parse_target("http://127.0.0.1:9000/b/a.lore", false), Ok(Target::Http(_))));
        assert!(matches!(parse_target("http://localhost/b", false), Ok(Target::Http(_))));
        assert!(matches!(parse_target("http://example.com/b", false), Err(PublishError::Insecure(_))));
        assert!(matches!(parse_target("http://example.com/b", true), Ok(Target::Http(_))));
        assert!(matches!(parse_target("https://example.com/b?sig=x", false), Ok(Target::Http(_))));
        assert!(matches!(parse_target("oci://127.0.0.1:5000/r:t", false), Err(PublishError::Oci(_))));
        assert!(matches!(parse_target("s3://bucket/key", false), Err(PublishError::Target(_))));
    }
}
