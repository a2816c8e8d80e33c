//! The HTTP client both sources share: the system's certificate bundle, the proxy from the
//! environment except for loopback, and streamed bodies hashed as they are written.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::{FetchError, io_error};

/// A client for `url`: trusts the system's certificate bundle (`SSL_CERT_FILE`, else Debian's
/// `/etc/ssl/certs/ca-certificates.crt`) as pip and curl do, so a machine whose HTTPS goes
/// through a proxy with its own CA can fetch too, and ureq's bundled roots otherwise. Status
/// codes are answers to read, not errors, so each caller can say what a 401 or 404 means.
pub(crate) fn agent(url: &str) -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(system_roots())
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        // Whole wheels and weight files: generous, yet a stalled transfer still ends.
        .timeout_recv_body(Some(Duration::from_secs(1800)))
        .http_status_as_error(false)
        .user_agent(concat!("lore-model-fetch/", env!("CARGO_PKG_VERSION")))
        .proxy(if is_loopback(url) { None } else { ureq::Proxy::try_from_env() })
        .build()
        .into()
}

fn system_roots() -> ureq::tls::TlsConfig {
    let bundle = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let certs: Vec<ureq::tls::Certificate<'static>> = std::fs::read(&bundle)
        .map(|pem| {
            ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let builder = ureq::tls::TlsConfig::builder();
    if certs.is_empty() {
        builder.build()
    } else {
        builder.root_certs(ureq::tls::RootCerts::new_with_certs(&certs)).build()
    }
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if host.starts_with("[::1]") {
        return true;
    }
    let name = host.split(':').next().unwrap_or("");
    name == "localhost" || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// `url` as a [`FetchError`] for a failed call.
pub(crate) fn transport(url: &str) -> impl FnOnce(ureq::Error) -> FetchError + '_ {
    move |e| FetchError::Http { url: url.to_string(), message: e.to_string() }
}

/// `Location` resolved against the URL that answered with it.
pub(crate) fn join(base: &str, location: &str) -> String {
    // A fragment (`#sha256=...` in package listings) is never sent.
    let location = location.split('#').next().unwrap_or("");
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    let authority = rest.split('/').next().unwrap_or("");
    if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        // A relative reference: beside the base's last segment, `..` and `.` removed
        // (RFC 3986, 5.2.4), as PEP 691 listings may link `../../files/x.whl`.
        let path = rest[authority.len()..].split('?').next().unwrap_or("");
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let mut segments: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
        let (location, query) = location.split_once('?').map_or((location, None), |(l, q)| (l, Some(q)));
        let parts: Vec<&str> = location.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            match *part {
                ".." => {
                    segments.pop();
                }
                "." => {}
                "" if i + 1 < parts.len() => {}
                part => segments.push(part),
            }
        }
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("{scheme}://{authority}/{}{query}", segments.join("/"))
    }
}

/// Stream a response body into a new temporary file in `dir`, hashing it on the way; the
/// caller checks the digest and size before the file is renamed into place, so nothing
/// unchecked ever takes a final name.
pub(crate) fn download(
    agent: &ureq::Agent,
    url: &str,
    bearer: Option<&str>,
    dir: &Path,
) -> Result<(tempfile::NamedTempFile, String, u64), FetchError> {
    let mut request = agent.get(url);
    if let Some(token) = bearer {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().map_err(transport(url))?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(FetchError::Status { url: url.to_string(), status, hint: String::new() });
    }
    let mut file = tempfile::Builder::new().prefix(".incoming-").tempfile_in(dir).map_err(io_error(dir))?;
    let mut body = response.body_mut().with_config().limit(64 << 30).reader();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Http { url: url.to_string(), message: format!("the body broke off: {e}") });
            }
        };
        hasher.update(&buffer[..n]);
        file.write_all(&buffer[..n]).map_err(io_error(file.path()))?;
        size += n as u64;
    }
    file.as_file().sync_all().map_err(io_error(file.path()))?;
    Ok((file, hex::encode(hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_url_that_sent_them() {
        assert_eq!(join("http://127.0.0.1:9/a/resolve/main/x", "/cdn/blob"), "http://127.0.0.1:9/cdn/blob");
        assert_eq!(join("http://h/a/b", "c"), "http://h/a/c");
        assert_eq!(join("http://h/simple/demo/", "../../files/x.whl#sha256=1"), "http://h/files/x.whl");
        assert_eq!(join("http://h/simple/demo/", "x.whl?a=1"), "http://h/simple/demo/x.whl?a=1");
        assert_eq!(join("https://h/a", "//cdn.example/x"), "https://cdn.example/x");
        assert_eq!(join("https://h/a", "https://other/x"), "https://other/x");
        assert!(is_loopback("http://127.0.0.1:5000/simple") && is_loopback("http://localhost/x"));
        assert!(!is_loopback("https://pypi.org/simple") && !is_loopback("https://127.0.0.1.example.org/x"));
    }
}
