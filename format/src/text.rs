//! Small text helpers both binaries share: hex digests and recognising loopback URLs.

/// Lowercase hex of `bytes` (digests, ids).
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Whether a URL's host is a loopback address (`localhost`, `127.x.y.z`, `[::1]`): such hosts
/// are reached without a proxy, and plain http to them is allowed.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for url in ["http://127.0.0.1:9/v1", "http://localhost/x", "http://[::1]:5000/r", "http://user@127.1.2.3/"] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in ["https://api.openai.com/v1", "http://example.com:127/x", "http://10.0.0.1/"] {
            assert!(!is_loopback_url(url), "{url}");
        }
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
